//! Content-defined chunking with FastCDC (the 2020 variant, pinned version).
//!
//! The reader is cut in large blocks so that chunks can be hashed in parallel
//! straight out of one buffer, with no copy per chunk. Cut points equal those
//! of a single pass over the whole input: FastCDC starts every chunk afresh,
//! so a cut found before the end of a block depends only on bytes already in
//! the block; the one chunk that ends exactly at a block's end may be an
//! artefact of the block and is carried into the next block instead.

use std::io::Read;

use fastcdc::v2020::FastCDC;
use serde::{Deserialize, Serialize};

/// Chunk size limits. They are part of a store's on-disk contract: a store
/// keeps the limits it was created with (docs/decisions/0002-chunking.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerConfig {
    /// No chunk is shorter, except the last one of a blob.
    pub min_bytes: u32,
    /// The size FastCDC aims for.
    pub avg_bytes: u32,
    /// No chunk is longer.
    pub max_bytes: u32,
}

impl ChunkerConfig {
    /// Limits for media: 128 KiB / 512 KiB / 2 MiB (docs/decisions/0002-chunking.md).
    pub const MEDIA: ChunkerConfig = ChunkerConfig {
        min_bytes: 128 * 1024,
        avg_bytes: 512 * 1024,
        max_bytes: 2 * 1024 * 1024,
    };

    /// Small limits (2 KiB / 8 KiB / 32 KiB) that keep tests fast.
    pub const SMALL: ChunkerConfig = ChunkerConfig {
        min_bytes: 2 * 1024,
        avg_bytes: 8 * 1024,
        max_bytes: 32 * 1024,
    };

    /// Checks the limits against FastCDC's bounds; sizes must be even (5.0).
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let (min, avg, max) = (
            self.min_bytes as usize,
            self.avg_bytes as usize,
            self.max_bytes as usize,
        );
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            || !(AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            || !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
        {
            return Err(format!("chunk sizes {min}/{avg}/{max} are outside FastCDC's bounds"));
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return Err(format!("chunk sizes {min}/{avg}/{max} must be even"));
        }
        if !(min < avg && avg < max) {
            return Err(format!("chunk sizes {min}/{avg}/{max} must satisfy min < avg < max"));
        }
        Ok(())
    }

    /// The block size read at a time: large enough for several maximal chunks.
    fn block_bytes(&self) -> usize {
        (self.max_bytes as usize * 4).max(16 * 1024 * 1024)
    }
}

/// One chunk inside a block: `offset` counts from the block's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte of the chunk within the block.
    pub offset: usize,
    /// Length of the chunk.
    pub len: usize,
}

impl Span {
    /// The chunk's bytes within `block`.
    pub fn bytes<'a>(&self, block: &'a [u8]) -> &'a [u8] {
        &block[self.offset..self.offset + self.len]
    }
}

/// Cuts `data` (a whole input held in memory) into chunks.
pub fn chunk_slice(data: &[u8], config: ChunkerConfig) -> Vec<Span> {
    debug_assert!(config.validate().is_ok());
    if data.is_empty() {
        return Vec::new();
    }
    FastCDC::new(
        data,
        config.min_bytes as usize,
        config.avg_bytes as usize,
        config.max_bytes as usize,
    )
    .map(|chunk| Span {
        offset: chunk.offset,
        len: chunk.length,
    })
    .collect()
}

/// What [`chunk_reader`] reads into first; it doubles up to a whole block.
const FIRST_BLOCK_BYTES: usize = 64 * 1024;

/// Why [`chunk_reader`] stopped early.
#[derive(Debug)]
pub enum ChunkReadError<E> {
    /// The reader failed.
    Read(std::io::Error),
    /// The block callback failed.
    Block(E),
}

/// Reads `reader` to its end and calls `on_block(block_offset, block, spans)`
/// for each block, where `spans` tile `block` exactly. Returns the number of
/// bytes read. Stops at the first error of the reader or of `on_block`.
pub fn chunk_reader<R: Read, E>(
    mut reader: R,
    config: ChunkerConfig,
    mut on_block: impl FnMut(u64, &[u8], &[Span]) -> Result<(), E>,
) -> Result<u64, ChunkReadError<E>> {
    debug_assert!(config.validate().is_ok());
    let capacity = config.block_bytes();
    // Grown as the input turns out long, so that a small blob (an image, a
    // short segment) does not cost a whole zeroed block.
    let mut buffer = Vec::new();
    let mut filled = 0_usize;
    let mut block_offset = 0_u64;
    let mut eof = false;
    // Bounded: every pass either consumes at least one chunk or ends at EOF.
    loop {
        while !eof && filled < capacity {
            if filled == buffer.len() {
                let grown = (buffer.len() * 2).clamp(FIRST_BLOCK_BYTES.min(capacity), capacity);
                buffer.resize(grown, 0);
            }
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => eof = true,
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ChunkReadError::Read(error)),
            }
        }
        if filled == 0 {
            return Ok(block_offset);
        }
        let mut spans = chunk_slice(&buffer[..filled], config);
        if !eof {
            // The last chunk may end only because the block ends: carry it over.
            let carried = spans.pop();
            debug_assert!(carried.is_some_and(|span| span.offset + span.len == filled));
        }
        let usable = spans.last().map_or(0, |span| span.offset + span.len);
        assert!(usable > 0 || eof, "a full block always holds a complete chunk");
        on_block(block_offset, &buffer[..usable], &spans).map_err(ChunkReadError::Block)?;
        buffer.copy_within(usable..filled, 0);
        filled -= usable;
        block_offset += usable as u64;
        if eof && filled == 0 {
            return Ok(block_offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut bytes = vec![0_u8; len];
        rng.fill_bytes(&mut bytes);
        bytes
    }

    fn streamed_spans(data: &[u8], config: ChunkerConfig) -> Vec<(u64, usize)> {
        let mut found = Vec::new();
        let total = chunk_reader::<_, ()>(data, config, |offset, block, spans| {
            let mut expected_offset = 0;
            for span in spans {
                assert_eq!(span.offset, expected_offset, "spans tile the block");
                expected_offset += span.len;
                found.push((offset + span.offset as u64, span.len));
            }
            assert_eq!(expected_offset, block.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(total, data.len() as u64);
        found
    }

    #[test]
    fn media_and_small_limits_are_valid() {
        ChunkerConfig::MEDIA.validate().unwrap();
        ChunkerConfig::SMALL.validate().unwrap();
        let odd = ChunkerConfig {
            min_bytes: 65,
            ..ChunkerConfig::SMALL
        };
        assert!(odd.validate().is_err());
    }

    #[test]
    fn streaming_cuts_equal_whole_input_cuts() {
        // Blocks are 16 MiB, so 40 MiB crosses two block boundaries.
        let data = random_bytes(40 * 1024 * 1024, 7);
        let config = ChunkerConfig::MEDIA;
        let whole: Vec<(u64, usize)> = chunk_slice(&data, config)
            .iter()
            .map(|span| (span.offset as u64, span.len))
            .collect();
        assert_eq!(streamed_spans(&data, config), whole);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_slice(&[], ChunkerConfig::SMALL).is_empty());
        assert!(streamed_spans(&[], ChunkerConfig::SMALL).is_empty());
    }

    proptest! {
        #[test]
        fn chunks_tile_the_input_within_limits(len in 0_usize..300_000, seed in any::<u64>()) {
            let data = random_bytes(len, seed);
            let config = ChunkerConfig::SMALL;
            let spans = chunk_slice(&data, config);
            let mut offset = 0;
            for (index, span) in spans.iter().enumerate() {
                prop_assert_eq!(span.offset, offset);
                prop_assert!(span.len <= config.max_bytes as usize);
                if index + 1 < spans.len() {
                    prop_assert!(span.len >= config.min_bytes as usize);
                }
                offset += span.len;
            }
            prop_assert_eq!(offset, data.len());
        }
    }
}
