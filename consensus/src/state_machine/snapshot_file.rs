//! The snapshot file: a consistent dump of the state machine's tables,
//! streamed record by record so that a million catalog items never sit in
//! memory at once.
//!
//! Layout: magic `OMEGASN1`, `u32` LE length and postcard bytes of the
//! snapshot metadata, then records `[tag u8][key len u32 LE][value len u32
//! LE][key][value]`, then the end tag `0xFF`, the record count (`u64` LE)
//! and the BLAKE3 of every byte before the hash.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};

use super::tables::Table;
use crate::codec::{decode, encode};
use crate::raft_types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"OMEGASN1";
const END_TAG: u8 = 0xFF;
/// Longest metadata accepted (membership of a large cluster fits easily).
const META_MAX_BYTES: u32 = 1 << 20;
/// Longest key accepted.
const KEY_MAX_BYTES: u32 = 64 * 1024;
/// Longest value accepted.
const VALUE_MAX_BYTES: u32 = 64 << 20;

/// One row of a table: which table, its key and its value.
pub type Row = (Table, Vec<u8>, Vec<u8>);

fn invalid(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot: {}", detail.into()))
}

/// Writes a snapshot file.
#[derive(Debug)]
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    records: u64,
}

impl SnapshotWriter {
    /// Starts a snapshot with `meta` in `file`.
    pub fn new(file: File, meta: &SnapshotMeta) -> io::Result<SnapshotWriter> {
        let mut writer = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            records: 0,
        };
        let meta = encode(meta);
        writer.write(MAGIC)?;
        writer.write(&(meta.len() as u32).to_le_bytes())?;
        writer.write(&meta)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    /// Adds one row.
    pub fn record(&mut self, table: Table, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() > KEY_MAX_BYTES as usize || value.len() > VALUE_MAX_BYTES as usize {
            return Err(invalid(format!("a row of {} is too large", table.cf_name())));
        }
        self.write(&[table.tag()])?;
        self.write(&(key.len() as u32).to_le_bytes())?;
        self.write(&(value.len() as u32).to_le_bytes())?;
        self.write(key)?;
        self.write(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and syncs the file.
    pub fn finish(mut self) -> io::Result<u64> {
        self.write(&[END_TAG])?;
        let count = self.records.to_le_bytes();
        self.write(&count)?;
        let hash = self.hasher.finalize();
        self.out.write_all(hash.as_bytes())?;
        let file = self.out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(self.records)
    }
}

/// Reads a snapshot file, checking bounds as it goes and the hash at the end.
#[derive(Debug)]
pub struct SnapshotReader<R: Read> {
    input: BufReader<R>,
    hasher: blake3::Hasher,
    records: u64,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header; returns the reader and the metadata.
    pub fn open(input: R) -> io::Result<(SnapshotReader<R>, SnapshotMeta)> {
        let mut reader = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, input),
            hasher: blake3::Hasher::new(),
            records: 0,
            done: false,
        };
        let magic: [u8; 8] = reader.read_array()?;
        if &magic != MAGIC {
            return Err(invalid("not an Omega snapshot"));
        }
        let len = u32::from_le_bytes(reader.read_array()?);
        if len > META_MAX_BYTES {
            return Err(invalid("metadata too large"));
        }
        let meta_bytes = reader.read_vec(len)?;
        let meta = decode("snapshot metadata", &meta_bytes)?;
        Ok((reader, meta))
    }

    fn read_array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut bytes = [0_u8; N];
        self.input.read_exact(&mut bytes).map_err(truncated)?;
        self.hasher.update(&bytes);
        Ok(bytes)
    }

    fn read_vec(&mut self, len: u32) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0_u8; len as usize];
        self.input.read_exact(&mut bytes).map_err(truncated)?;
        self.hasher.update(&bytes);
        Ok(bytes)
    }

    /// The next row, or `None` after the trailer was read and verified.
    pub fn next_record(&mut self) -> io::Result<Option<Row>> {
        if self.done {
            return Ok(None);
        }
        let [tag] = self.read_array::<1>()?;
        if tag == END_TAG {
            let count = u64::from_le_bytes(self.read_array()?);
            let expected = self.hasher.finalize();
            let mut hash = [0_u8; 32];
            self.input.read_exact(&mut hash).map_err(truncated)?;
            if count != self.records {
                return Err(invalid(format!(
                    "trailer counts {count} rows, the file has {}",
                    self.records
                )));
            }
            if hash != *expected.as_bytes() {
                return Err(invalid("checksum mismatch"));
            }
            let mut extra = [0_u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(invalid("bytes after the trailer"));
            }
            self.done = true;
            return Ok(None);
        }
        let table = Table::from_tag(tag).ok_or_else(|| invalid(format!("unknown table tag {tag}")))?;
        let key_len = u32::from_le_bytes(self.read_array()?);
        let value_len = u32::from_le_bytes(self.read_array()?);
        if key_len > KEY_MAX_BYTES || value_len > VALUE_MAX_BYTES {
            return Err(invalid("a row is too large"));
        }
        let key = self.read_vec(key_len)?;
        let value = self.read_vec(value_len)?;
        self.records += 1;
        Ok(Some((table, key, value)))
    }

    /// Reads to the end, verifying the trailer; returns the row count.
    pub fn verify_to_end(mut self) -> io::Result<u64> {
        while self.next_record()?.is_some() {}
        Ok(self.records)
    }
}

fn truncated(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        invalid("truncated")
    } else {
        error
    }
}
