//! Names of stored things: chunks and blobs are named by their BLAKE3 hash,
//! packs by a counter that never goes back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The BLAKE3 hash of a byte string: 32 bytes, shown as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// Hashes `bytes` with BLAKE3.
    pub fn of(bytes: &[u8]) -> Self {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    /// The raw bytes, as used in index keys.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a hash from an index key of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Hash32(array))
    }
}

impl From<blake3::Hash> for Hash32 {
    fn from(hash: blake3::Hash) -> Self {
        Hash32(*hash.as_bytes())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are enough to tell hashes apart in logs.
        write!(formatter, "{}", &hex::encode(self.0)[..16])
    }
}

/// A hex string that is not a 64-digit BLAKE3 hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a blob id (64 hex digits expected): {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for Hash32 {
    type Err = ParseHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| ParseHashError(text.chars().take(80).collect()))?;
        Ok(Hash32(bytes))
    }
}

/// A chunk is named by the BLAKE3 hash of its bytes.
pub type ChunkId = Hash32;

/// A blob is named by the BLAKE3 hash of its whole content.
pub type BlobId = Hash32;

/// A pack file holds many chunks; ids only grow, so a crashed, half-written
/// pack's id is never handed out again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PackId(pub u64);

impl PackId {
    /// The big-endian key, so that RocksDB iterates packs in id order.
    pub fn key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Reads a pack id from an index key.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let array: [u8; 8] = key.try_into().ok()?;
        Some(PackId(u64::from_be_bytes(array)))
    }

    /// The file or object name of this pack.
    pub fn file_name(self) -> String {
        format!("{:016x}.pack", self.0)
    }

    /// Parses a name made by [`PackId::file_name`].
    pub fn from_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".pack")?;
        if stem.len() != 16 {
            return None;
        }
        u64::from_str_radix(stem, 16).ok().map(PackId)
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "pack {:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_through_hex() {
        let hash = Hash32::of(b"omega");
        let parsed: Hash32 = hash.to_string().parse().unwrap();
        assert_eq!(parsed, hash);
        assert!("xyz".parse::<Hash32>().is_err());
        assert!("ab".parse::<Hash32>().is_err());
    }

    #[test]
    fn pack_names_round_trip() {
        let pack = PackId(0x2a);
        assert_eq!(pack.file_name(), "000000000000002a.pack");
        assert_eq!(PackId::from_file_name(&pack.file_name()), Some(pack));
        assert_eq!(PackId::from_file_name("2a.pack"), None);
        assert_eq!(PackId::from_key(&pack.key()), Some(pack));
    }
}
