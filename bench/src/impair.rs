//! `c10m-bench impair`: loss on the test bed. Attaches, changes, shows or removes the
//! impairment filters (`c10m_ebpf::Impairment`) on an interface of this network
//! namespace — on the bed, gen0 in c10m-gen, whose egress carries the frames toward the
//! server and whose ingress the frames toward the client:
//!
//! ```sh
//! ip netns exec c10m-gen c10m-bench impair --iface gen0 --loss 1%                  # toward the server
//! ip netns exec c10m-gen c10m-bench impair --iface gen0 --loss 1% --toward client  # the server's frames
//! ip netns exec c10m-gen c10m-bench impair --iface gen0             # rates and counters, both ways
//! ip netns exec c10m-gen c10m-bench impair --iface gen0 --off       # remove both
//! ```
//!
//! `scripts/testbed impair --loss 1% [--toward …]` / `--off` wraps it, and
//! `scripts/testbed status` shows it. The filters outlive this process; they see kernel
//! sockets' frames only (AF_XDP transmissions bypass tc egress, and an XDP program on
//! the interface sees received frames before tc ingress).

use anyhow::Context;
use c10m_ebpf::{Hook, ImpairStatus, Impairment, LossRate};
use serde::Serialize;

/// Which way frames are lost on the bed, seen from gen0, the generator's end.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Toward {
    /// The frames gen0 sends (gen0's egress).
    Server,
    /// The frames gen0 receives (gen0's ingress): what the server sends.
    Client,
    /// Both ways, each at the rate given.
    Both,
}

impl Toward {
    /// The hooks of gen0 this impairs.
    pub(crate) fn hooks(self) -> &'static [Hook] {
        match self {
            Toward::Server => &[Hook::Egress],
            Toward::Client => &[Hook::Ingress],
            Toward::Both => &Hook::BOTH,
        }
    }

    /// How a hook of the generator's interface reads on the bed.
    pub(crate) fn of(hook: Hook) -> Toward {
        match hook {
            Hook::Egress => Toward::Server,
            Hook::Ingress => Toward::Client,
        }
    }

    /// How a loss this way reads: `toward the server`, `toward the client`, `both ways`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Toward::Server => "toward the server",
            Toward::Client => "toward the client",
            Toward::Both => "both ways",
        }
    }

    /// `server`, `client` or `both`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Toward::Server => "server",
            Toward::Client => "client",
            Toward::Both => "both",
        }
    }
}

/// Arguments of `c10m-bench impair`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The generator's interface (in this network namespace): its outgoing frames go
    /// toward the server, its incoming ones toward the client.
    #[arg(long, default_value = "gen0")]
    iface: String,
    /// Drop this percentage of the frames (e.g. 1% or 0.1%; 0% keeps the filter and
    /// its counters).
    #[arg(long, conflicts_with = "off")]
    loss: Option<LossRate>,
    /// Which way: with --loss, `server` unless given; to show or --off, both unless given.
    #[arg(long, value_enum)]
    toward: Option<Toward>,
    /// Remove the filter(s).
    #[arg(long)]
    off: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// One direction in what `--json` prints.
#[derive(Serialize)]
struct Way {
    toward: Toward,
    /// False when the interface has no filter (any more) this way.
    on: bool,
    /// The loss rate, e.g. "1%".
    loss: Option<String>,
    loss_ppm: Option<u32>,
    /// IP frames the filter saw and dropped since it was attached (at `--off`: until then).
    seen: Option<u64>,
    dropped: Option<u64>,
}

impl Way {
    fn new(toward: Toward, on: bool, status: Option<ImpairStatus>) -> Way {
        Way {
            toward,
            on,
            loss: status.map(|s| s.loss.to_string()),
            loss_ppm: status.map(|s| s.loss.ppm()),
            seen: status.map(|s| s.seen),
            dropped: status.map(|s| s.dropped),
        }
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Out<'a> {
    iface: &'a str,
    /// One entry per direction asked about (both to show or remove, unless `--toward`).
    ways: Vec<Way>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let iface = args.iface.as_str();
    let default = if args.loss.is_some() {
        Toward::Server
    } else {
        Toward::Both
    };
    let mut ways = Vec::new();
    for &hook in args.toward.unwrap_or(default).hooks() {
        let (on, status) = if args.off {
            (
                false,
                Impairment::off(iface, hook).context("removing the impairment")?,
            )
        } else if let Some(loss) = args.loss {
            (
                true,
                Some(Impairment::set(iface, hook, loss).context("setting the impairment")?),
            )
        } else {
            let status = Impairment::status(iface, hook).context("reading the impairment")?;
            (status.is_some(), status)
        };
        ways.push(Way::new(Toward::of(hook), on, status));
    }
    if args.json {
        println!("{}", serde_json::to_string(&Out { iface, ways })?);
    } else {
        let parts: Vec<String> = ways.iter().map(part).collect();
        println!("{iface}: {}", parts.join("; "));
    }
    Ok(())
}

/// One direction for people: `loss 1% toward the server (dropped 12 of 1,200 IP frames)`.
fn part(way: &Way) -> String {
    let toward = way.toward.name();
    match (way.on, way.dropped, way.seen) {
        (true, Some(dropped), Some(seen)) => format!(
            "loss {} toward the {toward} (dropped {dropped} of {seen} IP frames)",
            way.loss.as_deref().unwrap_or("?")
        ),
        (false, Some(dropped), Some(seen)) => format!(
            "impairment toward the {toward} off (it had dropped {dropped} of {seen} IP frames)"
        ),
        _ => format!("no impairment toward the {toward}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_direction_reads_as_its_side_of_the_bed() {
        let s = ImpairStatus {
            loss: "1%".parse().unwrap(),
            seen: 1200,
            dropped: 12,
        };
        assert_eq!(
            part(&Way::new(Toward::Server, true, Some(s))),
            "loss 1% toward the server (dropped 12 of 1200 IP frames)"
        );
        assert_eq!(
            part(&Way::new(Toward::Client, false, Some(s))),
            "impairment toward the client off (it had dropped 12 of 1200 IP frames)"
        );
        assert_eq!(
            part(&Way::new(Toward::Client, false, None)),
            "no impairment toward the client"
        );
        assert_eq!(Toward::Both.hooks(), &[Hook::Egress, Hook::Ingress]);
        assert_eq!(Toward::of(Hook::Ingress), Toward::Client);
    }
}
