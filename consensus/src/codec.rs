//! postcard encoding of records and log entries, and the key layouts.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: postcard fails only on writers that run out of room or on
    // types serde cannot describe; a Vec grows and these types are plain data.
    postcard::to_stdvec(value).unwrap_or_else(|error| unreachable!("postcard encode: {error}"))
}

/// Decodes a value; a failure is `InvalidData` naming `what`.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("cannot decode {what}: {error}")))
}

/// A big-endian id: keys sort in numeric order.
pub fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Two ids, big-endian, one after the other.
pub fn pair_key(first: u64, second: u64) -> [u8; 16] {
    let mut key = [0_u8; 16];
    key[..8].copy_from_slice(&first.to_be_bytes());
    key[8..].copy_from_slice(&second.to_be_bytes());
    key
}

/// Reads a big-endian id from the first 8 bytes of `key`.
pub fn key_id(key: &[u8]) -> io::Result<u64> {
    key.get(..8)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a key is shorter than 8 bytes"))
}

/// Reads the second big-endian id of a pair key.
pub fn key_second_id(key: &[u8]) -> io::Result<u64> {
    key.get(8..16)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a pair key is shorter than 16 bytes"))
}

/// Turns any error into an `io::Error` (openraft's storage error type).
pub fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}
