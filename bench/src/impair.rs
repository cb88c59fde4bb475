//! `c10m-bench impair`: loss on the test bed. Attaches, changes, shows or removes the
//! impairment filter (`c10m_ebpf::Impairment`) on an interface of this network
//! namespace — on the bed, gen0 in c10m-gen, so frames toward the server are lost:
//!
//! ```sh
//! ip netns exec c10m-gen c10m-bench impair --iface gen0 --loss 1%   # drop 1%
//! ip netns exec c10m-gen c10m-bench impair --iface gen0             # rate and counters
//! ip netns exec c10m-gen c10m-bench impair --iface gen0 --off       # remove it
//! ```
//!
//! `scripts/testbed impair --loss 1%` / `--off` wraps it, and `scripts/testbed status`
//! shows it. The filter outlives this process; it sees kernel sockets' frames only
//! (AF_XDP transmissions bypass tc).

use anyhow::Context;
use c10m_ebpf::{ImpairStatus, Impairment, LossRate};
use serde::Serialize;

/// Arguments of `c10m-bench impair`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The interface whose outgoing IP frames are dropped (in this network namespace).
    #[arg(long, default_value = "gen0")]
    iface: String,
    /// Drop this percentage of them (e.g. 1% or 0.1%; 0% keeps the filter and its
    /// counters).
    #[arg(long, conflicts_with = "off")]
    loss: Option<LossRate>,
    /// Remove the filter.
    #[arg(long)]
    off: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Out<'a> {
    iface: &'a str,
    /// False when the interface has no filter (any more).
    on: bool,
    /// The loss rate, e.g. "1%".
    loss: Option<String>,
    loss_ppm: Option<u32>,
    /// IP frames the filter saw and dropped since it was attached (at `--off`: until then).
    seen: Option<u64>,
    dropped: Option<u64>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let iface = args.iface.as_str();
    let (on, status) = if args.off {
        (
            false,
            Impairment::off(iface).context("removing the impairment")?,
        )
    } else if let Some(loss) = args.loss {
        (
            true,
            Some(Impairment::set(iface, loss).context("setting the impairment")?),
        )
    } else {
        let status = Impairment::status(iface).context("reading the impairment")?;
        (status.is_some(), status)
    };
    let out = Out {
        iface,
        on,
        loss: status.map(|s| s.loss.to_string()),
        loss_ppm: status.map(|s| s.loss.ppm()),
        seen: status.map(|s| s.seen),
        dropped: status.map(|s| s.dropped),
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{}", line(iface, on, status));
    }
    Ok(())
}

/// One line for people: `gen0: loss 1% (dropped 12 of 1,200 IP frames)`.
fn line(iface: &str, on: bool, status: Option<ImpairStatus>) -> String {
    match (on, status) {
        (true, Some(s)) => format!(
            "{iface}: loss {} (dropped {} of {} IP frames)",
            s.loss, s.dropped, s.seen
        ),
        (false, Some(s)) => format!(
            "{iface}: impairment off (it had dropped {} of {} IP frames)",
            s.dropped, s.seen
        ),
        (_, None) => format!("{iface}: no impairment"),
    }
}
