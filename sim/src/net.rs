//! The simulated network between nodes, at the level of Raft's messages:
//! each request and each answer takes a delay drawn from the run's RNG
//! (so concurrent messages reorder), may be lost (the sender sees a
//! timeout), duplicated (delivered twice; the first answer is dropped), or
//! cut by a partition, on the way there or back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use omega_consensus::model::MemberNode;
use openraft::error::{NetworkError, ReplicationClosed, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{OptionalSend, RaftNetworkV2};

use crate::types::{Raft, RpcError, SimConfig, Snapshot, StreamingError, Vote};
use crate::world::Shared;

/// The network as one node sees it.
#[derive(Debug, Clone)]
pub struct Net {
    from: u64,
    shared: Arc<Shared>,
}

impl Net {
    /// Node `from`'s side of the network.
    pub fn new(from: u64, shared: Arc<Shared>) -> Net {
        Net { from, shared }
    }
}

/// A connection to one peer.
#[derive(Debug)]
pub struct Peer {
    from: u64,
    to: u64,
    shared: Arc<Shared>,
}

impl RaftNetworkFactory<SimConfig> for Net {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, _node: &MemberNode) -> Self::Network {
        Peer {
            from: self.from,
            to: target,
            shared: self.shared.clone(),
        }
    }
}

/// How one message fares.
struct Fate {
    there: Duration,
    back: Duration,
    lost: bool,
    duplicated: bool,
}

impl Peer {
    /// Delivers a request made by `send` (called again for a duplicate)
    /// and brings its answer back, or fails as the network would.
    async fn deliver<T, F, Fut>(&self, kind: &str, ttl: Duration, send: F) -> Result<T, RpcError>
    where
        F: Fn(Raft) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let fate = self.shared.fate();
        tokio::time::sleep(fate.there).await;
        let target = if self.shared.linked(self.from, self.to) && !fate.lost {
            self.shared.raft(self.to)
        } else {
            None
        };
        let Some(raft) = target else {
            self.shared
                .event(format_args!("{kind} {}->{} lost", self.from, self.to));
            // The sender learns nothing until its timeout.
            tokio::time::sleep(ttl.saturating_sub(fate.there)).await;
            return Err(RpcError::Unreachable(Unreachable::from_string(format!(
                "{kind} to node {} lost",
                self.to
            ))));
        };
        if fate.duplicated {
            let _first = send(raft.clone()).await;
        }
        let answer = send(raft).await;
        tokio::time::sleep(fate.back).await;
        match answer {
            Some(answer) if self.shared.linked(self.to, self.from) => {
                self.shared.event(format_args!("{kind} {}->{} ok", self.from, self.to));
                Ok(answer)
            }
            _ => {
                self.shared
                    .event(format_args!("{kind} {}->{} answer lost", self.from, self.to));
                Err(RpcError::Network(NetworkError::from_string(format!(
                    "the answer of node {} was lost",
                    self.to
                ))))
            }
        }
    }
}

impl Shared {
    fn fate(&self) -> Fate {
        let faults = self.faults();
        let mut rng = self.rng();
        use rand::Rng;
        // Whole milliseconds: the timer's resolution.
        let mut delay = || Duration::from_millis(rng.random_range(1..=(faults.delay_max_us / 1000).max(1)));
        let there = delay();
        let back = delay();
        Fate {
            there,
            back,
            lost: rng.random_bool(faults.loss),
            duplicated: rng.random_bool(faults.duplication),
        }
    }
}

impl RaftNetworkV2<SimConfig> for Peer {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<SimConfig>, RpcError> {
        self.deliver("append", option.hard_ttl(), |raft| {
            let rpc = rpc.clone();
            async move { raft.append_entries(rpc).await.ok() }
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SimConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimConfig>, RpcError> {
        self.deliver("vote", option.hard_ttl(), |raft| {
            let rpc = rpc.clone();
            async move { raft.vote(rpc).await.ok() }
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<SimConfig>, StreamingError> {
        let bytes = snapshot.snapshot.into_inner();
        let meta = snapshot.meta;
        let send = self.deliver("snapshot", option.hard_ttl(), |raft| {
            let (vote, meta, bytes) = (vote, meta.clone(), bytes.clone());
            async move {
                let snapshot = Snapshot {
                    meta,
                    snapshot: std::io::Cursor::new(bytes),
                };
                raft.install_full_snapshot(vote, snapshot).await.ok()
            }
        });
        // Biased: the same outcome every run.
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(|error| match error {
                RpcError::Unreachable(unreachable) => StreamingError::Unreachable(unreachable),
                other => StreamingError::Network(NetworkError::from_string(other.to_string())),
            }),
        }
    }
}
