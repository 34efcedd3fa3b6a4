//! One blob from many providers into a file: a worker per provider asks
//! the [`Schedule`] for batches of pieces, checks each piece against its
//! BLAKE3 hash before writing it at its offset, and reports what came of
//! it. The file grows as `OUT.part`; a fetch begun again verifies what
//! the part file already holds and fetches only the rest. Workers only
//! read pieces off their streams; one writer thread verifies, writes and
//! reports them (a bounded queue of [`WRITE_QUEUE`] pieces between), so
//! that hashing and writing run beside the connections, not in turn with
//! them. The blob's
//! hash is made as pieces arrive ([`PrefixHash`]) and checked when every
//! piece is in (a segment set's pieces are checked against each segment's
//! hash then); the file is synced (most of it already, in the background
//! every [`SYNC_EVERY`] bytes) and renamed into place.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use libp2p::{Multiaddr, PeerId};
use omega_storage::ChunkId;
use serde::Serialize;
use tokio::sync::Notify;

use crate::manifest::{Manifest, Piece};
use crate::prefix_hash::PrefixHash;
use crate::schedule::{Outcome, Schedule, Slot};
use crate::service::P2p;
use crate::wire::{self, MAX_PIECES_PER_REQUEST, Request, Status};
use crate::{P2pError, Result};

/// How a fetch behaves.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Share of the bytes the origin may carry while other providers can
    /// (0 to 1).
    pub origin_share: f64,
    /// Bytes one request asks for.
    pub batch_bytes: u64,
    /// How long a provider may take to connect.
    pub connect_within: Duration,
    /// How long one piece may take to arrive.
    pub piece_within: Duration,
    /// Streams (workers) per provider (each also keeps two batches
    /// requested ahead).
    pub streams_per_provider: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            origin_share: 0.2,
            batch_bytes: 4 << 20,
            connect_within: Duration::from_secs(10),
            piece_within: Duration::from_secs(30),
            streams_per_provider: 1,
        }
    }
}

/// What one provider gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// Its peer id.
    pub peer: String,
    /// The address it was reached at.
    pub addr: String,
    /// Verified bytes it sent.
    pub bytes: u64,
    /// True for the node that holds the item's file.
    pub origin: bool,
}

/// What a fetch did (the JSON of `omega fetch --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchReport {
    /// Bytes of the blob.
    pub bytes: u64,
    /// Bytes per provider.
    pub sources: Vec<SourceReport>,
    /// Pieces that failed their hash (each banned its sender).
    pub verify_failures: u64,
    /// Wall time.
    pub seconds: f64,
    /// Bytes already in the part file from an earlier try.
    pub resumed_bytes: u64,
}

impl FetchReport {
    /// Bytes from the origin (`true`) or from every other source.
    pub fn bytes_from(&self, origin: bool) -> u64 {
        self.sources
            .iter()
            .filter(|source| source.origin == origin)
            .map(|source| source.bytes)
            .sum()
    }
}

/// The part file a fetch into `out` writes.
pub fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// Pieces read and waiting for the writer thread; a worker waits when it
/// is full.
const WRITE_QUEUE: usize = 16;

/// A piece read off a stream, for the writer thread.
struct Arrived {
    slot: Slot,
    peer: PeerId,
    index: usize,
    bytes: Vec<u8>,
}

/// The writer thread: verifies each piece that arrived, writes it, and
/// records what came of it, until every worker has dropped its sender.
fn write_pieces(
    p2p: &P2p,
    manifest: &Manifest,
    shared: &Arc<Shared>,
    mut arrived: tokio::sync::mpsc::Receiver<Arrived>,
) -> Result<()> {
    while let Some(Arrived {
        slot,
        peer,
        index,
        bytes,
    }) = arrived.blocking_recv()
    {
        let piece = manifest.pieces[index];
        let outcome = if shared.verify_and_write(index, piece, &bytes)? {
            p2p.count_in(&peer, bytes.len() as u64);
            Outcome::Verified
        } else {
            tracing::warn!(%peer, piece = %piece.hash, "a piece failed its hash: peer banned");
            metrics::counter!("omega_p2p_verify_failures_total").increment(1);
            p2p.penalise(peer);
            Outcome::Corrupt
        };
        shared.schedule().outcome(slot, index, outcome);
        shared.changed.notify_waiters();
    }
    Ok(())
}

/// Bytes written between two background syncs of the part file, so that
/// the sync at the end has little left to write.
const SYNC_EVERY: u64 = 16 << 20;

struct Shared {
    schedule: Mutex<Schedule>,
    changed: Notify,
    file: std::fs::File,
    /// The blob's hash as pieces arrive; `None` for a segment set (each
    /// segment is checked at the end).
    prefix: Option<Mutex<PrefixHash>>,
    /// Bytes written since the last background sync began.
    unsynced: AtomicU64,
    /// A background sync is running.
    syncing: AtomicBool,
}

impl Shared {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks `bytes` against `piece` and writes them at its offset (on a
    /// blocking thread: hashing 512 KiB and a write are not for the async
    /// threads); false when they are not the piece.
    fn verify_and_write(self: &Arc<Shared>, index: usize, piece: Piece, bytes: &[u8]) -> Result<bool> {
        if bytes.len() != piece.len as usize || ChunkId::of(bytes) != piece.hash {
            return Ok(false);
        }
        self.file.write_all_at(bytes, piece.offset)?;
        if let Some(prefix) = &self.prefix {
            prefix
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .written(&self.file, index, bytes)?;
        }
        let unsynced = self.unsynced.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if unsynced >= SYNC_EVERY && !self.syncing.swap(true, Ordering::AcqRel) {
            self.unsynced.store(0, Ordering::Relaxed);
            let shared = self.clone();
            // Durability comes from the sync at the end; this one only
            // spreads its writing over the transfer.
            tokio::task::spawn_blocking(move || {
                let _ = shared.file.sync_data();
                shared.syncing.store(false, Ordering::Release);
            });
        }
        Ok(true)
    }
}

/// Fetches the blob `manifest` describes into `out`.
pub async fn fetch(p2p: &P2p, manifest: &Manifest, out: &Path, options: &FetchOptions) -> Result<FetchReport> {
    let started = Instant::now();
    manifest.verify().map_err(P2pError::Manifest)?;
    let part = part_path(out);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)?;
    let mut schedule = Schedule::new(
        manifest.pieces.iter().map(|piece| piece.len).collect(),
        options.origin_share,
    );
    let mut prefix = manifest
        .segments
        .is_empty()
        .then(|| PrefixHash::new(manifest.pieces.clone()));
    let resumed_bytes = resume(&file, manifest, &mut schedule, prefix.as_mut())?;
    file.set_len(manifest.size)?;

    // Dialled all at once: a provider that vanished (a client that stopped
    // seeding) costs one connect timeout, not one each.
    let dials = manifest
        .provider_addrs()
        .into_iter()
        .filter(|(peer, ..)| *peer != p2p.peer_id())
        // A peer that lied to an earlier fetch is left out for a while;
        // the origin stays (its bad pieces are banned within this fetch).
        .filter(|(peer, _, origin)| {
            let penalised = !*origin && p2p.is_penalised(peer);
            if penalised {
                tracing::info!(%peer, "provider left out: it sent bad bytes lately");
            }
            !penalised
        })
        .map(|(peer, addrs, origin)| async move {
            let dialled = p2p.dial(peer, addrs.clone(), options.connect_within).await;
            (peer, addrs, origin, dialled)
        });
    let mut providers = Vec::new();
    for (peer, addrs, origin, dialled) in futures::future::join_all(dials).await {
        match dialled {
            Ok(()) => {
                let slot = schedule.add_peer(origin);
                let addr = p2p
                    .addresses_of(&peer)
                    .first()
                    .or(addrs.first())
                    .map(Multiaddr::to_string);
                providers.push((slot, peer, addr.unwrap_or_default(), origin));
            }
            Err(error) => tracing::info!(%peer, "provider unreachable: {error}"),
        }
    }
    let shared = Arc::new(Shared {
        schedule: Mutex::new(schedule),
        changed: Notify::new(),
        file,
        prefix: prefix.map(Mutex::new),
        unsynced: AtomicU64::new(0),
        syncing: AtomicBool::new(false),
    });
    let (arrivals, arrived) = tokio::sync::mpsc::channel(WRITE_QUEUE);
    let writer = {
        let (p2p, manifest, shared) = (p2p.clone(), manifest.clone(), shared.clone());
        tokio::task::spawn_blocking(move || {
            let written = write_pieces(&p2p, &manifest, &shared, arrived);
            // Workers waiting for its outcomes see that it stopped.
            shared.changed.notify_waiters();
            written
        })
    };
    let mut workers = Vec::new();
    let streams = options.streams_per_provider.clamp(1, 8);
    for (slot, peer, _, _) in providers
        .iter()
        .flat_map(|provider| std::iter::repeat_n(provider, streams))
    {
        let (p2p, manifest, shared, options) = (p2p.clone(), manifest.clone(), shared.clone(), options.clone());
        let (slot, peer, arrivals) = (*slot, *peer, arrivals.clone());
        workers.push(tokio::spawn(async move {
            let result = work(&p2p, &manifest, &shared, &options, slot, peer, &arrivals).await;
            if let Err(error) = &result {
                tracing::info!(%peer, "provider dropped: {error}");
                shared.schedule().lost(slot);
            }
            shared.changed.notify_waiters();
            result.err().map(|error| error.to_string())
        }));
    }
    drop(arrivals);
    let mut last_error = String::from("no provider could be reached");
    for worker in workers {
        if let Ok(Some(error)) = worker.await {
            last_error = error;
        }
    }
    writer.await.map_err(|_| P2pError::Stopped)??;
    // A background sync may still hold the last reference for a moment.
    let shared = {
        let mut shared = shared;
        loop {
            match Arc::try_unwrap(shared) {
                Ok(alone) => break alone,
                Err(still_shared) => {
                    shared = still_shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    };
    let schedule = shared
        .schedule
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !schedule.is_done() {
        return Err(P2pError::Incomplete {
            missing: schedule.remaining(),
            total: manifest.pieces.len(),
            why: last_error,
        });
    }
    let file = shared.file;
    match shared
        .prefix
        .map(|prefix| prefix.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
    {
        Some(mut prefix) => {
            let whole = prefix.finish(&file)?.ok_or(P2pError::Incomplete {
                missing: 0,
                total: manifest.pieces.len(),
                why: "a piece was counted but never written".into(),
            })?;
            if whole != manifest.blob {
                return Err(P2pError::Manifest(format!(
                    "the pieces make {whole}, not the blob {}",
                    manifest.blob
                )));
            }
        }
        None => check_segments(&file, manifest)?,
    }
    file.sync_all()?;
    std::fs::rename(&part, out)?;
    let sources = providers
        .iter()
        .map(|(slot, peer, addr, origin)| SourceReport {
            peer: peer.to_string(),
            addr: addr.clone(),
            bytes: schedule.bytes_from(*slot),
            origin: *origin,
        })
        .collect();
    Ok(FetchReport {
        bytes: manifest.size,
        sources,
        verify_failures: providers.iter().map(|(slot, ..)| schedule.verify_failures(*slot)).sum(),
        seconds: started.elapsed().as_secs_f64(),
        resumed_bytes,
    })
}

/// Marks the pieces the part file already holds; returns their bytes.
fn resume(
    file: &std::fs::File,
    manifest: &Manifest,
    schedule: &mut Schedule,
    mut prefix: Option<&mut PrefixHash>,
) -> Result<u64> {
    let len = file.metadata()?.len();
    let mut resumed = 0;
    let mut buffer = Vec::new();
    for (index, piece) in manifest.pieces.iter().enumerate() {
        if piece.offset + u64::from(piece.len) > len {
            break;
        }
        buffer.resize(piece.len as usize, 0);
        file.read_exact_at(&mut buffer, piece.offset)?;
        if ChunkId::of(&buffer) == piece.hash {
            schedule.have(index);
            if let Some(prefix) = prefix.as_deref_mut() {
                prefix.mark_written(index);
            }
            resumed += u64::from(piece.len);
        }
    }
    Ok(resumed)
}

/// Checks each segment of a segment set's fetched file against its hash.
fn check_segments(file: &std::fs::File, manifest: &Manifest) -> Result<()> {
    for (segment, hash) in manifest.hashed_segments() {
        let made = hash_range(file, segment.offset, segment.size)?;
        if made != hash {
            return Err(P2pError::Manifest(format!(
                "the pieces of segment {} make {made}, not {hash}",
                segment.name
            )));
        }
    }
    Ok(())
}

/// BLAKE3 of `size` bytes of `file` from `start`.
pub fn hash_range(file: &std::fs::File, start: u64, size: u64) -> Result<omega_storage::BlobId> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0_u8; (1 << 20).min(size as usize)];
    let mut offset = 0;
    while offset < size {
        let want = (size - offset).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..want], start + offset)?;
        hasher.update(&buffer[..want]);
        offset += want as u64;
    }
    Ok(hasher.finalize().into())
}

/// Batches one worker keeps requested ahead of the one it reads.
const PIPELINE: usize = 2;

/// One provider's worker: batches until the schedule says stop.
async fn work(
    p2p: &P2p,
    manifest: &Manifest,
    shared: &Arc<Shared>,
    options: &FetchOptions,
    slot: Slot,
    peer: PeerId,
    arrivals: &tokio::sync::mpsc::Sender<Arrived>,
) -> Result<()> {
    let mut stream = p2p.open(peer).await?;
    let protocol = |why: String| P2pError::Protocol {
        peer: peer.to_string(),
        why,
    };
    let mut refused = None;
    // Up to PIPELINE batches are requested ahead, so the provider is never
    // idle for a round trip between two batches.
    let mut pending: std::collections::VecDeque<Vec<usize>> = std::collections::VecDeque::new();
    loop {
        // Registered before asking, so a change in between is not missed.
        let changed = shared.changed.notified();
        let (batches, finished) = shared.schedule().next_batches(
            slot,
            PIPELINE - pending.len(),
            options.batch_bytes,
            MAX_PIECES_PER_REQUEST,
        );
        for batch in batches {
            let request = Request {
                blob: manifest.blob.0,
                grant: (!manifest.grant.is_empty()).then(|| manifest.grant.clone()),
                pieces: batch.iter().map(|index| manifest.pieces[*index].hash.0).collect(),
            };
            wire::write_request(&mut stream, &request)
                .await
                .map_err(|error| protocol(error.to_string()))?;
            pending.push_back(batch);
        }
        let Some(batch) = pending.pop_front() else {
            if finished {
                break;
            }
            // The writer stopped (a failed write): what it held never
            // lands, so waiting for it would be forever.
            if arrivals.is_closed() {
                return Err(P2pError::Stopped);
            }
            // Woken by any change; the timeout is a safety net.
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
            continue;
        };
        for index in &batch {
            let piece = manifest.pieces[*index];
            let answer = tokio::time::timeout(options.piece_within, wire::read_piece(&mut stream, piece.len))
                .await
                .map_err(|_| protocol(format!("no piece within {:?}", options.piece_within)))?
                .map_err(|error| protocol(error.to_string()))?;
            let outcome = match answer {
                (Status::Ok, bytes) => {
                    // Verified, written and recorded by the writer thread.
                    let arrived = Arrived {
                        slot,
                        peer,
                        index: *index,
                        bytes,
                    };
                    arrivals.send(arrived).await.map_err(|_| P2pError::Stopped)?;
                    None
                }
                (Status::Busy, _) => Some(Outcome::Busy),
                (status @ (Status::NotFound | Status::Denied), _) => {
                    refused = Some(status);
                    Some(Outcome::Missing)
                }
            };
            let banned = {
                let mut schedule = shared.schedule();
                if let Some(outcome) = outcome {
                    schedule.outcome(slot, *index, outcome);
                }
                schedule.is_banned(slot)
            };
            if outcome.is_some() {
                shared.changed.notify_waiters();
            }
            if banned {
                // The rest of the batch went back to the queue; the stream
                // still carries their answers, so it is dropped.
                let _ = stream.close().await;
                return Ok(());
            }
            if outcome == Some(Outcome::Busy) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = stream.close().await;
    match refused {
        Some(status) if !shared.schedule().is_done() => Err(protocol(match status {
            Status::Denied => "refused the pieces: no membership and no valid grant".into(),
            _ => "does not have the pieces".into(),
        })),
        _ => Ok(()),
    }
}
