//! openraft's own storage test suite, run against the RocksDB log store and
//! state machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_consensus::raft_types::{StorageError, TypeConfig};
use omega_consensus::{Db, LogStore, StateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().unwrap();
        let db = Db::open(&dir.path().join("raft")).unwrap();
        let log = LogStore::new(db.clone()).unwrap();
        let machine = StateMachine::open(db, &dir.path().join("snapshots")).unwrap();
        Ok((dir, log, machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(RocksBuilder).await.unwrap();
}
