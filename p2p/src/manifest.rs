//! A manifest: everything a fetch needs to pull one blob from many peers
//! without trusting any of them: the blob's pieces with their BLAKE3
//! hashes, the providers to ask, the cluster's members (whose keys sign
//! grants and manifests), and a grant for the fetching peer. The node that
//! issues it signs the blob and piece list, so a manifest handed on by a
//! peer cannot be altered.
//!
//! Its JSON form (hashes as hex) is what `GET /api/v1/items/{id}/manifest`
//! answers.

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use omega_storage::{BlobId, ChunkId};
use serde::{Deserialize, Serialize};

use crate::grant::{self, GrantError};

/// Domain of manifest signatures.
const MANIFEST_DOMAIN: &[u8] = b"omega-p2p-manifest-v1";
/// Most pieces a manifest may list (a 64 GiB blob of 512 KiB chunks is
/// 131,072); bounds what a fetch allocates for a manifest it is handed.
pub const MAX_PIECES: usize = 1 << 20;

/// One piece of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// BLAKE3 of its bytes (hex in JSON).
    #[serde(with = "hex_hash")]
    pub hash: ChunkId,
    /// Its first byte within the blob.
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// A peer that holds the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Its peer id.
    pub peer: String,
    /// Where to dial it.
    pub addrs: Vec<String>,
    /// True for the node that holds the item's file.
    pub origin: bool,
}

/// A signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// BLAKE3 of the whole blob (hex in JSON).
    #[serde(with = "hex_hash")]
    pub blob: BlobId,
    /// Its size.
    pub size: u64,
    /// Its pieces, in order, tiling `0..size`.
    pub pieces: Vec<Piece>,
    /// Who to ask.
    pub providers: Vec<Provider>,
    /// The cluster's members' peer ids: their keys may sign grants.
    pub members: Vec<String>,
    /// The fetching peer's grant.
    pub grant: String,
    /// The members and where to dial them (not signed: addresses change):
    /// they route the DHT in which seeding clients announce themselves.
    #[serde(default)]
    pub routes: Vec<Provider>,
    /// The issuing node's public key (protobuf, hex).
    pub issuer_key: String,
    /// The issuer's signature over blob, size and pieces (hex).
    pub signature: String,
}

impl Manifest {
    /// A manifest for `blob`, signed by `keypair`.
    pub fn sign(
        keypair: &Keypair,
        blob: BlobId,
        size: u64,
        pieces: Vec<Piece>,
        providers: Vec<Provider>,
        members: Vec<String>,
        grant: String,
    ) -> Manifest {
        let signature = grant::sign(keypair, MANIFEST_DOMAIN, &signed_bytes(&blob, size, &pieces));
        Manifest {
            blob,
            size,
            pieces,
            providers,
            members,
            grant,
            routes: Vec::new(),
            issuer_key: hex::encode(keypair.public().encode_protobuf()),
            signature: hex::encode(signature),
        }
    }

    /// Checks that the pieces tile the blob, that the issuer signed them and
    /// that the issuer is one of the members; returns the members.
    pub fn verify(&self) -> Result<Vec<PeerId>, String> {
        if self.pieces.len() > MAX_PIECES {
            return Err(format!("{} pieces is more than {MAX_PIECES}", self.pieces.len()));
        }
        let mut expected = 0_u64;
        for piece in &self.pieces {
            if piece.offset != expected || piece.len == 0 || piece.len > crate::wire::MAX_PIECE_BYTES {
                return Err(format!("piece at {} does not tile the blob", piece.offset));
            }
            expected += u64::from(piece.len);
        }
        if expected != self.size {
            return Err(format!("pieces cover {expected} bytes, not {}", self.size));
        }
        let members: Vec<PeerId> = self
            .members
            .iter()
            .map(|member| {
                member
                    .parse()
                    .map_err(|_| format!("member {member:?} is not a peer id"))
            })
            .collect::<Result<_, _>>()?;
        let key = hex::decode(&self.issuer_key).map_err(|_| "issuer key is not hex".to_owned())?;
        let signature = hex::decode(&self.signature).map_err(|_| "signature is not hex".to_owned())?;
        let issuer = grant::verify(
            &key,
            MANIFEST_DOMAIN,
            &signed_bytes(&self.blob, self.size, &self.pieces),
            &signature,
        )
        .map_err(|error: GrantError| error.to_string())?;
        if !members.contains(&issuer) {
            return Err(format!("signed by {issuer}, which is not a member"));
        }
        Ok(members)
    }

    /// The providers as peer ids and dialable addresses (unparsable ones
    /// skipped).
    pub fn provider_addrs(&self) -> Vec<(PeerId, Vec<Multiaddr>, bool)> {
        parse_peers(&self.providers)
    }

    /// The routes (members) as peer ids and dialable addresses.
    pub fn route_addrs(&self) -> Vec<(PeerId, Vec<Multiaddr>, bool)> {
        parse_peers(&self.routes)
    }
}

fn parse_peers(peers: &[Provider]) -> Vec<(PeerId, Vec<Multiaddr>, bool)> {
    peers
        .iter()
        .filter_map(|provider| {
            let peer = provider.peer.parse().ok()?;
            let addrs = provider.addrs.iter().filter_map(|addr| addr.parse().ok()).collect();
            Some((peer, addrs, provider.origin))
        })
        .collect()
}

fn signed_bytes(blob: &BlobId, size: u64, pieces: &[Piece]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(40 + pieces.len() * 44);
    bytes.extend_from_slice(&blob.0);
    bytes.extend_from_slice(&size.to_le_bytes());
    for piece in pieces {
        bytes.extend_from_slice(&piece.hash.0);
        bytes.extend_from_slice(&piece.offset.to_le_bytes());
        bytes.extend_from_slice(&piece.len.to_le_bytes());
    }
    bytes
}

/// Hashes as 64 hex digits in JSON.
mod hex_hash {
    use omega_storage::Hash32;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(hash: &Hash32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hash.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Hash32, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn example(keypair: &Keypair) -> Manifest {
        let pieces = vec![
            Piece {
                hash: ChunkId::of(b"ab"),
                offset: 0,
                len: 2,
            },
            Piece {
                hash: ChunkId::of(b"c"),
                offset: 2,
                len: 1,
            },
        ];
        Manifest::sign(
            keypair,
            BlobId::of(b"abc"),
            3,
            pieces,
            Vec::new(),
            vec![keypair.public().to_peer_id().to_string()],
            String::new(),
        )
    }

    #[test]
    fn a_signed_manifest_verifies_through_json_and_any_change_breaks_it() {
        let node = Keypair::generate_ed25519();
        let manifest = example(&node);
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(json.contains(&BlobId::of(b"abc").to_string()), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify().unwrap(), vec![node.public().to_peer_id()]);

        let mut altered = back.clone();
        altered.pieces[1].hash = ChunkId::of(b"d");
        assert!(altered.verify().is_err());
        let mut gapped = back.clone();
        gapped.pieces[1].offset = 3;
        assert!(gapped.verify().is_err());
        let mut outsider = back;
        outsider.members = vec![Keypair::generate_ed25519().public().to_peer_id().to_string()];
        assert!(outsider.verify().unwrap_err().contains("not a member"));
    }
}
