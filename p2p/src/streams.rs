//! Serving piece streams ([`crate::wire`]) within bounds, members first.
//!
//! A member's stream (known by its peer id alone) takes a place at once.
//! A non-member's stream holds no place until its first request shows a
//! valid grant: until then it waits among a few *unverified* streams, for
//! at most [`Limits::first_request`], and a refused one is answered and
//! closed. So strangers holding idle streams fill only that waiting room,
//! never the places members need. Places: streams in all, those of
//! non-members (a share of all), and streams per peer; a token bucket of
//! pieces per peer answers floods with `Busy`, which costs nothing to make.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use omega_storage::{BlobId, ChunkId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::grant::Grant;
use crate::now_ms;
use crate::service::{Limits, PieceSource, Traffic, add_traffic, lock};
use crate::wire::{self, Request, Status, WireError};

/// Peers whose request buckets are remembered at once.
const MAX_BUCKETS: usize = 4096;

/// Serves piece streams.
pub(crate) struct Server {
    source: Arc<dyn PieceSource>,
    limits: Limits,
    /// Streams served, from everyone.
    streams: Arc<Semaphore>,
    /// Streams served to non-members (each also holds one of `streams`).
    guest_streams: Arc<Semaphore>,
    /// Non-members' streams waiting for their first request.
    unverified: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    buckets: Mutex<HashMap<PeerId, Bucket>>,
    traffic: Arc<Mutex<HashMap<PeerId, Traffic>>>,
}

/// A token bucket of requests.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied,
    Busy,
}

/// The last grant that passed on a stream: a signature is checked once
/// per stream, not per request.
struct GrantSeen {
    token: String,
    blob: BlobId,
    expires_ms: u64,
}

/// One stream's place; given back when dropped.
struct Place {
    _stream: OwnedSemaphorePermit,
    _guest: Option<OwnedSemaphorePermit>,
    per_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut per_peer = lock(&self.per_peer);
        if let Some(count) = per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("omega_p2p_refused_total", "reason" => reason).increment(1);
}

impl Server {
    pub(crate) fn new(
        source: Arc<dyn PieceSource>,
        limits: Limits,
        traffic: Arc<Mutex<HashMap<PeerId, Traffic>>>,
    ) -> Self {
        Server {
            source,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            guest_streams: Arc::new(Semaphore::new(limits.max_guest_streams)),
            unverified: Arc::new(Semaphore::new(limits.max_unverified_streams)),
            limits,
            per_peer: Arc::new(Mutex::new(HashMap::new())),
            buckets: Mutex::new(HashMap::new()),
            traffic,
        }
    }

    pub(crate) async fn accept(self, mut incoming: libp2p_stream::IncomingStreams) {
        let server = Arc::new(self);
        while let Some((peer, stream)) = incoming.next().await {
            // Membership before any place: a stranger's stream must show
            // a grant before it may hold one.
            if server.source.is_member(&peer) {
                let Some(place) = server.place(peer, false) else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(peer, stream, None, place).await });
            } else {
                let Ok(waiting) = server.unverified.clone().try_acquire_owned() else {
                    refused("unverified_streams");
                    continue;
                };
                tokio::spawn(server.clone().verify(peer, stream, waiting));
            }
        }
    }

    /// Takes a place for a stream of `peer`, or none when full.
    fn place(&self, peer: PeerId, guest: bool) -> Option<Place> {
        let guest_permit = if guest {
            let Ok(permit) = self.guest_streams.clone().try_acquire_owned() else {
                refused("guest_streams");
                return None;
            };
            Some(permit)
        } else {
            None
        };
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            refused("streams");
            return None;
        };
        let mut per_peer = lock(&self.per_peer);
        let count = per_peer.entry(peer).or_default();
        if *count >= self.limits.max_streams_per_peer {
            refused("peer_streams");
            return None;
        }
        *count += 1;
        Some(Place {
            _stream: permit,
            _guest: guest_permit,
            per_peer: self.per_peer.clone(),
            peer,
        })
    }

    /// A non-member's stream: its first request within
    /// [`Limits::first_request`] must carry a valid grant, and only then
    /// does the stream take a place.
    async fn verify(self: Arc<Self>, peer: PeerId, mut stream: Stream, waiting: OwnedSemaphorePermit) {
        let first = tokio::time::timeout(self.limits.first_request, wire::read_request(&mut stream)).await;
        let Ok(Ok(Some(request))) = first else {
            refused("first_request");
            return;
        };
        let mut seen = None;
        let mut verdict = self.judge(&peer, &request, &mut seen);
        let place = match verdict {
            Verdict::Allowed => self.place(peer, true),
            Verdict::Denied | Verdict::Busy => None,
        };
        if place.is_none() && verdict == Verdict::Allowed {
            verdict = Verdict::Busy;
        }
        let answered = self.respond(peer, &mut stream, request, verdict).await;
        drop(waiting);
        match (place, answered) {
            (Some(place), Ok(())) => self.serve(peer, stream, seen, place).await,
            // Refused: answered, then closed (a new stream waits again).
            _ => {
                let _ = stream.close().await;
            }
        }
    }

    /// Serves requests on a stream that holds `place`, until it idles.
    async fn serve(&self, peer: PeerId, mut stream: Stream, mut seen: Option<GrantSeen>, place: Place) {
        loop {
            let request = match tokio::time::timeout(self.limits.idle, wire::read_request(&mut stream)).await {
                Ok(Ok(Some(request))) => request,
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, "piece stream ended: {error}");
                    break;
                }
            };
            let verdict = self.judge(&peer, &request, &mut seen);
            if let Err(error) = self.respond(peer, &mut stream, request, verdict).await {
                tracing::debug!(%peer, "piece stream ended: {error}");
                break;
            }
        }
        drop(place);
    }

    /// Whether `request` is served: the bucket first (a flood costs no
    /// membership or grant check), then membership or a grant.
    fn judge(&self, peer: &PeerId, request: &Request, seen: &mut Option<GrantSeen>) -> Verdict {
        if !self.take_tokens(peer, request.pieces.len()) {
            refused("rate");
            return Verdict::Busy;
        }
        let blob = BlobId::from(blake3::Hash::from_bytes(request.blob));
        if self.source.is_member(peer) || self.grant_holds(peer, request.grant.as_deref(), blob, seen) {
            return Verdict::Allowed;
        }
        refused("denied");
        Verdict::Denied
    }

    fn grant_holds(&self, peer: &PeerId, token: Option<&str>, blob: BlobId, seen: &mut Option<GrantSeen>) -> bool {
        let Some(token) = token else {
            return false;
        };
        let now = now_ms();
        let known = seen
            .as_ref()
            .is_some_and(|grant| grant.token == token && grant.blob == blob && now < grant.expires_ms);
        if known {
            return true;
        }
        match Grant::check(token, peer, &blob, now, |issuer| self.source.is_member(issuer)) {
            Ok(grant) => {
                *seen = Some(GrantSeen {
                    token: token.to_owned(),
                    blob,
                    expires_ms: grant.expires_ms,
                });
                true
            }
            Err(_) => false,
        }
    }

    /// Answers every piece `request` names, as `verdict` says.
    async fn respond(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        request: Request,
        verdict: Verdict,
    ) -> Result<(), WireError> {
        let blob = BlobId::from(blake3::Hash::from_bytes(request.blob));
        tracing::debug!(%peer, %blob, ?verdict, pieces = request.pieces.len(), "piece request");
        for hash in request.pieces {
            match verdict {
                Verdict::Busy => wire::write_piece(stream, Status::Busy, &[]).await?,
                Verdict::Denied => wire::write_piece(stream, Status::Denied, &[]).await?,
                Verdict::Allowed => self.send_piece(peer, stream, blob, hash).await?,
            }
        }
        stream.flush().await?;
        Ok(())
    }

    async fn send_piece(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        blob: BlobId,
        hash: [u8; 32],
    ) -> Result<(), WireError> {
        let chunk = ChunkId::from(blake3::Hash::from_bytes(hash));
        let source = self.source.clone();
        let bytes = tokio::task::spawn_blocking(move || source.piece(&blob, &chunk))
            .await
            .ok()
            .and_then(std::result::Result::ok)
            .flatten();
        let Some(bytes) = bytes else {
            return wire::write_piece(stream, Status::NotFound, &[]).await;
        };
        wire::write_piece(stream, Status::Ok, &bytes).await?;
        let sent = bytes.len() as u64;
        add_traffic(&self.traffic, peer, 0, sent);
        metrics::counter!("omega_p2p_bytes_out_total").increment(sent);
        Ok(())
    }

    /// Takes `pieces` tokens from `peer`'s bucket; false when it holds
    /// fewer.
    fn take_tokens(&self, peer: &PeerId, pieces: usize) -> bool {
        let cost = pieces.max(1) as f64;
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(peer) {
            // Forget the buckets that have refilled: they hold no debt.
            let (rate, burst) = (self.limits.pieces_per_second, self.limits.burst);
            buckets.retain(|_, bucket| bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let bucket = buckets.entry(*peer).or_insert(Bucket {
            tokens: self.limits.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.limits.pieces_per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.limits.burst);
        bucket.at = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            true
        } else {
            false
        }
    }
}
