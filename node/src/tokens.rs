//! Credentials handed to clients: short-lived access tokens (signed, not
//! stored), refresh tokens and API keys (random secrets, stored as BLAKE3
//! hashes through Raft), TOTP enrolment tickets, and sealed app passwords.
//!
//! Tokens are signed with a key every member holds, so a token issued by
//! one node is accepted by all: at first a key derived from the cluster
//! CA's key, then, once a member was removed, a key made by the leader and
//! replicated through Raft ([`keep_signing_key`]), which the removed node
//! never sees. App passwords and TOTP secrets stay sealed with a key
//! derived from the CA's (a removed node receives no new ones).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

/// Prefix of access tokens.
pub const ACCESS_PREFIX: &str = "omega_at_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "omega_rt_";
/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "omega_key_";
/// Lifetime of an access token.
pub const ACCESS_TTL_MS: u64 = 15 * 60 * 1000;
/// Lifetime of a refresh token.
pub const REFRESH_TTL_MS: u64 = 30 * 24 * 3_600_000;
/// Lifetime of a stream token (long enough to watch a long film paused
/// twice).
pub const STREAM_TTL_MS: u64 = 8 * 3_600_000;
/// Prefix of stream tokens.
const STREAM_PREFIX: &str = "omega_st_";
/// Lifetime of a node token (node-to-node HTTP calls).
pub const NODE_TTL_MS: u64 = 5 * 60 * 1000;
/// Prefix of node tokens.
const NODE_PREFIX: &str = "omega_nt_";
/// Lifetime of a TOTP enrolment ticket.
pub const ENROLMENT_TTL_MS: u64 = 10 * 60 * 1000;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub user: u64,
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: u64,
}

/// What a stream token says: who may fetch which item's playlists,
/// segments and subtitles, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamClaims {
    user: u64,
    item: u64,
    expires_ms: u64,
}

/// What a node token says: which member calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeClaims {
    node: u64,
    expires_ms: u64,
}

/// What a TOTP enrolment ticket says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EnrolmentClaims {
    user: u64,
    secret: Vec<u8>,
    expires_ms: u64,
}

/// The associated data of a sealed app password.
/// Length of an enrolled TOTP secret (160 bits, as RFC 4226 recommends).
pub const TOTP_SECRET_LEN: usize = 20;

/// The associated data of a sealed TOTP secret: its user and a label, 25
/// bytes, so that it can never equal an app password's (16 bytes).
fn totp_aad(user: u64) -> Aad<[u8; 25]> {
    let mut bytes = [0; 25];
    bytes[..8].copy_from_slice(&user.to_be_bytes());
    bytes[8..].copy_from_slice(b"omega totp secret");
    Aad::from(bytes)
}

fn app_password_aad(user: u64, id: u64) -> Aad<[u8; 16]> {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&user.to_be_bytes());
    bytes[8..].copy_from_slice(&id.to_be_bytes());
    Aad::from(bytes)
}

/// Signs and checks tokens with the cluster's key, and seals app
/// passwords with another key derived from it.
#[derive(Clone)]
pub struct TokenKey {
    /// Signs tokens: the CA-derived key until the cluster replicates one.
    signing: std::sync::Arc<std::sync::RwLock<[u8; 32]>>,
    /// Derived from the CA's key, for names that must never change.
    id_key: [u8; 32],
    seal_key: [u8; 32],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// Derives the key from the cluster CA's private key.
    pub fn derive(ca_key_der: &[u8]) -> TokenKey {
        let id_key = blake3::derive_key("omega 2026 access tokens v1", ca_key_der);
        TokenKey {
            signing: std::sync::Arc::new(std::sync::RwLock::new(id_key)),
            id_key,
            seal_key: blake3::derive_key("omega 2026 app passwords v1", ca_key_der),
        }
    }

    /// Signs tokens with `key` from now on; tokens signed with the key
    /// before are refused. True when it changed.
    pub fn set_signing_key(&self, key: [u8; 32]) -> bool {
        let mut signing = self.signing.write().unwrap_or_else(|poison| poison.into_inner());
        let changed = *signing != key;
        *signing = key;
        changed
    }

    fn signing_key(&self) -> [u8; 32] {
        *self.signing.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A stable 128-bit name derived from the cluster's key for `purpose`
    /// (32 hex digits): the same on every member, unguessable elsewhere,
    /// unchanged when the signing key rotates.
    pub fn derived_id(&self, purpose: &str) -> String {
        let mac = keyed_mac(&self.id_key, "derived id", purpose.as_bytes());
        hex::encode(&mac.as_bytes()[..16])
    }

    /// Seals app password `id` of `user` (ChaCha20-Poly1305, random nonce;
    /// the user and id are authenticated too, so a sealed secret cannot be
    /// moved to another user or entry).
    pub fn seal_app_password(&self, user: u64, id: u64, secret: &str) -> Vec<u8> {
        self.seal_bytes(app_password_aad(user, id), secret.as_bytes())
    }

    /// The secret of a sealed app password, if it opens.
    pub fn open_app_password(&self, user: u64, id: u64, sealed: &[u8]) -> Option<String> {
        let plain = self.open_bytes(app_password_aad(user, id), sealed)?;
        String::from_utf8(plain).ok()
    }

    /// Seals `user`'s TOTP secret for the replicated state, as app passwords
    /// are: a copy of the state (a backup, a snapshot) does not give away
    /// second factors without the cluster's CA key.
    pub fn seal_totp_secret(&self, user: u64, secret: &[u8]) -> Vec<u8> {
        debug_assert_eq!(
            secret.len(),
            TOTP_SECRET_LEN,
            "TOTP secrets are enrolled at this length"
        );
        self.seal_bytes(totp_aad(user), secret)
    }

    /// The TOTP secret stored for `user`: opened when sealed; one stored
    /// before secrets were sealed (exactly [`TOTP_SECRET_LEN`] bytes) as it
    /// is. `None` when it does not open (another cluster's key, damage).
    pub fn open_totp_secret(&self, user: u64, stored: &[u8]) -> Option<Vec<u8>> {
        if stored.len() == TOTP_SECRET_LEN {
            return Some(stored.to_vec());
        }
        self.open_bytes(totp_aad(user), stored)
    }

    /// `plain` sealed with ChaCha20-Poly1305 under a random nonce, which
    /// leads the result.
    fn seal_bytes<A: AsRef<[u8]>>(&self, aad: Aad<A>, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plain.to_vec();
        // Invariant: sealing fails only for inputs over ~256 GiB.
        self.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut sealed)
            .unwrap_or_else(|_| unreachable!("sealing a short secret"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// What [`TokenKey::seal_bytes`] sealed with `aad`, if it opens.
    fn open_bytes<A: AsRef<[u8]>>(&self, aad: Aad<A>, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() <= NONCE_LEN || sealed.len() > 1024 {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self.aead().open_in_place(nonce, aad, &mut body).ok()?;
        Some(plain.to_vec())
    }

    fn aead(&self) -> LessSafeKey {
        // Invariant: a 32-byte key is ChaCha20-Poly1305's key length.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.seal_key).unwrap_or_else(|_| unreachable!("32-byte key")),
        )
    }

    fn seal<T: Serialize>(&self, prefix: &str, claims: &T) -> String {
        // Invariant: postcard fails only on writers out of room or types
        // serde cannot describe; a Vec grows and claims are plain data.
        let mut bytes = postcard::to_stdvec(claims).unwrap_or_else(|error| unreachable!("postcard: {error}"));
        let mac = self.mac(prefix, &bytes);
        bytes.extend_from_slice(mac.as_bytes());
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn open<T: serde::de::DeserializeOwned>(&self, prefix: &str, token: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(token.strip_prefix(prefix)?).ok()?;
        if bytes.len() <= 32 || bytes.len() > 4096 {
            return None;
        }
        let (body, mac) = bytes.split_at(bytes.len() - 32);
        let mac = blake3::Hash::from_bytes(mac.try_into().ok()?);
        // blake3::Hash compares in constant time.
        if self.mac(prefix, body) != mac {
            return None;
        }
        // Exactly one value: no trailing bytes.
        match postcard::take_from_bytes::<T>(body) {
            Ok((claims, [])) => Some(claims),
            _ => None,
        }
    }

    /// The MAC of a token of kind `prefix` over `body`: the kind is signed
    /// too, so that claims of one kind that encode like another's (a node
    /// token's `node, expires` and an access token's `user, expires`)
    /// cannot be passed off as the other by changing the prefix.
    fn mac(&self, prefix: &str, body: &[u8]) -> blake3::Hash {
        keyed_mac(&self.signing_key(), prefix, body)
    }

    /// An access token for `user`, valid until `now_ms + ACCESS_TTL_MS`.
    pub fn access_token(&self, user: u64, now_ms: u64) -> (String, AccessClaims) {
        let claims = AccessClaims {
            user,
            expires_ms: now_ms.saturating_add(ACCESS_TTL_MS),
        };
        (self.seal(ACCESS_PREFIX, &claims), claims)
    }

    /// The claims of a valid, unexpired access token.
    pub fn check_access(&self, token: &str, now_ms: u64) -> Option<AccessClaims> {
        self.open::<AccessClaims>(ACCESS_PREFIX, token)
            .filter(|claims| claims.expires_ms > now_ms)
    }

    /// A token that lets `user` fetch item `item`'s HLS for a while; it
    /// goes in URLs, for players that send no headers.
    pub fn stream_token(&self, user: u64, item: u64, now_ms: u64) -> String {
        self.stream_token_until(user, item, now_ms.saturating_add(STREAM_TTL_MS))
    }

    /// A stream token that expires at `expires_ms`.
    pub fn stream_token_until(&self, user: u64, item: u64, expires_ms: u64) -> String {
        let claims = StreamClaims { user, item, expires_ms };
        self.seal(STREAM_PREFIX, &claims)
    }

    /// The user of a valid stream token for `item`.
    pub fn check_stream(&self, token: &str, item: u64, now_ms: u64) -> Option<u64> {
        self.open::<StreamClaims>(STREAM_PREFIX, token)
            .filter(|claims| claims.item == item && claims.expires_ms > now_ms)
            .map(|claims| claims.user)
    }

    /// A token naming `node` as the caller of another member's internal
    /// routes (only members hold the key).
    pub fn node_token(&self, node: u64, now_ms: u64) -> String {
        let claims = NodeClaims {
            node,
            expires_ms: now_ms.saturating_add(NODE_TTL_MS),
        };
        self.seal(NODE_PREFIX, &claims)
    }

    /// The node a valid node token names.
    pub fn check_node(&self, token: &str, now_ms: u64) -> Option<u64> {
        self.open::<NodeClaims>(NODE_PREFIX, token)
            .filter(|claims| claims.expires_ms > now_ms)
            .map(|claims| claims.node)
    }

    /// A ticket binding a new TOTP secret to a user until it is confirmed.
    pub fn enrolment_ticket(&self, user: u64, secret: &[u8], now_ms: u64) -> String {
        let claims = EnrolmentClaims {
            user,
            secret: secret.to_vec(),
            expires_ms: now_ms.saturating_add(ENROLMENT_TTL_MS),
        };
        self.seal("omega_totp_", &claims)
    }

    /// The secret of a valid ticket issued to `user`.
    pub fn check_enrolment(&self, ticket: &str, user: u64, now_ms: u64) -> Option<Vec<u8>> {
        self.open::<EnrolmentClaims>("omega_totp_", ticket)
            .filter(|claims| claims.user == user && claims.expires_ms > now_ms)
            .map(|claims| claims.secret)
    }
}

/// The MAC under `key` of `body` for a token of kind `prefix` (see
/// [`TokenKey::mac`]).
fn keyed_mac(key: &[u8; 32], prefix: &str, body: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&(prefix.len() as u64).to_le_bytes());
    hasher.update(prefix.as_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// How often a member looks at the replicated signing key.
const SIGNING_KEY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps `tokens` signing with the cluster's replicated key, for as long as
/// the node runs; on the leader, makes a new key whenever more members
/// were removed than when the current one was made (at first: once the
/// first member is removed), so that no removed node holds the key members
/// accept. A removal finished by another leader is caught up the same way.
pub async fn keep_signing_key(
    cluster: std::sync::Arc<omega_consensus::Cluster<omega_consensus::quic::QuicTransport>>,
    tokens: TokenKey,
) {
    use omega_consensus::state_machine::read;
    let mut ticks = tokio::time::interval(SIGNING_KEY_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let tables = cluster.tables();
        let (record, removals) = match (read::token_key(tables), read::removals(tables)) {
            (Ok(record), Ok(removals)) => (record, removals),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot read the token key");
                continue;
            }
        };
        if let Some(record) = &record
            && tokens.set_signing_key(record.key.0)
        {
            tracing::info!("tokens are signed with a new cluster key");
        }
        let made_for = record.as_ref().map_or(0, |record| record.removals);
        if removals > made_for && cluster.is_leader() {
            let command = omega_consensus::Command::SetTokenKey {
                key: omega_consensus::model::TokenKeyBytes(rand::random()),
                removals,
            };
            if let Err(error) = cluster.write(command).await {
                tracing::debug!(%error, "cannot replace the token key yet; next round");
            }
        }
    }
}

/// A random secret with `prefix`, and the BLAKE3 hash under which it is
/// stored.
pub fn new_secret(prefix: &str) -> (String, [u8; 32]) {
    let secret: [u8; 32] = rand::random();
    let text = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = secret_hash(&text);
    (text, hash)
}

/// The stored hash of a refresh token or API key.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal (hardening, item 14): once the signing key is replaced, tokens
    /// signed before are refused and new ones accepted, on every clone of
    /// the key (the members' handlers share one); derived ids and sealed
    /// secrets do not change.
    #[test]
    fn a_new_signing_key_refuses_what_the_old_one_signed() {
        let key = TokenKey::derive(b"ca key");
        let handlers = key.clone();
        let id = key.derived_id("jellyfin server");
        let sealed = key.seal_app_password(1, 2, "secret");
        let (before, _) = key.access_token(7, 1_000);
        let node_before = key.node_token(3, 1_000);
        assert!(handlers.check_access(&before, 1_001).is_some());
        assert!(key.set_signing_key([9; 32]));
        assert!(!key.set_signing_key([9; 32]), "the same key again changes nothing");
        assert_eq!(handlers.check_access(&before, 1_001), None);
        assert_eq!(handlers.check_node(&node_before, 1_001), None);
        let (after, _) = handlers.access_token(7, 1_000);
        assert_eq!(key.check_access(&after, 1_001).map(|claims| claims.user), Some(7));
        assert_eq!(key.derived_id("jellyfin server"), id);
        assert_eq!(key.open_app_password(1, 2, &sealed).as_deref(), Some("secret"));
    }

    /// Goal (hardening, item 13): a TOTP secret is stored sealed: it is not
    /// in the sealed bytes, opens only for its user under this cluster's
    /// key, and a secret stored before sealing still reads. Failed before:
    /// secrets were stored as they are.
    #[test]
    fn totp_secrets_are_sealed_to_their_user_and_cluster() {
        let key = TokenKey::derive(b"ca key");
        let secret = [7_u8; TOTP_SECRET_LEN];
        let sealed = key.seal_totp_secret(5, &secret);
        assert!(!sealed.windows(secret.len()).any(|window| window == secret));
        assert_eq!(key.open_totp_secret(5, &sealed), Some(secret.to_vec()));
        assert_eq!(key.open_totp_secret(6, &sealed), None, "another user");
        assert_eq!(TokenKey::derive(b"other").open_totp_secret(5, &sealed), None);
        assert_eq!(
            key.open_totp_secret(5, &secret),
            Some(secret.to_vec()),
            "stored before sealing"
        );
    }

    #[test]
    fn app_passwords_open_only_for_their_user_and_entry() {
        let key = TokenKey::derive(b"ca key");
        let sealed = key.seal_app_password(7, 99, "abcd-efgh");
        assert_eq!(key.open_app_password(7, 99, &sealed).as_deref(), Some("abcd-efgh"));
        assert_eq!(key.open_app_password(8, 99, &sealed), None, "another user");
        assert_eq!(key.open_app_password(7, 98, &sealed), None, "another entry");
        assert_eq!(TokenKey::derive(b"other").open_app_password(7, 99, &sealed), None);
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(key.open_app_password(7, 99, &tampered), None);
        assert_eq!(key.open_app_password(7, 99, &[1, 2, 3]), None);
    }

    #[test]
    fn a_token_of_one_kind_is_not_another_kind() {
        let key = TokenKey::derive(b"ca key");
        let node = key.node_token(1, 1_000);
        let renamed = node.replacen(NODE_PREFIX, ACCESS_PREFIX, 1);
        assert_eq!(key.check_access(&renamed, 2_000), None);
        let (access, _) = key.access_token(1, 1_000);
        let renamed = access.replacen(ACCESS_PREFIX, NODE_PREFIX, 1);
        assert_eq!(key.check_node(&renamed, 2_000), None);
        assert_eq!(key.check_node(&node, 2_000), Some(1));
    }

    #[test]
    fn stream_tokens_name_one_item_until_they_expire() {
        let key = TokenKey::derive(b"ca key");
        let token = key.stream_token(7, 42, 1_000);
        assert_eq!(key.check_stream(&token, 42, 2_000), Some(7));
        assert_eq!(key.check_stream(&token, 43, 2_000), None, "another item");
        assert_eq!(key.check_stream(&token, 42, 1_000 + STREAM_TTL_MS), None, "expired");
        assert_eq!(key.check_access(&token, 2_000), None, "not an access token");
        let other = TokenKey::derive(b"another cluster");
        assert_eq!(other.check_stream(&token, 42, 2_000), None);
    }

    #[test]
    fn access_tokens_verify_expire_and_resist_tampering() {
        let key = TokenKey::derive(b"ca key");
        let (token, claims) = key.access_token(7, 1_000);
        assert_eq!(key.check_access(&token, 1_001), Some(claims.clone()));
        assert_eq!(key.check_access(&token, claims.expires_ms), None);
        assert_eq!(TokenKey::derive(b"other").check_access(&token, 1_001), None);
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.check_access(&String::from_utf8(tampered).unwrap(), 1_001), None);
        assert_eq!(key.check_access("omega_at_", 0), None);
        assert_eq!(key.check_access("garbage", 0), None);
    }

    #[test]
    fn enrolment_tickets_are_bound_to_their_user() {
        let key = TokenKey::derive(b"ca key");
        let ticket = key.enrolment_ticket(3, b"secret", 0);
        assert_eq!(key.check_enrolment(&ticket, 3, 1), Some(b"secret".to_vec()));
        assert_eq!(key.check_enrolment(&ticket, 4, 1), None);
        assert_eq!(key.check_enrolment(&ticket, 3, ENROLMENT_TTL_MS), None);
    }
}
