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

/// One file of a segment set (an HLS rendition's `init.mp4` and `N.m4s`),
/// in playlist order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Its file name in the rendition's playlist.
    pub name: String,
    /// BLAKE3 of its bytes (hex in JSON); `null` while the origin has not
    /// made it (a client then gets it from the origin over HTTP).
    #[serde(with = "hex_hash_option")]
    pub hash: Option<BlobId>,
    /// Its first byte within the set's pieces (0 when it has no hash).
    pub offset: u64,
    /// Its size (0 when it has no hash).
    pub size: u64,
}

/// Most segments a manifest may list (a day of 2 s segments).
pub const MAX_SEGMENTS: usize = 43_200;
/// Longest segment name.
pub const MAX_SEGMENT_NAME: usize = 64;

/// A signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// BLAKE3 of the whole blob (hex in JSON); for a segment set, the
    /// set's id (its pieces are checked segment by segment instead).
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
    /// For a segment set, its files in playlist order (empty for a blob):
    /// those with a hash tile the pieces; each piece lies in one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
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
        Manifest::sign_set(keypair, blob, size, pieces, Vec::new(), providers, members, grant)
    }

    /// A manifest for the segment set `set` made of `segments`, signed by
    /// `keypair`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_set(
        keypair: &Keypair,
        set: BlobId,
        size: u64,
        pieces: Vec<Piece>,
        segments: Vec<Segment>,
        providers: Vec<Provider>,
        members: Vec<String>,
        grant: String,
    ) -> Manifest {
        let signature = grant::sign(keypair, MANIFEST_DOMAIN, &signed_bytes(&set, size, &pieces, &segments));
        Manifest {
            blob: set,
            size,
            pieces,
            segments,
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
        self.verify_segments()?;
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
            &signed_bytes(&self.blob, self.size, &self.pieces, &self.segments),
            &signature,
        )
        .map_err(|error: GrantError| error.to_string())?;
        if !members.contains(&issuer) {
            return Err(format!("signed by {issuer}, which is not a member"));
        }
        Ok(members)
    }

    /// Segments with a hash tile `0..size` in order, and no piece crosses
    /// from one into the next (so each can be checked on its own).
    fn verify_segments(&self) -> Result<(), String> {
        if self.segments.is_empty() {
            return Ok(());
        }
        if self.segments.len() > MAX_SEGMENTS {
            return Err(format!("{} segments is more than {MAX_SEGMENTS}", self.segments.len()));
        }
        let mut pieces = self.pieces.iter().peekable();
        let mut expected = 0_u64;
        for segment in &self.segments {
            if segment.name.is_empty()
                || segment.name.len() > MAX_SEGMENT_NAME
                || segment.name.contains(['/', '?', '#'])
            {
                return Err(format!("segment name {:?} is not a file name", segment.name));
            }
            if segment.hash.is_none() {
                if segment.offset != 0 || segment.size != 0 {
                    return Err(format!("segment {} has no hash but a place", segment.name));
                }
                continue;
            }
            if segment.offset != expected || segment.size == 0 {
                return Err(format!("segment {} does not tile the set", segment.name));
            }
            let end = expected + segment.size;
            while let Some(piece) = pieces.next_if(|piece| piece.offset < end) {
                if piece.offset + u64::from(piece.len) > end {
                    return Err(format!("a piece crosses the end of segment {}", segment.name));
                }
            }
            expected = end;
        }
        if expected != self.size {
            return Err(format!("segments cover {expected} bytes, not {}", self.size));
        }
        Ok(())
    }

    /// The segments that have a hash, with their place in the set.
    pub fn hashed_segments(&self) -> impl Iterator<Item = (&Segment, BlobId)> {
        self.segments
            .iter()
            .filter_map(|segment| segment.hash.map(|hash| (segment, hash)))
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

fn signed_bytes(blob: &BlobId, size: u64, pieces: &[Piece], segments: &[Segment]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(40 + pieces.len() * 44);
    bytes.extend_from_slice(&blob.0);
    bytes.extend_from_slice(&size.to_le_bytes());
    for piece in pieces {
        bytes.extend_from_slice(&piece.hash.0);
        bytes.extend_from_slice(&piece.offset.to_le_bytes());
        bytes.extend_from_slice(&piece.len.to_le_bytes());
    }
    // A blob's manifest signs what it always did; a set's adds its files.
    for segment in segments {
        bytes.extend_from_slice(&(segment.name.len() as u64).to_le_bytes());
        bytes.extend_from_slice(segment.name.as_bytes());
        match segment.hash {
            Some(hash) => {
                bytes.push(1);
                bytes.extend_from_slice(&hash.0);
            }
            None => bytes.push(0),
        }
        bytes.extend_from_slice(&segment.offset.to_le_bytes());
        bytes.extend_from_slice(&segment.size.to_le_bytes());
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

/// Optional hashes as hex or `null` in JSON.
mod hex_hash_option {
    use omega_storage::Hash32;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(hash: &Option<Hash32>, serializer: S) -> Result<S::Ok, S::Error> {
        match hash {
            Some(hash) => serializer.serialize_str(&hash.to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Hash32>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
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

    fn set(keypair: &Keypair, cut: u64) -> Manifest {
        let bytes = b"initseg0seg1";
        let piece = |offset: u64, len: u32| Piece {
            hash: ChunkId::of(&bytes[offset as usize..(offset + u64::from(len)) as usize]),
            offset,
            len,
        };
        let segment = |name: &str, offset: u64, size: u64| Segment {
            name: name.into(),
            hash: Some(BlobId::of(&bytes[offset as usize..(offset + size) as usize])),
            offset,
            size,
        };
        Manifest::sign_set(
            keypair,
            BlobId::of(b"set"),
            12,
            vec![piece(0, cut as u32), piece(cut, 8 - cut as u32), piece(8, 4)],
            vec![
                segment("init.mp4", 0, 4),
                segment("0.m4s", 4, 4),
                Segment {
                    name: "1.m4s".into(),
                    hash: None,
                    offset: 0,
                    size: 0,
                },
                segment("2.m4s", 8, 4),
            ],
            Vec::new(),
            vec![keypair.public().to_peer_id().to_string()],
            String::new(),
        )
    }

    #[test]
    fn a_segment_set_verifies_only_when_its_pieces_stay_inside_its_segments() {
        let node = Keypair::generate_ed25519();
        let manifest = set(&node, 4);
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(json.contains(r#""hash":null"#), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, manifest);
        back.verify().unwrap();
        assert_eq!(back.hashed_segments().count(), 3);

        let crossing = set(&node, 3);
        assert!(crossing.verify().unwrap_err().contains("crosses"), "{crossing:?}");
        let mut altered = back.clone();
        altered.segments[2].hash = Some(BlobId::of(b"x"));
        assert!(altered.verify().is_err());
        let mut renamed = back;
        renamed.segments[0].name = "../init.mp4".into();
        assert!(renamed.verify().unwrap_err().contains("file name"));
    }
}
