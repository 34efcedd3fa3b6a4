//! A member whose addresses changed since they were recorded (a new DHCP
//! lease, a rescheduled pod, another `--listen`) records its new ones on
//! start, so that the other members reach it and proxy to it. Without this
//! the addresses recorded at its join stayed for ever.

use std::sync::Arc;
use std::time::Duration;

use omega_consensus::Cluster;
use omega_consensus::model::{MemberNode, NodeId};
use omega_consensus::quic::QuicTransport;

/// How often a member tries until its addresses are recorded.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How many tries before it gives up (and says so in the log).
const TRIES_MAX: u32 = 60;

/// Records `now` as node `id`'s addresses when the membership has others.
pub async fn keep_recorded(cluster: Arc<Cluster<QuicTransport>>, id: NodeId, now: MemberNode) {
    for _ in 0..TRIES_MAX {
        match cluster.known_member(id) {
            Some(recorded) if recorded.cluster_addr == now.cluster_addr && recorded.http_addr == now.http_addr => {
                return;
            }
            Some(recorded) => match cluster.update_member(id, now.clone()).await {
                Ok(()) => {
                    tracing::info!(
                        from = %recorded,
                        to = %now,
                        "this member's recorded addresses were updated"
                    );
                    return;
                }
                Err(error) => tracing::debug!(%error, "cannot record this member's addresses yet"),
            },
            // Not in the membership it knows (yet): nothing to correct.
            None => {}
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    tracing::warn!(addresses = %now, "this member's new addresses could not be recorded; other members may not reach it");
}
