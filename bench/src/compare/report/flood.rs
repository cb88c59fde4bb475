//! The flood scenario's records: the generator's JSON, what was measured on each server
//! around it, and its rows of the side-by-side table.

use serde::{Deserialize, Serialize};

use super::*;

/// Replies the flood generator took for its spoofed sources.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RepliesOut {
    pub(crate) syn_ack: u64,
    pub(crate) rst: u64,
    #[serde(default)]
    pub(crate) other: u64,
}

/// `c10m-bench flood --json`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct FloodOut {
    #[serde(default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) target: String,
    pub(crate) secs: f64,
    pub(crate) sent: u64,
    pub(crate) rate_achieved: f64,
    #[serde(default)]
    pub(crate) tx_errors: u64,
    #[serde(default)]
    pub(crate) tx_dropped: u64,
    pub(crate) replies: RepliesOut,
}

/// New connections opened one after another by a kernel client, by outcome.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Attempts {
    pub(crate) attempted: u64,
    pub(crate) ok: u64,
    pub(crate) refused: u64,
    pub(crate) timed_out: u64,
    pub(crate) other: u64,
    /// The slowest attempt, milliseconds.
    pub(crate) slowest_ms: u64,
}

impl Attempts {
    /// Percent that succeeded (`None` when none was attempted).
    pub(crate) fn ok_pct(&self) -> Option<f64> {
        (self.attempted > 0).then(|| 100.0 * self.ok as f64 / self.attempted as f64)
    }
}

/// One server through a SYN flood.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Flood {
    pub(crate) server: Option<Server>,
    /// The flood generator's report.
    pub(crate) generator: Option<FloodOut>,
    /// The decoy flood's report (same generator and rate, to an address nobody has):
    /// the load on the client core while the "before" round trips were measured.
    pub(crate) decoy: Option<FloodOut>,
    /// New connections under the decoy flood, beside the "before" round trips.
    #[serde(default)]
    pub(crate) before: Attempts,
    /// New connections during the flood.
    pub(crate) during: Attempts,
    /// New connections from 1 s after the flood.
    pub(crate) after: Attempts,
    /// Round trips per second of one established echo connection.
    pub(crate) rtt_before: Option<f64>,
    pub(crate) rtt_during: Option<f64>,
    pub(crate) rtt_after: Option<f64>,
    /// The server process's RSS, bytes.
    pub(crate) rss_before: Option<u64>,
    pub(crate) rss_after: Option<u64>,
    /// RSTs the server sent from before the decoy to after the flood (dataplane:
    /// `resets_sent`; kernel: `TcpOutRsts` of c10m-dut).
    pub(crate) resets_sent: Option<u64>,
    /// SYN cookies the server sent over the same time, where it counts them.
    pub(crate) cookies_sent: Option<u64>,
    /// Why the scenario failed, if it did.
    pub(crate) error: Option<String>,
}

impl Flood {
    /// The during-flood round-trip rate as a percentage of the before one.
    pub(crate) fn rtt_kept_pct(&self) -> Option<f64> {
        ratio(self.rtt_during, self.rtt_before).map(|r| 100.0 * r)
    }

    /// RSS growth over the flood, percent.
    pub(crate) fn rss_growth_pct(&self) -> Option<f64> {
        let (a, b) = (self.rss_before? as f64, self.rss_after? as f64);
        (a > 0.0).then(|| 100.0 * (b / a - 1.0))
    }
}

/// The flood rows: dataplane and kernel side by side (no ratios: each row reads on its
/// own, most are percentages or counts that should be 0).
pub(crate) fn flood_rows(rows: &mut Vec<Row>, floods: &[Flood]) {
    if floods.is_empty() {
        return;
    }
    let find = |s: Server| floods.iter().find(|f| f.server == Some(s));
    let (d, k) = (find(Server::Dataplane), find(Server::Kernel));
    let failed = |f: &Flood| f.error.is_some();
    let mut row = |name: &str, v: &dyn Fn(&Flood) -> Option<f64>, decimals| {
        rows.push(Row {
            scenario: format!("flood: {name}"),
            dataplane: cell(d, failed, v),
            kernel: cell(k, failed, v),
            reflector: Cell::Missing,
            decimals,
            relative: false,
        });
    };
    row(
        "SYNs/s sent",
        &|f| f.generator.as_ref().map(|g| g.rate_achieved),
        0,
    );
    row("new connections ok, %", &|f| f.during.ok_pct(), 1);
    row(
        "new connections attempted",
        &|f| Some(f.during.attempted as f64),
        0,
    );
    row(
        "the same under the baseline load (3 s), attempted",
        &|f| Some(f.before.attempted as f64),
        0,
    );
    row("echo round trips/s before", &|f| f.rtt_before, 0);
    row("echo round trips/s during", &|f| f.rtt_during, 0);
    row("echo round trips/s after", &|f| f.rtt_after, 0);
    row("echo round trips kept, %", &Flood::rtt_kept_pct, 1);
    row("server RSS growth, %", &Flood::rss_growth_pct, 2);
    row(
        "RSTs to spoofed sources",
        &|f| f.generator.as_ref().map(|g| g.replies.rst as f64),
        0,
    );
    row(
        "SYN-ACKs to spoofed sources",
        &|f| f.generator.as_ref().map(|g| g.replies.syn_ack as f64),
        0,
    );
    row("server RSTs sent", &|f| f.resets_sent.map(|v| v as f64), 0);
    row("SYN cookies sent", &|f| f.cookies_sent.map(|v| v as f64), 0);
    row("new connections 1 s after, ok %", &|f| f.after.ok_pct(), 1);
}
