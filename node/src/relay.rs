//! Nodes cache what they relay. A node that needs a blob another member
//! holds (a transcode worker's source, a chunk job's output, the file of
//! an item a client asked this node about) reads it in this order: its
//! own store (hot, then cold: the store reads through), the peers that
//! provide it over P2P with the holder as origin (every piece verified,
//! then the whole), the holder over HTTP. What came over the network is
//! kept in the store under `relay:…` and announced in the DHT, so the
//! node provides it from then on. Kept blobs are bounded by
//! `[p2p] cache_max`: the oldest go first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use omega_consensus::state_machine::read;
use omega_p2p::{FetchOptions, FetchReport, Manifest, Piece, Provider};
use omega_storage::{BlobId, ChunkId, Store};

use crate::api::AppState;

/// References of kept blobs start with this; then the time kept (ms,
/// zero-padded, so that name order is age order) and the blob.
pub const RELAY_PREFIX: &str = "relay:";
/// References of the segment lists of replicated sets start with this;
/// then the time kept and the set. A set is many blobs, so what it is made
/// of is kept too, for serving it again after a restart.
pub const SET_PREFIX: &str = "relayset:";
/// Segment lists kept (as many as the piece index registers).
const SETS_KEPT_MAX: usize = 256;
/// Blobs cached in the background at once (on behalf of clients).
const BACKGROUND_AT_ONCE: usize = 2;
/// Kept blobs looked at when evicting.
const KEPT_MAX: usize = 100_000;
/// How long the DHT is asked for providers.
const PROVIDERS_WITHIN: Duration = Duration::from_millis(1500);

/// The node's relay cache.
#[derive(Debug)]
pub struct Relay {
    /// Where blobs fetched in the background are written before the
    /// store takes them.
    dir: PathBuf,
    /// Bytes of kept blobs at most (0: keep nothing).
    cache_max: u64,
    in_flight: Mutex<HashSet<BlobId>>,
    /// Blobs kept under `relay:` references.
    kept: Mutex<HashSet<BlobId>>,
}

impl Relay {
    /// A cache writing under `dir`, keeping at most `cache_max` bytes.
    pub fn new(dir: PathBuf, cache_max: u64) -> Relay {
        Relay {
            dir,
            cache_max,
            in_flight: Mutex::new(HashSet::new()),
            kept: Mutex::new(HashSet::new()),
        }
    }

    /// Learns what the store keeps from earlier runs.
    pub fn load(&self, store: &Store) {
        match store.references(RELAY_PREFIX, KEPT_MAX) {
            Ok(kept) => *lock(&self.kept) = kept.into_iter().map(|(_, blob)| blob).collect(),
            Err(error) => tracing::warn!("cannot list kept blobs: {error}"),
        }
    }

    /// The blobs kept, to announce again after a restart.
    pub fn kept(&self) -> Vec<BlobId> {
        lock(&self.kept).iter().copied().collect()
    }

    /// True when this node keeps `blob` as a relay (not as its origin).
    pub fn keeps(&self, blob: &BlobId) -> bool {
        lock(&self.kept).contains(blob)
    }

    /// Takes a background slot for `work` (false: it runs already, or
    /// every slot is busy).
    fn claim(&self, work: BlobId) -> bool {
        let mut in_flight = lock(&self.in_flight);
        in_flight.len() < BACKGROUND_AT_ONCE && in_flight.insert(work)
    }

    /// Gives `work`'s slot back.
    fn release(&self, work: &BlobId) {
        lock(&self.in_flight).remove(work);
    }

    /// Blobs kept, and the budget.
    pub fn usage(&self) -> (usize, u64) {
        (lock(&self.kept).len(), self.cache_max)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a blob came from.
#[derive(Debug)]
pub enum Via {
    /// This node's store.
    Store,
    /// Peers over P2P.
    Peers(FetchReport),
    /// The holder over HTTP.
    Holder,
}

impl Via {
    fn label(&self) -> &'static str {
        match self {
            Via::Store => "store",
            Via::Peers(_) => "peers",
            Via::Holder => "holder",
        }
    }
}

/// Gets `blob`, which member `holder` holds, into `dest`, verified; keeps
/// what came over the network (see the module's note).
pub async fn fetch(state: &AppState, blob: BlobId, holder: u64, dest: &Path) -> anyhow::Result<Via> {
    if let Some(store) = state.store.clone()
        && copy_from_store(store, blob, dest.to_path_buf()).await?
    {
        metrics::counter!("omega_relay_total", "via" => "store").increment(1);
        return Ok(Via::Store);
    }
    let via = match &state.p2p {
        Some(node) => match from_peers(state, node, blob, holder, dest).await {
            Ok(report) => Via::Peers(report),
            Err(error) => {
                tracing::info!(%blob, "peers could not deliver the blob; asking its holder over HTTP: {error:#}");
                from_holder(state, blob, holder, dest).await?;
                Via::Holder
            }
        },
        None => {
            from_holder(state, blob, holder, dest).await?;
            Via::Holder
        }
    };
    metrics::counter!("omega_relay_total", "via" => via.label()).increment(1);
    if let Err(error) = keep(state, blob, dest).await {
        tracing::warn!(%blob, "cannot keep a relayed blob: {error:#}");
    }
    Ok(via)
}

/// Caches `blob` (held by `holder`) in the background, so that this node
/// provides it; skipped when it is being cached already or every
/// background slot is busy.
pub fn cache_in_background(state: &AppState, blob: BlobId, holder: u64) {
    let Some(node) = &state.p2p else { return };
    let relay = node.relay.clone();
    if relay.cache_max == 0 || held(state, &blob) {
        return;
    }
    if !relay.claim(blob) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let dest = relay.dir.join(blob.to_string());
        let outcome = async {
            std::fs::create_dir_all(&relay.dir).with_context(|| format!("cannot create {}", relay.dir.display()))?;
            fetch(&state, blob, holder, &dest).await
        }
        .await;
        match outcome {
            Ok(via) => tracing::info!(%blob, via = via.label(), "relayed blob cached"),
            Err(error) => tracing::info!(%blob, "cannot cache a relayed blob: {error:#}"),
        }
        let _ = std::fs::remove_file(&dest);
        relay.release(&blob);
    });
}

/// True when this node's store has all of the blob.
fn held(state: &AppState, blob: &BlobId) -> bool {
    state
        .store
        .as_ref()
        .and_then(|store| store.blob(blob).ok())
        .is_some_and(|record| record.stored)
}

/// How long a replica waits before pulling a rendition again that its
/// holder was still making (segments without a hash yet).
const FOLLOW_UP_AFTER: Duration = Duration::from_secs(15);
/// Pulls of one rendition in progress, at most (ten minutes of them).
const FOLLOW_UPS_MAX: u32 = 40;

/// Pulls a popular rendition's segment set from its holder and the peers
/// that provide it, keeps its segments and provides the set; in the
/// background, skipped when this node is at it already. A rendition the
/// holder is still making is pulled again a while later (only what is new
/// crosses the network: what this node keeps already seeds the pull).
pub fn replicate_set_in_background(state: &AppState, item: u64, rendition: String, holder: u64) {
    let Some(node) = state.p2p.clone() else { return };
    if node.relay.cache_max == 0 {
        return;
    }
    // Named by item and rendition until the manifest gives the set's id.
    let job = BlobId::of(format!("replicate\0{item}\0{rendition}").as_bytes());
    if !node.relay.claim(job) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut claimed = true;
        for _ in 0..FOLLOW_UPS_MAX {
            // The slot is held while pulling, not while waiting; a follow-up
            // that finds every slot busy waits for the next turn.
            if claimed {
                let outcome = replicate_set(&state, &node, item, &rendition, holder).await;
                node.relay.release(&job);
                match outcome {
                    Ok((segments, in_progress)) => {
                        tracing::info!(item, %rendition, segments, in_progress, "popular rendition replicated");
                        if !in_progress {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::info!(item, %rendition, "cannot replicate a rendition: {error:#}");
                        return;
                    }
                }
            }
            tokio::time::sleep(FOLLOW_UP_AFTER).await;
            claimed = node.relay.claim(job);
        }
        if claimed {
            node.relay.release(&job);
        }
    });
}

async fn replicate_set(
    state: &AppState,
    node: &crate::p2p::NodeP2p,
    item: u64,
    rendition: &str,
    holder: u64,
) -> anyhow::Result<(usize, bool)> {
    let http_addr = crate::jobs::owner_http(state, holder)?;
    let token = state.tokens.node_token(state.cluster.id(), state.clock.now_ms());
    let manifest = crate::remote::set_manifest(&http_addr, &token, item, rendition, &node.p2p.peer_id()).await?;
    manifest
        .verify()
        .map_err(|why| anyhow::anyhow!("the holder's manifest: {why}"))?;
    let in_progress = manifest.segments.iter().any(|segment| segment.hash.is_none());
    if manifest.pieces.is_empty() || node.index.has_set(&manifest.blob, manifest.pieces.len()) {
        return Ok((0, in_progress));
    }
    let store = state.store.clone().context("no store")?;
    std::fs::create_dir_all(&node.relay.dir)?;
    let dest = node.relay.dir.join(format!("{}.set", manifest.blob));
    {
        let (store, manifest, dest) = (store.clone(), manifest.clone(), dest.clone());
        tokio::task::spawn_blocking(move || seed_from_store(&store, &manifest, &dest)).await??;
    }
    let fetched = omega_p2p::fetch::fetch(&node.p2p, &manifest, &dest, &FetchOptions::default()).await;
    let kept = match fetched {
        Ok(_) => {
            let (manifest, dest, relay) = (manifest.clone(), dest.clone(), node.relay.clone());
            let index = node.index.clone();
            let now_ms = state.clock.now_ms();
            tokio::task::spawn_blocking(move || keep_set(&store, &index, &relay, &manifest, &dest, now_ms)).await?
        }
        Err(error) => Err(error.into()),
    };
    let _ = std::fs::remove_file(&dest);
    let (kept, gone) = kept?;
    for blob in gone {
        node.p2p.unprovide(blob).await?;
    }
    node.p2p.provide(manifest.blob).await?;
    Ok((kept, in_progress))
}

/// Writes the segments of `manifest` this node's store holds (from an
/// earlier pull of the set) into the pull's part file at their places,
/// so that the fetch, which keeps every piece there that verifies, asks
/// peers only for the rest.
fn seed_from_store(store: &Store, manifest: &Manifest, dest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let part = omega_p2p::fetch::part_path(dest);
    let mut file = None;
    for (segment, hash) in manifest.hashed_segments() {
        let bytes = match store.read_all(&hash) {
            Ok(bytes) => bytes,
            Err(omega_storage::StoreError::BlobNotFound(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        if bytes.len() as u64 != segment.size {
            continue;
        }
        let file = match &mut file {
            Some(file) => file,
            None => file.insert(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&part)?,
            ),
        };
        file.write_all_at(&bytes, segment.offset)?;
    }
    Ok(())
}

/// Keeps each segment of a fetched set in the store, registers the set
/// for serving, and evicts past the budget; the segments kept, and the
/// blobs evicted that this node no longer holds (to stop announcing).
fn keep_set(
    store: &Store,
    index: &crate::p2p::PieceIndex,
    relay: &Relay,
    manifest: &Manifest,
    path: &Path,
    now_ms: u64,
) -> anyhow::Result<(usize, Vec<BlobId>)> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut records = Vec::new();
    for (segment, hash) in manifest.hashed_segments() {
        // Kept by an earlier pull of this set (a rendition in progress is
        // pulled again as it grows): another name would count it twice
        // against the budget.
        if relay.keeps(&hash) {
            records.push((hash, store.blob(&hash)?));
            continue;
        }
        let mut bytes = vec![0_u8; usize::try_from(segment.size)?];
        file.read_exact_at(&mut bytes, segment.offset)?;
        anyhow::ensure!(BlobId::of(&bytes) == hash, "segment {} changed on disk", segment.name);
        store.ingest_bytes(&bytes, &format!("{RELAY_PREFIX}{now_ms:016}:{hash}"))?;
        lock(&relay.kept).insert(hash);
        records.push((hash, store.blob(&hash)?));
    }
    let refs: Vec<_> = records.iter().map(|(blob, record)| (*blob, record)).collect();
    index.register_set(manifest.blob, &refs, true);
    let list = KeptSet {
        set: manifest.blob,
        segments: records.iter().map(|(blob, _)| *blob).collect(),
    };
    let newest = format!("{SET_PREFIX}{now_ms:016}:{}", manifest.blob);
    store.ingest_bytes(&postcard::to_stdvec(&list)?, &newest)?;
    // One list per set (the newest: a rendition in progress is kept again
    // as it grows), and the lists of the newest SETS_KEPT_MAX sets.
    let suffix = format!(":{}", manifest.blob);
    let (older, lists): (Vec<_>, Vec<_>) = store
        .references(SET_PREFIX, usize::MAX)?
        .into_iter()
        .partition(|(reference, _)| reference.ends_with(&suffix) && *reference != newest);
    let past_the_cap = lists.len().saturating_sub(SETS_KEPT_MAX);
    for (reference, _) in older.iter().chain(lists.iter().take(past_the_cap)) {
        store.remove_reference(reference)?;
    }
    let gone = evict(store, relay)?;
    Ok((records.len(), gone))
}

/// What a replicated set is made of.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KeptSet {
    set: BlobId,
    segments: Vec<BlobId>,
}

/// Registers again the replicated sets kept by earlier runs (the segments
/// still in the store); the sets, to announce.
pub fn restore_sets(store: &Store, index: &crate::p2p::PieceIndex) -> Vec<BlobId> {
    let lists = match store.references(SET_PREFIX, SETS_KEPT_MAX * 2) {
        Ok(lists) => lists,
        Err(error) => {
            tracing::warn!("cannot list kept segment sets: {error}");
            return Vec::new();
        }
    };
    let mut restored = Vec::new();
    for (reference, blob) in lists {
        let list = store
            .read_all(&blob)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(postcard::from_bytes::<KeptSet>(&bytes)?));
        let list = match list {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%reference, "a kept segment list is unreadable: {error:#}");
                continue;
            }
        };
        // Segments the relay cache let go since are left out.
        let records: Vec<_> = list
            .segments
            .iter()
            .filter_map(|segment| store.blob(segment).ok().map(|record| (*segment, record)))
            .collect();
        if records.is_empty() {
            let _ = store.remove_reference(&reference);
            continue;
        }
        let refs: Vec<_> = records.iter().map(|(blob, record)| (*blob, record)).collect();
        index.register_set(list.set, &refs, true);
        restored.push(list.set);
    }
    restored
}

/// Copies the blob out of the store when the store has all of it.
async fn copy_from_store(store: Arc<Store>, blob: BlobId, dest: PathBuf) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let Ok(record) = store.blob(&blob) else {
            return Ok(false);
        };
        if !record.stored {
            return Ok(false);
        }
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&dest).with_context(|| format!("cannot create {}", dest.display()))?,
        );
        // read_range_to verifies every chunk; a damaged copy is fetched
        // from the network instead.
        if let Err(error) = store.read_range_to(&blob, 0, record.size, &mut file) {
            tracing::warn!(%blob, "the stored copy is unreadable: {error}");
            return Ok(false);
        }
        std::io::Write::flush(&mut file)?;
        Ok(true)
    })
    .await?
}

/// The blob's size and pieces, as its holder's store has them.
pub async fn holder_pieces(state: &AppState, holder: u64, blob: &BlobId) -> anyhow::Result<(u64, Vec<Piece>)> {
    let http_addr = crate::jobs::owner_http(state, holder)?;
    let token = state.tokens.node_token(state.cluster.id(), state.clock.now_ms());
    let listed = crate::remote::blob_manifest(&http_addr, &token, &blob.to_string()).await?;
    let pieces = listed
        .chunks
        .iter()
        .map(|chunk| {
            let hash: ChunkId = chunk.hash.parse().context("the holder sent a bad chunk hash")?;
            Ok(Piece {
                hash,
                offset: chunk.offset,
                len: chunk.len,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((listed.size, pieces))
}

/// Pulls the blob from every peer that provides it, the holder as origin.
async fn from_peers(
    state: &AppState,
    node: &crate::p2p::NodeP2p,
    blob: BlobId,
    holder: u64,
    dest: &Path,
) -> anyhow::Result<FetchReport> {
    let (size, pieces) = holder_pieces(state, holder, &blob).await?;
    let members = read::peers(state.cluster.tables())?;
    let own = node.p2p.peer_id();
    let mut providers: Vec<Provider> = members
        .iter()
        .filter(|(id, _)| *id == holder)
        .map(|(_, peer)| Provider {
            peer: peer.peer_id.clone(),
            addrs: peer.addrs.clone(),
            origin: true,
        })
        .collect();
    for (peer, addrs) in node.p2p.providers(blob, PROVIDERS_WITHIN).await.unwrap_or_default() {
        if peer == own || addrs.is_empty() || providers.iter().any(|known| known.peer == peer.to_string()) {
            continue;
        }
        providers.push(Provider {
            peer: peer.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            origin: false,
        });
    }
    let mut member_ids: Vec<String> = members.iter().map(|(_, peer)| peer.peer_id.clone()).collect();
    member_ids.push(own.to_string());
    // Members need no grant from each other.
    let manifest = Manifest::sign(
        node.p2p.keypair(),
        blob,
        size,
        pieces,
        providers,
        member_ids,
        String::new(),
    );
    let report = omega_p2p::fetch::fetch(&node.p2p, &manifest, dest, &FetchOptions::default()).await?;
    tracing::info!(%blob, bytes = report.bytes, sources = report.sources.len(), "blob fetched from peers");
    Ok(report)
}

async fn from_holder(state: &AppState, blob: BlobId, holder: u64, dest: &Path) -> anyhow::Result<()> {
    let http_addr = crate::jobs::owner_http(state, holder)?;
    let token = state.tokens.node_token(state.cluster.id(), state.clock.now_ms());
    crate::remote::fetch_blob(&http_addr, &token, &blob.to_string(), dest).await?;
    Ok(())
}

/// Keeps a fetched blob in the store under a `relay:` reference, drops
/// the oldest kept ones past the budget, and announces it.
async fn keep(state: &AppState, blob: BlobId, path: &Path) -> anyhow::Result<()> {
    let (Some(store), Some(node)) = (state.store.clone(), state.p2p.clone()) else {
        return Ok(());
    };
    let cache_max = node.relay.cache_max;
    let size = std::fs::metadata(path)?.len();
    if cache_max == 0 || size > cache_max {
        return Ok(());
    }
    let reference = format!("{RELAY_PREFIX}{:016}:{blob}", state.clock.now_ms());
    let path = path.to_path_buf();
    let relay = node.relay.clone();
    let gone = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<BlobId>> {
        let report = store.ingest_file_as(&path, &reference, &mut |_| {})?;
        anyhow::ensure!(report.blob == blob, "the file is {}, not {blob}", report.blob);
        lock(&relay.kept).insert(blob);
        evict(&store, &relay)
    })
    .await??;
    for blob in gone {
        node.p2p.unprovide(blob).await?;
    }
    node.p2p.provide(blob).await?;
    Ok(())
}

/// Removes the oldest `relay:` references while kept blobs exceed the
/// budget, then collects what they named; the blobs this node no longer
/// holds at all (not kept under another name either), to stop announcing.
fn evict(store: &Store, relay: &Relay) -> anyhow::Result<Vec<BlobId>> {
    let dropped = store.trim_references(RELAY_PREFIX, relay.cache_max, KEPT_MAX)?;
    if dropped.is_empty() {
        return Ok(Vec::new());
    }
    lock(&relay.kept).retain(|blob| !dropped.contains(blob));
    tracing::info!(removed = dropped.len(), "relay cache over budget: oldest blobs dropped");
    let mut gone = Vec::new();
    for blob in dropped {
        if store.blob(&blob).is_err() {
            gone.push(blob);
        }
    }
    Ok(gone)
}
