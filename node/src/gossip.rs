//! Gossip among members, over the P2P swarm's gossipsub: small notices,
//! each signed by the member that sent it (others' are dropped).
//!
//! - `omega/jobs/1`: a job is waiting. Workers look at the queue at once
//!   instead of at their next poll.
//! - `omega/popular/1`: a file or an HLS rendition is popular (enough
//!   distinct viewers within a minute). The `[p2p] replicas` members that
//!   rendezvous hashing picks for it (never its holder) pull it ahead of
//!   demand, keep it in their store and provide it, so that the next
//!   viewers find several sources.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use omega_consensus::state_machine::read;
use omega_p2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::api::AppState;

/// Topic of job notices.
pub const JOBS_TOPIC: &str = "omega/jobs/1";
/// Topic of popularity notices.
pub const POPULAR_TOPIC: &str = "omega/popular/1";
/// Viewers are counted over windows of this length.
const WINDOW: Duration = Duration::from_secs(60);
/// Things tracked in a window; past this the window starts over.
const TRACKED_MAX: usize = 4096;
/// A thing is announced again at most this often.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(600);

/// Something clients ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Popular {
    /// An item's file, held by member `holder`.
    Blob {
        /// The blob.
        blob: [u8; 32],
        /// The member holding it.
        holder: u64,
    },
    /// An HLS rendition's segment set, made by member `holder`.
    Set {
        /// The item.
        item: u64,
        /// The rendition's name.
        rendition: String,
        /// The member holding the item's file.
        holder: u64,
    },
}

impl Popular {
    fn holder(&self) -> u64 {
        match self {
            Popular::Blob { holder, .. } | Popular::Set { holder, .. } => *holder,
        }
    }

    /// Bytes naming it, for rendezvous hashing.
    fn key(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// A gossip notice.
#[derive(Debug, Serialize, Deserialize)]
enum Notice {
    JobWaiting,
    Popular(Popular),
}

/// Distinct viewers per thing, per window.
#[derive(Debug)]
pub struct Popularity {
    popular_after: usize,
    replicas: usize,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    viewers: HashMap<Popular, HashSet<String>>,
    announced: HashMap<Popular, Instant>,
}

impl Popularity {
    /// Announces a thing once `popular_after` distinct viewers asked for
    /// it within a window, for `replicas` members to pull (0: never).
    pub fn new(popular_after: usize, replicas: usize) -> Popularity {
        Popularity {
            popular_after,
            replicas,
            window: Mutex::new(Window {
                started: Instant::now(),
                viewers: HashMap::new(),
                announced: HashMap::new(),
            }),
        }
    }

    /// Counts `viewer` asking for `thing`; announces it when it becomes
    /// popular.
    pub fn hit(&self, state: &AppState, thing: Popular, viewer: &str) {
        if self.replicas == 0 || self.popular_after == 0 || state.p2p.is_none() {
            return;
        }
        let announce = {
            let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if window.started.elapsed() >= WINDOW || window.viewers.len() >= TRACKED_MAX {
                window.started = Instant::now();
                window.viewers.clear();
            }
            window.announced.retain(|_, at| at.elapsed() < ANNOUNCE_EVERY);
            let viewers = window.viewers.entry(thing.clone()).or_default();
            if viewers.len() < self.popular_after {
                viewers.insert(viewer.to_owned());
            }
            let popular = viewers.len() >= self.popular_after;
            let fresh = !window.announced.contains_key(&thing) && window.announced.len() < TRACKED_MAX;
            if popular && fresh {
                window.announced.insert(thing.clone(), Instant::now());
            }
            popular && fresh
        };
        if announce {
            tracing::info!(?thing, "popular: asking replicas to pull it");
            metrics::counter!("omega_popular_announced_total").increment(1);
            on_popular(state, &thing);
            publish(state, POPULAR_TOPIC, &Notice::Popular(thing));
        }
    }
}

/// Wakes this node's worker and tells the other members that a job waits.
pub fn announce_job(state: &AppState) {
    state.job_wake.notify_one();
    publish(state, JOBS_TOPIC, &Notice::JobWaiting);
}

/// Publishes in the background; a node alone has no one to tell.
fn publish(state: &AppState, topic: &'static str, notice: &Notice) {
    let Some(node) = state.p2p.clone() else { return };
    let Ok(data) = postcard::to_allocvec(notice) else {
        return;
    };
    tokio::spawn(async move {
        if let Err(error) = node.p2p.publish(topic, data).await {
            tracing::debug!("gossip not sent: {error}");
        }
    });
}

/// The members rendezvous hashing picks to hold `thing` (its holder
/// excluded): the `replicas` highest scores of BLAKE3(thing ‖ peer id).
fn replicas_of(thing: &Popular, members: &[(u64, String)], replicas: usize) -> Vec<u64> {
    let key = thing.key();
    let mut scored: Vec<(blake3::Hash, u64)> = members
        .iter()
        .filter(|(id, _)| *id != thing.holder())
        .map(|(id, peer)| {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&key);
            hasher.update(peer.as_bytes());
            (hasher.finalize(), *id)
        })
        .collect();
    scored.sort_by(|a, b| b.0.as_bytes().cmp(a.0.as_bytes()));
    scored.into_iter().take(replicas).map(|(_, id)| id).collect()
}

/// Pulls `thing` when this node is one of its replicas.
fn on_popular(state: &AppState, thing: &Popular) {
    let Ok(peers) = read::peers(state.cluster.tables()) else {
        return;
    };
    let members: Vec<(u64, String)> = peers.into_iter().map(|(id, peer)| (id, peer.peer_id)).collect();
    if !replicas_of(thing, &members, state.popularity.replicas).contains(&state.cluster.id()) {
        return;
    }
    metrics::counter!("omega_replications_total").increment(1);
    match thing {
        Popular::Blob { blob, holder } => {
            crate::relay::cache_in_background(state, omega_storage::Hash32(*blob), *holder);
        }
        Popular::Set {
            item,
            rendition,
            holder,
        } => crate::relay::replicate_set_in_background(state, *item, rendition.clone(), *holder),
    }
}

/// Joins the topics and acts on members' notices; runs until the node
/// stops.
pub async fn run(state: AppState) {
    let Some(node) = state.p2p.clone() else { return };
    let mut received = node.p2p.gossip();
    for topic in [JOBS_TOPIC, POPULAR_TOPIC] {
        if let Err(error) = node.p2p.subscribe(topic).await {
            tracing::warn!(topic, "cannot join a gossip topic: {error}");
        }
    }
    loop {
        let message = match received.recv().await {
            Ok(message) => message,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(lost)) => {
                tracing::debug!(lost, "gossip fell behind");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        if !is_member(&node, &message.from) {
            metrics::counter!("omega_gossip_dropped_total").increment(1);
            continue;
        }
        let Ok(notice) = postcard::from_bytes::<Notice>(&message.data) else {
            metrics::counter!("omega_gossip_dropped_total").increment(1);
            continue;
        };
        metrics::counter!("omega_gossip_received_total", "topic" => message.topic).increment(1);
        match notice {
            Notice::JobWaiting => state.job_wake.notify_one(),
            Notice::Popular(thing) => on_popular(&state, &thing),
        }
    }
}

fn is_member(node: &crate::p2p::NodeP2p, peer: &PeerId) -> bool {
    node.members
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_stable_distinct_and_never_the_holder() {
        let members: Vec<(u64, String)> = (1..=5).map(|id| (id, format!("peer-{id}"))).collect();
        for item in 0..200 {
            let thing = Popular::Set {
                item,
                rendition: "720p".into(),
                holder: 1 + item % 5,
            };
            let chosen = replicas_of(&thing, &members, 2);
            assert_eq!(chosen.len(), 2);
            assert_ne!(chosen[0], chosen[1]);
            assert!(!chosen.contains(&thing.holder()));
            assert_eq!(chosen, replicas_of(&thing, &members, 2), "the same every time");
            // A third replica adds one and keeps the first two.
            assert_eq!(replicas_of(&thing, &members, 3)[..2], chosen[..]);
        }
        let alone = [(1, "peer-1".to_owned())];
        let thing = Popular::Blob {
            blob: [0; 32],
            holder: 1,
        };
        assert!(replicas_of(&thing, &alone, 2).is_empty());
    }

    #[test]
    fn notices_round_trip_and_garbage_is_refused() {
        let notice = Notice::Popular(Popular::Blob {
            blob: [7; 32],
            holder: 3,
        });
        let bytes = postcard::to_allocvec(&notice).unwrap();
        assert!(matches!(
            postcard::from_bytes::<Notice>(&bytes).unwrap(),
            Notice::Popular(Popular::Blob { holder: 3, .. })
        ));
        assert!(postcard::from_bytes::<Notice>(&[9, 9, 9]).is_err());
    }
}
