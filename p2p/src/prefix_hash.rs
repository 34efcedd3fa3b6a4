//! The blob's hash, made while its pieces arrive: pieces are hashed in
//! file order as the complete prefix of the file grows, the piece just
//! verified from memory and any written earlier (out of order) read back
//! from the file, which the page cache still holds. When the last piece is
//! in, the blob's hash is ready, instead of one more pass over the whole
//! file.

use std::os::unix::fs::FileExt;

use omega_storage::BlobId;

use crate::manifest::Piece;

/// The hash of the file's complete prefix.
#[derive(Debug)]
pub(crate) struct PrefixHash {
    pieces: Vec<Piece>,
    written: Vec<bool>,
    /// The first piece not yet hashed.
    next: usize,
    hasher: blake3::Hasher,
}

impl PrefixHash {
    /// For a blob made of `pieces`, in file order, none written yet.
    pub(crate) fn new(pieces: Vec<Piece>) -> PrefixHash {
        debug_assert!(
            pieces
                .windows(2)
                .all(|pair| pair[0].offset + u64::from(pair[0].len) == pair[1].offset),
            "pieces tile the blob in order"
        );
        PrefixHash {
            written: vec![false; pieces.len()],
            pieces,
            next: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// Piece `index` is in `file` (already there when a fetch resumes).
    pub(crate) fn mark_written(&mut self, index: usize) {
        if let Some(written) = self.written.get_mut(index) {
            *written = true;
        }
    }

    /// Piece `index`, whose verified `bytes` were just written to `file`:
    /// hashes it if the prefix reaches it, then every written piece after.
    pub(crate) fn written(&mut self, file: &std::fs::File, index: usize, bytes: &[u8]) -> std::io::Result<()> {
        self.mark_written(index);
        if index == self.next {
            self.hasher.update(bytes);
            self.next += 1;
        }
        self.advance(file)
    }

    /// Hashes written pieces from the prefix's end, reading them back.
    fn advance(&mut self, file: &std::fs::File) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        while self.written.get(self.next).copied().unwrap_or(false) {
            let piece = self.pieces[self.next];
            buffer.resize(piece.len as usize, 0);
            file.read_exact_at(&mut buffer, piece.offset)?;
            self.hasher.update(&buffer);
            self.next += 1;
        }
        Ok(())
    }

    /// The blob's hash once every piece is written (`None` before).
    pub(crate) fn finish(&mut self, file: &std::fs::File) -> std::io::Result<Option<BlobId>> {
        self.advance(file)?;
        Ok((self.next == self.pieces.len()).then(|| self.hasher.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    use omega_storage::{BlobId, ChunkId};
    use proptest::prelude::*;

    use super::PrefixHash;
    use crate::manifest::Piece;

    proptest! {
        /// Whatever order pieces arrive in, the hash is the whole blob's.
        #[test]
        fn any_arrival_order_gives_the_blob_hash(lens in prop::collection::vec(1_u32..300, 1..20), seed in any::<u64>()) {
            let total: u64 = lens.iter().map(|len| u64::from(*len)).sum();
            let data: Vec<u8> = (0..total).map(|at| (at.wrapping_mul(31) ^ seed) as u8).collect();
            let mut pieces = Vec::new();
            let mut offset = 0_u64;
            for len in &lens {
                let bytes = &data[offset as usize..(offset + u64::from(*len)) as usize];
                pieces.push(Piece { hash: ChunkId::of(bytes), offset, len: *len });
                offset += u64::from(*len);
            }
            let mut order: Vec<usize> = (0..pieces.len()).collect();
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for index in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(index, (state % (index as u64 + 1)) as usize);
            }
            let mut file = tempfile::tempfile().unwrap_or_else(|error| panic!("{error}"));
            file.write_all(&vec![0; total as usize]).unwrap_or_else(|error| panic!("{error}"));
            let mut prefix = PrefixHash::new(pieces.clone());
            for index in order {
                let piece = pieces[index];
                let bytes = &data[piece.offset as usize..(piece.offset + u64::from(piece.len)) as usize];
                file.write_all_at(bytes, piece.offset).unwrap_or_else(|error| panic!("{error}"));
                prefix.written(&file, index, bytes).unwrap_or_else(|error| panic!("{error}"));
            }
            prop_assert_eq!(prefix.finish(&file).unwrap_or_else(|error| panic!("{error}")), Some(BlobId::of(&data)));
        }
    }
}
