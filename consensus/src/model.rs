//! The records the state machine keeps: members, users, credentials,
//! libraries, catalog items, watch state and transcode jobs.
//!
//! They are encoded with postcard: a field is only ever appended, and enum
//! variants are only ever appended, so that an older record still decodes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node id. Ids are never reused: a joining node's id is the log index
/// of the command that admitted it.
pub type NodeId = u64;
/// Ids of users, libraries, items and jobs, taken from one counter.
pub type EntityId = u64;
/// A BLAKE3 hash (blob ids, credential hashes).
pub type Hash = [u8; 32];

/// What the cluster knows of a member: the openraft `Node` type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// Address of its Raft-over-QUIC endpoint.
    pub cluster_addr: String,
    /// Address of its HTTP API.
    pub http_addr: String,
    /// Its libp2p peer id, once it has one.
    pub p2p_peer_id: Option<String>,
    /// BLAKE3 of its certificate (DER), hex.
    pub cert_fingerprint: String,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (http {})", self.cluster_addr, self.http_addr)
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Manages users, libraries and the cluster.
    Admin,
    /// Browses and plays what its library access allows.
    Viewer,
}

/// Which libraries a user sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibraryAccess {
    /// Every library, present and future.
    All,
    /// Only these.
    Only(BTreeSet<EntityId>),
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: EntityId,
    /// Unique name, compared case-insensitively.
    pub name: String,
    /// argon2id hash in PHC string form; the password itself is never stored.
    pub password_hash: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Secret of its TOTP second factor, when enrolled.
    pub totp_secret: Option<Vec<u8>>,
    /// Libraries it may see.
    pub library_access: LibraryAccess,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: u64,
}

/// A refresh token, stored under the BLAKE3 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// Whose it is.
    pub user: EntityId,
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: u64,
}

/// Rotated tokens a refresh family remembers (oldest forgotten first): a
/// reuse of any of them revokes the family.
pub const REFRESH_ROTATED_MAX: usize = 64;

/// The refresh tokens one sign-in rotated through, stored under the hash of
/// its first token. Only `live` works; presenting a rotated one again means
/// it was copied, and revokes the family (RFC 9700's reuse detection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFamily {
    /// Whose it is.
    pub user: EntityId,
    /// The token that works now.
    pub live: Hash,
    /// Tokens already traded, oldest first, at most [`REFRESH_ROTATED_MAX`].
    pub rotated: Vec<Hash>,
}

/// An API key, stored under the BLAKE3 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Whose it is.
    pub user: EntityId,
    /// A label chosen by the user.
    pub name: String,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: u64,
}

/// Most app passwords a user may hold.
pub const APP_PASSWORDS_MAX: usize = 32;

/// Expired credentials one purge command deletes at most.
pub const PURGE_BATCH_MAX: usize = 1024;

/// API keys one user may hold: each lives until revoked, so without a bound
/// one account could fill the replicated state.
pub const API_KEYS_MAX: usize = 64;

/// An app password, stored under its user and id. Only nodes can open
/// `sealed` (the key derives from the cluster's CA key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPassword {
    /// Its id (random, chosen by the proposer).
    pub id: u64,
    /// Whose it is.
    pub user: EntityId,
    /// A label chosen by the user ("phone", "Symfonium").
    pub name: String,
    /// The secret, sealed.
    pub sealed: Vec<u8>,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: u64,
}

/// Most items in a playlist.
pub const PLAYLIST_ITEMS_MAX: usize = 10_000;
/// Longest playlist name, in characters.
pub const PLAYLIST_NAME_MAX: usize = 200;

/// A user's playlist: items in order (repeats allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playlist {
    /// Its id.
    pub id: EntityId,
    /// Whose it is.
    pub owner: EntityId,
    /// Its name.
    pub name: String,
    /// Items, in order.
    pub items: Vec<EntityId>,
    /// Other users may see it (and play what they may see of it).
    pub public: bool,
    /// Created, milliseconds since the epoch.
    pub created_ms: u64,
    /// Last changed.
    pub updated_ms: u64,
}

/// Most addresses a member may record for the P2P data plane.
pub const PEER_ADDRS_MAX: usize = 16;
/// Longest peer id or address recorded.
pub const PEER_TEXT_MAX: usize = 256;

/// A member on the P2P data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its multiaddrs.
    pub addrs: Vec<String>,
}

/// An item a user marked as a favourite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Favorite {
    /// When it was marked, milliseconds since the epoch.
    pub since_ms: u64,
}

/// What kind of media a library holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibraryKind {
    /// Films.
    Movies,
    /// Series, seasons, episodes.
    Shows,
    /// Artists, albums, tracks.
    Music,
    /// Audiobooks.
    Audiobooks,
    /// E-books and comics.
    Books,
    /// Photos.
    Photos,
}

/// A library: named folders of one kind of media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Library {
    /// Its id.
    pub id: EntityId,
    /// Unique name.
    pub name: String,
    /// Its kind.
    pub kind: LibraryKind,
    /// Folders on the disk of `node`.
    pub paths: Vec<String>,
    /// Node that scans the folders.
    pub node: NodeId,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: u64,
}

/// The kind of a catalog item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ItemKind {
    /// A film.
    Movie,
    /// A series.
    Series,
    /// A season of a series.
    Season,
    /// An episode.
    Episode,
    /// A music artist.
    Artist,
    /// An album.
    Album,
    /// A track.
    Track,
    /// An audiobook.
    Audiobook,
    /// A book.
    Book,
    /// A photo.
    Photo,
}

impl ItemKind {
    /// Every kind, in tag order.
    pub const ALL: [ItemKind; 10] = [
        ItemKind::Movie,
        ItemKind::Series,
        ItemKind::Season,
        ItemKind::Episode,
        ItemKind::Artist,
        ItemKind::Album,
        ItemKind::Track,
        ItemKind::Audiobook,
        ItemKind::Book,
        ItemKind::Photo,
    ];

    /// A one-byte tag for index keys.
    pub fn tag(self) -> u8 {
        // Invariant: ALL lists every variant.
        ItemKind::ALL
            .iter()
            .position(|kind| *kind == self)
            .map_or_else(|| unreachable!("ItemKind::ALL lists every kind"), |index| index as u8)
    }
}

/// One file that holds an item's media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// The node whose disk holds the file.
    pub node: NodeId,
    /// Its path on that node.
    pub path: String,
    /// The store's blob id of its content, once indexed.
    pub blob: Option<Hash>,
    /// Its size in bytes.
    pub size: u64,
}

/// What a scanner writes for an item; the state machine assigns the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemWrite {
    /// Stable natural key (for example the file path), so a rescan updates
    /// the item instead of adding a second one.
    pub key: String,
    /// Its library.
    pub library: EntityId,
    /// Its kind.
    pub kind: ItemKind,
    /// Natural key of its parent (series of a season, album of a track).
    pub parent_key: Option<String>,
    /// Display title.
    pub title: String,
    /// Title used for sorting.
    pub sort_title: String,
    /// Year of release.
    pub year: Option<u16>,
    /// Episode, track or season number.
    pub index: Option<u32>,
    /// Other metadata (duration, codecs, overview, ...).
    pub metadata: BTreeMap<String, String>,
    /// Files holding its media.
    pub media: Vec<MediaRef>,
}

/// A catalog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its id.
    pub id: EntityId,
    /// Its parent's id, if any.
    pub parent: Option<EntityId>,
    /// When it was first added, milliseconds since the epoch.
    pub added_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
    /// Everything the scanner wrote.
    pub fields: ItemWrite,
}

/// A user's progress on an item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// Resume position in milliseconds.
    pub position_ms: u64,
    /// Played to the end at least once.
    pub played: bool,
    /// How many times it was played to the end.
    pub play_count: u32,
    /// Last change, milliseconds since the epoch.
    pub updated_ms: u64,
}

/// Where a transcode job stands. Legal moves: `Queued → Leased`,
/// `Leased → Leased` (renewal by the holder, or a new claim once the lease
/// expired), `Leased → Done | Failed | Queued` (by the holder only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for a node.
    Queued,
    /// A node works on it until `expires_ms`; its writes carry `fencing`.
    Leased {
        /// The holder.
        node: NodeId,
        /// Lease expiry, milliseconds since the epoch.
        expires_ms: u64,
        /// Log index of the claim: the fencing token.
        fencing: u64,
    },
    /// Finished.
    Done {
        /// The node that finished it.
        node: NodeId,
        /// Blob id of the output, when stored.
        output: Option<Hash>,
        /// When it finished.
        finished_ms: u64,
    },
    /// Given up.
    Failed {
        /// Why.
        reason: String,
        /// When.
        finished_ms: u64,
    },
}

/// Most jobs the table holds. Enqueueing past it forgets the oldest
/// finished job (its node then drops the job's output); with none
/// finished, the new job is refused. Keeps the table, and every scan a
/// worker makes of it, bounded.
pub const JOBS_MAX: usize = 10_000;

impl JobState {
    /// Done or failed: nothing moves it any more.
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Done { .. } | JobState::Failed { .. })
    }

    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Leased { .. } => "leased",
            JobState::Done { .. } => "done",
            JobState::Failed { .. } => "failed",
        }
    }
}

/// A transcode job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: EntityId,
    /// The item to transcode.
    pub item: EntityId,
    /// The profile (rendition ladder) to produce.
    pub profile: String,
    /// Where it stands.
    pub state: JobState,
    /// Claims so far.
    pub attempts: u32,
    /// Creation time, milliseconds since the epoch.
    pub created_ms: u64,
}

/// 32 secret bytes; shown as `..` so that logs of commands and state
/// never carry them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKeyBytes(pub [u8; 32]);

impl fmt::Debug for TokenKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeyBytes(..)")
    }
}

/// The key that signs access, stream and node tokens (see
/// [`crate::command::Command::SetTokenKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKey {
    /// The key.
    pub key: TokenKeyBytes,
    /// Members removed when it was made.
    pub removals: u64,
}

/// A join token's use, recorded so that a token admits one node only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenUse {
    /// The node it admitted.
    pub node: NodeId,
    /// When, milliseconds since the epoch.
    pub used_ms: u64,
}
