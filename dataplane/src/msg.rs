//! The messages between the control thread and the workers, through each worker's
//! command and reply rings ([`crate::ring`]): what the control loop asks
//! ([`Command`]) and what a worker answers ([`Reply`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A command for a worker, through its command ring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    not(feature = "management"),
    expect(dead_code, reason = "only the control thread sends commands")
)]
pub(crate) enum Command {
    /// Stop accepting new connections; keep serving the others, or with `close_after`
    /// close them (FIN) that long after the drain and reset those still open a grace
    /// period later.
    Drain {
        /// When to close the connections, counted from the drain.
        close_after: Option<Duration>,
    },
    /// Accept new connections again (and forget a pending close).
    Undrain,
    /// Reply with up to `limit` connections (endpoints and states).
    Sample {
        /// Matches the reply to the request.
        id: u64,
        /// Most connections to list.
        limit: usize,
    },
    /// Send `MSG topic payload` to the push service's subscribers of `topic`.
    Publish {
        /// Matches the reply to the request.
        id: u64,
        /// The topic.
        topic: Arc<str>,
        /// The payload (one line).
        payload: Arc<[u8]>,
    },
}

/// One connection in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) state: &'static str,
}

/// A worker's answer, through its reply ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The answer to [`Command::Sample`].
    Sample {
        id: u64,
        worker: usize,
        conns: Vec<ConnInfo>,
    },
    /// The answer to [`Command::Publish`], sent when the worker's fan-out ended.
    Published {
        id: u64,
        worker: usize,
        fanout: Fanout,
    },
}

/// What a publish did (one worker's, or the sum over the workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fanout {
    /// Subscribers of the topic when the publish started.
    pub(crate) queued: u64,
    /// Subscribers whose transmit buffer took the message.
    pub(crate) delivered: u64,
    /// Subscribers reset because their output was full.
    pub(crate) dropped: u64,
}

impl std::ops::AddAssign for Fanout {
    fn add_assign(&mut self, o: Fanout) {
        self.queued += o.queued;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
    }
}
