//! A three-member group in one process over the in-process network: joins,
//! forwarded writes, linearizable reads from followers, leader loss,
//! catch-up by snapshot, removal and replacement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omega_consensus::command::{Command, Response};
use omega_consensus::local_net::{LocalNet, LocalTransport};
use omega_consensus::model::{LibraryAccess, MemberNode, NodeId, Role};
use omega_consensus::state_machine::read;
use omega_consensus::{Cluster, Consistency, Timing};
use tempfile::TempDir;

type Member = Arc<Cluster<LocalTransport>>;

const TIMING: Timing = Timing {
    snapshot_every: 50,
    keep_behind_snapshot: 5,
    ..Timing::DEFAULT
};

fn member_node(id: NodeId) -> MemberNode {
    MemberNode {
        cluster_addr: format!("local:{id}"),
        http_addr: format!("local-http:{id}"),
        p2p_peer_id: None,
        cert_fingerprint: String::new(),
    }
}

async fn start(net: &LocalNet, id: NodeId, root: &Path) -> Member {
    // A restarted member may find its database still held by the tasks of
    // its previous incarnation winding down in this process: retry briefly.
    let started = Instant::now();
    let cluster = loop {
        match Cluster::start(id, &root.join(id.to_string()), net.transport(id), TIMING).await {
            Ok(cluster) => break Arc::new(cluster),
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("start {id}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("start {id}: {error}"),
        }
    };
    net.attach(&cluster);
    cluster
}

fn user(name: &str) -> Command {
    Command::CreateUser {
        name: name.into(),
        password_hash: "hash".into(),
        roles: BTreeSet::from([Role::Viewer]),
        library_access: LibraryAccess::All,
        now_ms: 0,
    }
}

/// Admits a node the way a join does: a join token's command gives the id.
async fn admit(net: &LocalNet, through: &Member, root: &Path, token: u8) -> Member {
    let response = through
        .write(Command::ConsumeJoinToken {
            token_id: [token; 16],
            expires_ms: u64::MAX,
            now_ms: 0,
        })
        .await
        .unwrap();
    let Response::NodeId(id) = response else {
        panic!("join refused: {response:?}")
    };
    let member = start(net, id, root).await;
    through.add_member(id, member_node(id)).await.unwrap();
    member
}

async fn wait_for_leader(members: &[&Member], not: Option<NodeId>, within: Duration) -> NodeId {
    let started = Instant::now();
    loop {
        for member in members {
            let status = member.status();
            if status.state == "leader" && Some(status.node_id) != not {
                return status.node_id;
            }
        }
        assert!(started.elapsed() < within, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_elect_replicate_and_recover() {
    let root = TempDir::new().unwrap();
    let net = LocalNet::new();
    let first = start(&net, 1, root.path()).await;
    first.initialize_single(member_node(1)).await.unwrap();
    wait_for_leader(&[&first], None, Duration::from_secs(5)).await;

    let second = admit(&net, &first, root.path(), 1).await;
    let third = admit(&net, &second, root.path(), 2).await;
    assert_ne!(second.id(), third.id());
    assert!(
        second.id() > 1 && third.id() > 1,
        "ids come from log indexes, never reused"
    );

    // A write through a follower is forwarded; a linearizable read on
    // another follower sees it.
    assert!(matches!(third.write(user("ada")).await.unwrap(), Response::Created(_)));
    second.read_barrier(Consistency::Linearizable).await.unwrap();
    assert!(read::user_by_name(second.tables(), "ADA").unwrap().is_some());
    // A used token admits no one else.
    let reused = first
        .write(Command::ConsumeJoinToken {
            token_id: [1; 16],
            expires_ms: u64::MAX,
            now_ms: 0,
        })
        .await
        .unwrap();
    assert!(matches!(reused, Response::Rejected(_)));

    // The leader dies: another is elected within 3 s and writes go on.
    let old_leader = wait_for_leader(&[&first, &second, &third], None, Duration::from_secs(5)).await;
    let (dead, alive): (Vec<Member>, Vec<Member>) = [first, second, third]
        .into_iter()
        .partition(|member| member.id() == old_leader);
    net.detach(old_leader);
    dead[0].shutdown().await.unwrap();
    // The process is gone: every handle to the dead member is dropped.
    drop(dead);
    let died = Instant::now();
    wait_for_leader(&[&alive[0], &alive[1]], Some(old_leader), Duration::from_secs(3)).await;
    eprintln!("new leader after {:?}", died.elapsed());
    // Write until the leader has purged the log the dead node would need.
    // (openraft purges when no replication holds the range: a stream to a
    // dead node releases it each time a send fails.)
    let mut written = 0;
    let started = Instant::now();
    while written < 120
        || alive
            .iter()
            .any(|member| member.status().purged_index.unwrap_or(0) < 40)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the leader never purged: {:?}",
            alive[0].status()
        );
        alive[written % 2].write(user(&format!("user{written}"))).await.unwrap();
        written += 1;
    }

    // The dead node restarts from its directory; its log is behind the
    // leader's snapshot, so it catches up by snapshot.
    let restarted = start(&net, old_leader, root.path()).await;
    restarted
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(alive[0].status().last_log_index, "catch up")
        .await
        .unwrap();
    assert!(restarted.status().snapshot_index.is_some(), "caught up by snapshot");
    restarted.read_barrier(Consistency::Linearizable).await.unwrap();
    assert_eq!(read::users(restarted.tables()).unwrap().len(), written + 1);

    // Remove a member and replace it with a new one.
    // Remove the leader itself: the others elect a new one and go on.
    let leader = wait_for_leader(&[&alive[0], &alive[1], &restarted], None, Duration::from_secs(5)).await;
    let leaving = leader;
    let everyone = [alive[0].clone(), alive[1].clone(), restarted.clone()];
    let stayer = everyone.iter().find(|member| member.id() != leaving).unwrap();
    stayer.remove_member(leaving).await.unwrap();
    let replacement = admit(&net, stayer, root.path(), 3).await;
    let status = stayer.status();
    let ids: BTreeSet<NodeId> = status.members.iter().map(|member| member.id).collect();
    assert!(!ids.contains(&leaving) && ids.contains(&replacement.id()), "{status:?}");
    replacement.write(user("grace")).await.unwrap();
    replacement.read_barrier(Consistency::Linearizable).await.unwrap();
    assert!(read::user_by_name(replacement.tables(), "grace").unwrap().is_some());
}

/// Four nodes join one node at the same moment: membership changes go one
/// at a time on the leader, learners catch up outside that turn, and every
/// join succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_joining_at_once_all_become_voters() {
    let root = TempDir::new().unwrap();
    let net = LocalNet::new();
    let first = start(&net, 1, root.path()).await;
    first.initialize_single(member_node(1)).await.unwrap();
    wait_for_leader(&[&first], None, Duration::from_secs(5)).await;
    // Some state for the learners to catch up on.
    for index in 0..200 {
        first.write(user(&format!("user{index}"))).await.unwrap();
    }
    let joins: Vec<_> = (1..=4_u8)
        .map(|token| {
            let (net, first, root) = (net.clone(), first.clone(), root.path().to_owned());
            tokio::spawn(async move { admit(&net, &first, &root, token).await })
        })
        .collect();
    let mut joined = Vec::new();
    for join in joins {
        joined.push(join.await.unwrap());
    }
    let status = first.status();
    let voters = status.members.iter().filter(|member| member.role == "voter").count();
    assert_eq!(voters, 5, "{status:?}");
    // Every member serves the state.
    for member in &joined {
        member.read_barrier(Consistency::Linearizable).await.unwrap();
        assert_eq!(read::users(member.tables()).unwrap().len(), 200);
    }
}
