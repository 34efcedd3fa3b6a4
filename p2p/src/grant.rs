//! Grants: a node's signed, expiring permission for one peer (a client
//! that is not a cluster member) to fetch one blob's pieces. Members need
//! none. Anyone holding the issuing node's public key can check a grant,
//! so a client seeding what it fetched checks the grants of the clients
//! that come to it without asking the cluster.
//!
//! The same signatures (ed25519, by the node's libp2p key, with a domain
//! string per use) sign manifests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use omega_storage::BlobId;
use serde::{Deserialize, Serialize};

/// Prefix of grant tokens.
const PREFIX: &str = "omega_gr_";
/// Longest grant token accepted (a real one is about 250 characters).
pub const MAX_GRANT_LEN: usize = 1024;
/// Domain of grant signatures.
const GRANT_DOMAIN: &[u8] = b"omega-p2p-grant-v1";

/// Why a grant or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a grant token at all.
    #[error("malformed grant")]
    Malformed,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signed by a key that is not a cluster member's.
    #[error("signed by {0}, which is not a member")]
    UntrustedIssuer(PeerId),
    /// For another peer.
    #[error("granted to another peer")]
    WrongPeer,
    /// For another blob.
    #[error("granted for another blob")]
    WrongBlob,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

/// What a grant says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    grantee: Vec<u8>,
    blob: [u8; 32],
    expires_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    claims: Claims,
    issuer_key: Vec<u8>,
    signature: Vec<u8>,
}

/// A checked grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who may fetch.
    pub grantee: PeerId,
    /// What.
    pub blob: BlobId,
    /// Until when (ms since the epoch).
    pub expires_ms: u64,
    /// Who signed it.
    pub issuer: PeerId,
}

impl Grant {
    /// Issues a grant token signed by `keypair`.
    pub fn issue(keypair: &Keypair, grantee: &PeerId, blob: &BlobId, expires_ms: u64) -> String {
        let claims = Claims {
            grantee: grantee.to_bytes(),
            blob: blob.0,
            expires_ms,
        };
        let sealed = Sealed {
            signature: sign(keypair, GRANT_DOMAIN, &encode(&claims)),
            issuer_key: keypair.public().encode_protobuf(),
            claims,
        };
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(encode(&sealed)))
    }

    /// Checks `token` for `requester` fetching `blob` at `now_ms`, signed
    /// by a key `trusted` accepts.
    pub fn check(
        token: &str,
        requester: &PeerId,
        blob: &BlobId,
        now_ms: u64,
        trusted: impl Fn(&PeerId) -> bool,
    ) -> Result<Grant, GrantError> {
        if token.len() > MAX_GRANT_LEN {
            return Err(GrantError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.strip_prefix(PREFIX).ok_or(GrantError::Malformed)?)
            .map_err(|_| GrantError::Malformed)?;
        let sealed: Sealed = postcard::from_bytes(&bytes).map_err(|_| GrantError::Malformed)?;
        let issuer = verify(
            &sealed.issuer_key,
            GRANT_DOMAIN,
            &encode(&sealed.claims),
            &sealed.signature,
        )?;
        if !trusted(&issuer) {
            return Err(GrantError::UntrustedIssuer(issuer));
        }
        let grantee = PeerId::from_bytes(&sealed.claims.grantee).map_err(|_| GrantError::Malformed)?;
        if grantee != *requester {
            return Err(GrantError::WrongPeer);
        }
        if sealed.claims.blob != blob.0 {
            return Err(GrantError::WrongBlob);
        }
        if sealed.claims.expires_ms <= now_ms {
            return Err(GrantError::Expired);
        }
        Ok(Grant {
            grantee,
            blob: *blob,
            expires_ms: sealed.claims.expires_ms,
            issuer,
        })
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: postcard serialises these plain structs into a Vec
    // without fail (no maps with non-string keys, no unsized data).
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Signs `domain ‖ message` with `keypair`.
pub fn sign(keypair: &Keypair, domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut signed = domain.to_vec();
    signed.extend_from_slice(message);
    // Invariant: ed25519 signing cannot fail; other key types are never
    // made by this crate.
    keypair.sign(&signed).unwrap_or_default()
}

/// Verifies a signature made by [`sign`] under the protobuf-encoded public
/// key `issuer_key`; returns the signer's peer id.
pub fn verify(issuer_key: &[u8], domain: &[u8], message: &[u8], signature: &[u8]) -> Result<PeerId, GrantError> {
    let key = PublicKey::try_decode_protobuf(issuer_key).map_err(|_| GrantError::Malformed)?;
    let mut signed = domain.to_vec();
    signed.extend_from_slice(message);
    if key.verify(&signed, signature) {
        Ok(key.to_peer_id())
    } else {
        Err(GrantError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_grant_admits_its_peer_for_its_blob_until_it_expires_and_nothing_else() {
        let node = Keypair::generate_ed25519();
        let client = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let blob = BlobId::of(b"film");
        let token = Grant::issue(&node, &client, &blob, 1_000);
        let members = |peer: &PeerId| *peer == node.public().to_peer_id();
        let grant = Grant::check(&token, &client, &blob, 999, members).unwrap();
        assert_eq!(grant.issuer, node.public().to_peer_id());
        assert_eq!(
            Grant::check(&token, &client, &blob, 1_000, members),
            Err(GrantError::Expired)
        );
        assert_eq!(
            Grant::check(&token, &other, &blob, 0, members),
            Err(GrantError::WrongPeer)
        );
        assert_eq!(
            Grant::check(&token, &client, &BlobId::of(b"other"), 0, members),
            Err(GrantError::WrongBlob)
        );
        assert!(matches!(
            Grant::check(&token, &client, &blob, 0, |_| false),
            Err(GrantError::UntrustedIssuer(_))
        ));
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 5;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(Grant::check(&forged, &client, &blob, 0, members).is_err());
        assert_eq!(
            Grant::check("omega_gr_!!", &client, &blob, 0, members),
            Err(GrantError::Malformed)
        );
        assert_eq!(
            Grant::check(&"x".repeat(5000), &client, &blob, 0, members),
            Err(GrantError::Malformed)
        );
    }
}
