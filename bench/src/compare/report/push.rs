//! The `push` scenario's record: live subscribers on each server's push service
//! (`c10m-bench conns --proto push`), their heartbeats and one publish fanned out, with
//! the server's connections and memory sampled over the run.

use serde::{Deserialize, Serialize};

use super::{Cell, ConnsOut, Row, Server, cell};
use crate::measure::Summary;

/// The fields of `c10m-bench conns --proto push --json` the report keeps.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub(crate) struct PushOut {
    /// What every `conns` run reports.
    #[serde(flatten)]
    pub(crate) conns: ConnsOut,
    pub(crate) subscribed: u64,
    pub(crate) heartbeats_sent: u64,
    pub(crate) heartbeats_ok: u64,
    pub(crate) heartbeats_resent: u64,
    pub(crate) heartbeat_rtt: Summary,
    pub(crate) heartbeat_rtt_samples: u64,
    pub(crate) bad_replies: u64,
    pub(crate) published_to: u64,
    pub(crate) delivered: u64,
    pub(crate) duplicates: u64,
    pub(crate) missed: u64,
    pub(crate) delivery_secs: f64,
    /// Deliveries in each 100 ms since the publish.
    pub(crate) deliveries_per_100ms: Vec<u64>,
    pub(crate) server_publish_queued: Option<u64>,
    pub(crate) server_publish_delivered: Option<u64>,
    pub(crate) server_publish_dropped: Option<u64>,
    pub(crate) server_rx_dropped: Option<u64>,
    pub(crate) server_rx_fill_ring_empty: Option<u64>,
    pub(crate) client_bytes_per_conn: u64,
}

impl PushOut {
    /// Heartbeats answered, percent of those sent.
    pub(crate) fn answered_pct(&self) -> Option<f64> {
        (self.heartbeats_sent > 0)
            .then(|| 100.0 * self.heartbeats_ok as f64 / self.heartbeats_sent as f64)
    }
}

/// The server's side, sampled about once a second while the client ran.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct PushSample {
    /// Seconds since the client started.
    pub(crate) secs: f64,
    /// Connections the server held (the dataplane's count; the kernel's TCP inuse growth).
    pub(crate) conns: u64,
    /// Memory per held connection then, as [`Push::bytes_per_conn`] (`None` below 1,000
    /// connections, where fixed costs dominate).
    pub(crate) bytes_per_conn: Option<f64>,
}

/// The push scenario against one server.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Push {
    pub(crate) server: Option<Server>,
    /// Subscribers the client was asked to open.
    pub(crate) requested: u64,
    /// Server processes (the kernel's: one per 18,000 subscribers).
    pub(crate) processes: u32,
    /// Connections the server held at the peak, by its own count.
    pub(crate) held: Option<u64>,
    /// Memory per connection at the peak: the dataplane's reserved bytes per slot (its
    /// accounting); the kernel's slab + socket buffers + its processes' RSS growth.
    pub(crate) bytes_per_conn: Option<f64>,
    /// Growth of the server processes' RSS to the peak, per held connection.
    pub(crate) rss_bytes_per_conn: Option<f64>,
    pub(crate) method: String,
    pub(crate) client: Option<PushOut>,
    pub(crate) samples: Vec<PushSample>,
    /// Where a server held fewer than asked, and why.
    pub(crate) stopped: Option<String>,
    pub(crate) error: Option<String>,
}

/// The push rows of the side-by-side table.
pub(crate) fn push_rows(rows: &mut Vec<Row>, runs: &[Push]) {
    if runs.is_empty() {
        return;
    }
    let find = |s: Server| runs.iter().find(|p| p.server == Some(s));
    let (d, k) = (find(Server::Dataplane), find(Server::Kernel));
    let failed = |p: &Push| p.error.is_some() && p.client.is_none();
    let mut row = |name: &str, v: &dyn Fn(&Push) -> Option<f64>, decimals, relative| {
        rows.push(Row {
            scenario: format!("push: {name}"),
            dataplane: cell(d, failed, v),
            kernel: cell(k, failed, v),
            reflector: Cell::Missing,
            decimals,
            relative,
        });
    };
    let out = |p: &Push| p.client.clone();
    row("subscribers asked", &|p| Some(p.requested as f64), 0, false);
    row(
        "server processes",
        &|p| Some(f64::from(p.processes)),
        0,
        false,
    );
    row("connections held", &|p| p.held.map(|v| v as f64), 0, true);
    row("subscribed", &|p| Some(out(p)?.subscribed as f64), 0, true);
    row("bytes/conn", &|p| p.bytes_per_conn, 0, true);
    row(
        "heartbeats sent",
        &|p| Some(out(p)?.heartbeats_sent as f64),
        0,
        true,
    );
    row(
        "heartbeats answered, %",
        &|p| out(p)?.answered_pct(),
        3,
        false,
    );
    for (name, f) in [
        (
            "heartbeat RTT p50, µs",
            (|r: &Summary| r.p50_us) as fn(&Summary) -> u64,
        ),
        ("heartbeat RTT p99, µs", |r| r.p99_us),
        ("heartbeat RTT p99.9, µs", |r| r.p999_us),
    ] {
        row(name, &|p| Some(f(&out(p)?.heartbeat_rtt) as f64), 0, true);
    }
    row(
        "published to",
        &|p| Some(out(p)?.published_to as f64),
        0,
        true,
    );
    row(
        "delivered (once each)",
        &|p| Some(out(p)?.delivered as f64),
        0,
        true,
    );
    row("duplicates", &|p| Some(out(p)?.duplicates as f64), 0, false);
    row("missed", &|p| Some(out(p)?.missed as f64), 0, false);
    row(
        "publish → last MSG, s",
        &|p| Some(out(p)?.delivery_secs),
        2,
        true,
    );
    row(
        "server rx dropped (AF_XDP)",
        &|p| out(p)?.server_rx_dropped.map(|v| v as f64),
        0,
        false,
    );
}
