//! Events the node pushes to clients over the events WebSocket: scan
//! progress, playback, cluster changes. A bounded broadcast: a client that
//! falls behind is told how many events it missed, and nothing blocks the
//! publisher.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::library::Phase;

/// Events held for slow receivers before they start missing some.
const BACKLOG: usize = 512;

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A library scan moved on.
    ScanProgress {
        /// The library.
        library: u64,
        /// What it is doing.
        phase: Phase,
        /// Units done in this phase.
        done: u64,
        /// Units in this phase.
        total: u64,
    },
    /// A library scan ended.
    ScanFinished {
        /// The library.
        library: u64,
        /// Items written.
        items: u64,
        /// Items removed.
        removed: u64,
        /// Entries skipped.
        skipped: u64,
        /// Library folders that could not be listed (the library is
        /// offline there; their items were kept).
        offline: u64,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// A user's playback position or played state changed.
    Playback {
        /// The user.
        user: u64,
        /// The item.
        item: u64,
        /// Resume position.
        position_ms: u64,
        /// Played to the end.
        played: bool,
    },
    /// A transcode job changed state.
    Job {
        /// The job.
        id: u64,
        /// The item.
        item: u64,
        /// `queued`, `leased`, `done` or `failed`.
        state: &'static str,
        /// The node holding or having finished it.
        node: Option<u64>,
    },
    /// The cluster's leader, term or members changed.
    Cluster {
        /// The leader, if one is known.
        leader: Option<u64>,
        /// The term.
        term: u64,
        /// Member node ids.
        members: Vec<u64>,
    },
}

impl Event {
    /// The library an event concerns, if any (for access checks).
    pub fn library(&self) -> Option<u64> {
        match self {
            Event::ScanProgress { library, .. } | Event::ScanFinished { library, .. } => Some(*library),
            Event::Playback { .. } | Event::Cluster { .. } | Event::Job { .. } => None,
        }
    }
}

/// The node's event bus.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Events {
        Events(broadcast::channel(BACKLOG).0)
    }
}

impl Events {
    /// Sends `event` to every subscriber (none is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.0.send(event);
    }

    /// A new receiver of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
