//! Commands: what a client asks the replicated state machine to do, and what
//! it answers.
//!
//! The enums are the versioned wire and log format (postcard encodes a
//! variant by its position): variants are only ever appended, never
//! reordered or removed. A golden-bytes test pins the encoding. Every
//! command that depends on time carries `now_ms`, chosen by the proposer, so
//! that applying the log is deterministic on every node.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{EntityId, Hash, ItemWrite, LibraryAccess, LibraryKind, NodeId, Role, WatchState};

/// A write to the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing; used to probe and benchmark the write path.
    Noop,
    /// Records a join token as used; answers [`Response::NodeId`] with the
    /// new node's id (this entry's log index). A token admits one node.
    ConsumeJoinToken {
        /// The token's id.
        token_id: [u8; 16],
        /// The token's expiry, as signed in it.
        expires_ms: u64,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Creates a user; answers [`Response::Created`].
    CreateUser {
        /// Unique name (case-insensitive).
        name: String,
        /// argon2id PHC string.
        password_hash: String,
        /// Roles.
        roles: BTreeSet<Role>,
        /// Library access.
        library_access: LibraryAccess,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Changes a user; `None` fields stay as they are.
    UpdateUser {
        /// The user.
        id: EntityId,
        /// New password hash.
        password_hash: Option<String>,
        /// New roles.
        roles: Option<BTreeSet<Role>>,
        /// New library access.
        library_access: Option<LibraryAccess>,
        /// New TOTP secret (`Some(None)` removes it).
        totp_secret: Option<Option<Vec<u8>>>,
    },
    /// Deletes a user with its tokens, keys and watch state.
    DeleteUser {
        /// The user.
        id: EntityId,
    },
    /// Stores a refresh token under the hash of its secret.
    PutRefreshToken {
        /// BLAKE3 of the secret.
        hash: Hash,
        /// Whose.
        user: EntityId,
        /// Expiry.
        expires_ms: u64,
    },
    /// Revokes a refresh token.
    RevokeRefreshToken {
        /// BLAKE3 of the secret.
        hash: Hash,
    },
    /// Stores an API key under the hash of its secret.
    PutApiKey {
        /// BLAKE3 of the secret.
        hash: Hash,
        /// Whose.
        user: EntityId,
        /// Label.
        name: String,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Revokes an API key.
    RevokeApiKey {
        /// BLAKE3 of the secret.
        hash: Hash,
    },
    /// Creates a library; answers [`Response::Created`].
    CreateLibrary {
        /// Unique name.
        name: String,
        /// Kind of media.
        kind: LibraryKind,
        /// Folders.
        paths: Vec<String>,
        /// Node that scans them.
        node: NodeId,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Deletes a library and its items.
    DeleteLibrary {
        /// The library.
        id: EntityId,
    },
    /// Adds or updates items by natural key; answers [`Response::Items`]
    /// with their ids in order. Parents must come before their children or
    /// exist already.
    UpsertItems {
        /// The items.
        items: Vec<ItemWrite>,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Removes items (and their watch state) by natural key.
    RemoveItems {
        /// Natural keys.
        keys: Vec<String>,
    },
    /// Sets a user's progress on an item.
    SetWatchState {
        /// The user.
        user: EntityId,
        /// The item.
        item: EntityId,
        /// The new state (`updated_ms` is the proposer's clock).
        state: WatchState,
    },
    /// Queues a transcode job; answers [`Response::Created`].
    EnqueueJob {
        /// The item.
        item: EntityId,
        /// The profile.
        profile: String,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Claims a queued job, or one whose lease expired; answers
    /// [`Response::Lease`] whose fencing token is this entry's log index.
    ClaimJob {
        /// The job.
        job: EntityId,
        /// The claiming node.
        node: NodeId,
        /// Proposer's clock.
        now_ms: u64,
        /// Lease length.
        lease_ms: u64,
    },
    /// Extends the holder's lease.
    RenewLease {
        /// The job.
        job: EntityId,
        /// The holder's fencing token.
        fencing: u64,
        /// Proposer's clock.
        now_ms: u64,
        /// New lease length from `now_ms`.
        lease_ms: u64,
    },
    /// Ends the holder's lease with an outcome.
    FinishJob {
        /// The job.
        job: EntityId,
        /// The holder's fencing token.
        fencing: u64,
        /// What happened.
        outcome: JobOutcome,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Refuses a removed member's certificate from now on.
    RevokeCertificate {
        /// BLAKE3 of the certificate, hex.
        fingerprint: String,
        /// The node it belonged to.
        node: NodeId,
    },
    /// Creates the first administrator; refused once any user exists (the
    /// web setup page races nothing: the log orders the attempts).
    CreateFirstAdmin {
        /// Name.
        name: String,
        /// argon2id PHC string.
        password_hash: String,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Stores an app password of a user: a secret for apps whose protocols
    /// need one the server can read back (Subsonic's salted tokens),
    /// sealed by the proposing node with a key only members hold. At most
    /// [`crate::model::APP_PASSWORDS_MAX`] per user.
    PutAppPassword {
        /// Whose.
        user: EntityId,
        /// Chosen by the proposer (random); refused if taken.
        id: u64,
        /// Label.
        name: String,
        /// The sealed secret.
        sealed: Vec<u8>,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Revokes an app password.
    RevokeAppPassword {
        /// Whose.
        user: EntityId,
        /// Which.
        id: u64,
    },
    /// Marks or unmarks an item as one of a user's favourites.
    SetFavorite {
        /// Whose.
        user: EntityId,
        /// The item.
        item: EntityId,
        /// Marked (true) or not.
        favorite: bool,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Creates a playlist; answers [`Response::Created`]. At most
    /// [`crate::model::PLAYLIST_ITEMS_MAX`] items.
    CreatePlaylist {
        /// Whose.
        owner: EntityId,
        /// Its name.
        name: String,
        /// Items, in order (repeats allowed).
        items: Vec<EntityId>,
        /// Other users may see it.
        public: bool,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Changes a playlist of `owner`: what is given replaces what it had.
    UpdatePlaylist {
        /// The playlist.
        id: EntityId,
        /// Its owner (checked).
        owner: EntityId,
        /// A new name.
        name: Option<String>,
        /// New items, in order.
        items: Option<Vec<EntityId>>,
        /// New visibility.
        public: Option<bool>,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Deletes a playlist of `owner`.
    DeletePlaylist {
        /// The playlist.
        id: EntityId,
        /// Its owner (checked).
        owner: EntityId,
    },
    /// Records a member's identity and addresses on the P2P data plane
    /// (replacing what it had): members fetch from each other without
    /// grants, and their keys sign grants and manifests.
    SetPeer {
        /// The member.
        node: NodeId,
        /// Its libp2p peer id.
        peer_id: String,
        /// Its multiaddrs, at most [`crate::model::PEER_ADDRS_MAX`].
        addrs: Vec<String>,
    },
    /// Trades refresh token `old` for `new` in one step: answers
    /// [`Response::Rotated`] when `old` was live; when `old` was already
    /// traded, revokes its whole family and answers
    /// [`Response::FamilyRevoked`]; otherwise refuses. Two clients racing
    /// with one token cannot both win.
    RotateRefreshToken {
        /// BLAKE3 of the presented secret.
        old: Hash,
        /// BLAKE3 of the new secret.
        new: Hash,
        /// The new token's expiry.
        expires_ms: u64,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Ends every sign-in of a user: its refresh tokens (and their
    /// families) are deleted, and access tokens issued before `now_ms` are
    /// refused from then on.
    SignOutEverywhere {
        /// The user.
        user: EntityId,
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Deletes refresh tokens that expired by `now_ms`, with their
    /// families: at most [`crate::model::PURGE_BATCH_MAX`] a command, so
    /// that one entry stays cheap to apply. Answers [`Response::Purged`].
    PurgeExpiredRefreshTokens {
        /// Proposer's clock.
        now_ms: u64,
    },
    /// Replaces the key that signs access, stream and node tokens: made by
    /// the leader when the cluster has none, and again after every member
    /// removal, so that a removed node (which knew the old key) can no
    /// longer mint tokens the members accept.
    SetTokenKey {
        /// The new key.
        key: crate::model::TokenKeyBytes,
        /// Members removed so far (rows of revoked certificates) when it
        /// was made: a leader makes another once more were removed.
        removals: u64,
    },
}

/// How a leased job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    /// Finished, with the output's blob id when stored.
    Done {
        /// Output blob.
        output: Option<Hash>,
    },
    /// Failed for good.
    Failed {
        /// Why.
        reason: String,
    },
    /// Given back to the queue for another node.
    Released,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: commands carry secrets' hashes and user data that do
        // not belong in logs.
        let name = match self {
            Command::Noop => "noop",
            Command::ConsumeJoinToken { .. } => "consume-join-token",
            Command::CreateUser { .. } => "create-user",
            Command::UpdateUser { .. } => "update-user",
            Command::DeleteUser { .. } => "delete-user",
            Command::PutRefreshToken { .. } => "put-refresh-token",
            Command::RevokeRefreshToken { .. } => "revoke-refresh-token",
            Command::PutApiKey { .. } => "put-api-key",
            Command::RevokeApiKey { .. } => "revoke-api-key",
            Command::CreateLibrary { .. } => "create-library",
            Command::DeleteLibrary { .. } => "delete-library",
            Command::UpsertItems { .. } => "upsert-items",
            Command::RemoveItems { .. } => "remove-items",
            Command::SetWatchState { .. } => "set-watch-state",
            Command::EnqueueJob { .. } => "enqueue-job",
            Command::ClaimJob { .. } => "claim-job",
            Command::RenewLease { .. } => "renew-lease",
            Command::FinishJob { .. } => "finish-job",
            Command::RevokeCertificate { .. } => "revoke-certificate",
            Command::CreateFirstAdmin { .. } => "create-first-admin",
            Command::PutAppPassword { .. } => "put-app-password",
            Command::RevokeAppPassword { .. } => "revoke-app-password",
            Command::SetFavorite { .. } => "set-favorite",
            Command::CreatePlaylist { .. } => "create-playlist",
            Command::UpdatePlaylist { .. } => "update-playlist",
            Command::DeletePlaylist { .. } => "delete-playlist",
            Command::SetPeer { .. } => "set-peer",
            Command::RotateRefreshToken { .. } => "rotate-refresh-token",
            Command::SignOutEverywhere { .. } => "sign-out-everywhere",
            Command::PurgeExpiredRefreshTokens { .. } => "purge-expired-refresh-tokens",
            Command::SetTokenKey { .. } => "set-token-key",
        };
        f.write_str(name)
    }
}

/// The state machine's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied.
    Done,
    /// Applied; the new entity's id.
    Created(EntityId),
    /// Applied; the ids of the upserted items, in order.
    Items(Vec<EntityId>),
    /// Applied; the admitted node's id.
    NodeId(NodeId),
    /// Applied; the lease granted.
    Lease {
        /// Fencing token: the claim's log index.
        fencing: u64,
        /// Expiry, milliseconds since the epoch.
        expires_ms: u64,
    },
    /// Not applied: a rule of the state machine refused it. The log entry
    /// stays; refusing is deterministic on every node.
    Rejected(Rejection),
    /// Applied; the refresh token was traded for a new one of this user.
    Rotated {
        /// Whose token it is.
        user: EntityId,
    },
    /// Applied: the refresh token had been traded already, so it was
    /// copied; its family (the live token included) is revoked.
    FamilyRevoked,
    /// Applied; how many expired refresh tokens were deleted (fewer than
    /// the batch's bound: none is left).
    Purged(u64),
}

/// Why the state machine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A user or library with this name exists.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// The named entity does not exist.
    #[error("no {what} {id}")]
    NotFound {
        /// Its kind.
        what: String,
        /// Its id or key.
        id: String,
    },
    /// The join token was already used.
    #[error("this join token was already used")]
    TokenUsed,
    /// The join token expired.
    #[error("this join token expired")]
    TokenExpired,
    /// The job is not in a state that allows this move.
    #[error("job {job} is {state}: {action} is not allowed")]
    IllegalTransition {
        /// The job.
        job: EntityId,
        /// Its state's name.
        state: String,
        /// The refused move.
        action: String,
    },
    /// Another node holds a valid lease on the job.
    #[error("job {job} is leased by node {holder} until {expires_ms}")]
    LeaseHeld {
        /// The job.
        job: EntityId,
        /// The holder.
        holder: NodeId,
        /// Lease expiry.
        expires_ms: u64,
    },
    /// The caller's fencing token is not the current lease's.
    #[error("job {job}: fencing token {given} is stale")]
    StaleFencing {
        /// The job.
        job: EntityId,
        /// The token presented.
        given: u64,
    },
    /// The command is malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// A bounded table is full of entries that cannot be dropped yet.
    #[error("{0}")]
    Full(String),
    /// The caller holds as many of these as one may (API keys, app
    /// passwords): it must remove one first. (Last, so that the encoding
    /// of the variants before it is unchanged.)
    #[error("{0}")]
    Quota(String),
}
