//! Snapshot files: rows come back as written; a flipped byte, a truncation
//! or trailing garbage is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_consensus::raft_types::SnapshotMeta;
use omega_consensus::state_machine::snapshot_file::{SnapshotReader, SnapshotWriter};
use omega_consensus::state_machine::tables::Table;
use proptest::prelude::*;

/// A row by table tag.
type TaggedRow = (u8, Vec<u8>, Vec<u8>);

fn write(rows: &[TaggedRow]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.snap");
    let mut writer = SnapshotWriter::new(std::fs::File::create(&path).unwrap(), &SnapshotMeta::default()).unwrap();
    for (tag, key, value) in rows {
        writer.record(Table::from_tag(*tag).unwrap(), key, value).unwrap();
    }
    writer.finish().unwrap();
    std::fs::read(&path).unwrap()
}

fn read(bytes: &[u8]) -> std::io::Result<Vec<TaggedRow>> {
    let (mut reader, _) = SnapshotReader::open(bytes)?;
    let mut rows = Vec::new();
    while let Some((table, key, value)) = reader.next_record()? {
        rows.push((table.tag(), key, value));
    }
    Ok(rows)
}

proptest! {
    #[test]
    fn rows_round_trip_and_damage_is_refused(
        rows in prop::collection::vec((0_u8..14, prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..200)), 0..30),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = write(&rows);
        prop_assert_eq!(read(&bytes).unwrap(), rows);
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 0x40;
        prop_assert!(read(&flipped).is_err(), "flipped byte {} accepted", at);
        let cut_at = cut.index(bytes.len());
        prop_assert!(read(&bytes[..cut_at]).is_err(), "truncation at {} accepted", cut_at);
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(read(&longer).is_err());
    }
}
