//! The report of `c10m-bench compare`: what was measured, on which machine, with which
//! settings, and how the dataplane compares with the kernel. Plain data and pure
//! functions (ratios, goals, the terminal table, Markdown) so they are tested without a
//! test bed.

use serde::{Deserialize, Serialize};

mod render;

pub(crate) use render::{group, markdown, table};

/// The servers compared.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Server {
    /// `c10m run` on AF_XDP at 198.18.0.10.
    Dataplane,
    /// `c10m kernel` (epoll, SO_REUSEPORT) at 198.18.0.2.
    Kernel,
    /// nginx at 198.18.0.2 (http only), where installed.
    Nginx,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Dataplane => "dataplane",
            Server::Kernel => "kernel",
            Server::Nginx => "nginx",
        }
    }
}

/// `c10m-bench rps --json`. Numbers are read as `f64` whatever their JSON type.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct RpsOut {
    #[serde(default)]
    pub(crate) target: String,
    #[serde(default)]
    pub(crate) proto: String,
    #[serde(default)]
    pub(crate) conns: f64,
    #[serde(default)]
    pub(crate) pipeline: f64,
    #[serde(default)]
    pub(crate) secs: f64,
    #[serde(default)]
    pub(crate) connected: f64,
    #[serde(default)]
    pub(crate) requests: f64,
    pub(crate) rps: f64,
    #[serde(default)]
    pub(crate) errors: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    #[serde(default)]
    pub(crate) p999_us: f64,
    #[serde(default)]
    pub(crate) max_us: f64,
    #[serde(default)]
    pub(crate) mean_us: f64,
}

/// `c10m-bench cps --json`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct CpsOut {
    #[serde(default)]
    pub(crate) target: String,
    #[serde(default)]
    pub(crate) proto: String,
    #[serde(default)]
    pub(crate) concurrency: f64,
    #[serde(default)]
    pub(crate) secs: f64,
    #[serde(default)]
    pub(crate) attempted: f64,
    #[serde(default)]
    pub(crate) completed: f64,
    #[serde(default)]
    pub(crate) failed: f64,
    pub(crate) cps: f64,
    #[serde(default)]
    pub(crate) p50_us: f64,
    #[serde(default)]
    pub(crate) p99_us: f64,
    #[serde(default)]
    pub(crate) p999_us: f64,
    #[serde(default)]
    pub(crate) max_us: f64,
}

/// The fields of `c10m-bench conns --json` the report keeps.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct ConnsOut {
    pub(crate) attempted: u64,
    pub(crate) established: u64,
    pub(crate) failed: u64,
    #[serde(default)]
    pub(crate) syn_retransmits: u64,
    #[serde(default)]
    pub(crate) cps_avg: f64,
    #[serde(default)]
    pub(crate) connect_secs: f64,
    #[serde(default)]
    pub(crate) requests: u64,
    #[serde(default)]
    pub(crate) requests_ok: u64,
    #[serde(default)]
    pub(crate) server_established: Option<u64>,
    #[serde(default)]
    pub(crate) server_bytes_per_conn: Option<u64>,
    #[serde(default)]
    pub(crate) secs: f64,
}

/// Connections held by one server: counts and memory per connection.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Held {
    pub(crate) server: Option<Server>,
    /// Connections the client was asked to open.
    pub(crate) requested: u64,
    /// Server processes (the kernel needs one per 19,000 descriptors).
    pub(crate) processes: u32,
    /// Connections the server held at the peak, by its own count (the dataplane's
    /// management socket; the kernel's `TCP: inuse` in the namespace, minus before).
    pub(crate) held: Option<u64>,
    /// The headline figure: the dataplane's own accounting of reserved bytes per slot;
    /// for the kernel, slab objects plus socket buffer pages plus the server processes'
    /// RSS growth, per held connection.
    pub(crate) bytes_per_conn: Option<f64>,
    /// Growth of the server processes' RSS, per held connection.
    pub(crate) rss_bytes_per_conn: Option<f64>,
    /// Kernel only: the slab part of `bytes_per_conn`.
    pub(crate) slab_bytes_per_conn: Option<f64>,
    /// Kernel only: the socket buffer part (`/proc/net/sockstat` mem pages).
    pub(crate) buffer_bytes_per_conn: Option<f64>,
    /// Kernel only: per slab cache, bytes per held connection.
    pub(crate) slab_caches: Vec<(String, f64)>,
    /// How the figures were measured.
    pub(crate) method: String,
    /// The client's own report.
    pub(crate) client: Option<ConnsOut>,
    /// A shortfall worth reading (some connections refused), the figures still stand.
    pub(crate) note: Option<String>,
    /// Why the scenario failed, if it did.
    pub(crate) error: Option<String>,
}

/// Requests per second at one concurrency.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Rps {
    pub(crate) server: Option<Server>,
    pub(crate) proto: String,
    pub(crate) conns: u64,
    pub(crate) pipeline: u64,
    pub(crate) out: Option<RpsOut>,
    pub(crate) error: Option<String>,
}

/// Connections per second.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Cps {
    pub(crate) server: Option<Server>,
    pub(crate) proto: String,
    pub(crate) concurrency: u64,
    pub(crate) out: Option<CpsOut>,
    pub(crate) error: Option<String>,
}

/// The machine the run was on.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Machine {
    pub(crate) cpu_model: String,
    pub(crate) cores: usize,
    pub(crate) ram_bytes: u64,
    pub(crate) kernel: String,
    pub(crate) hostname: String,
}

/// A sysctl the run set, with the value it found (restored at the end).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Sysctl {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) before: String,
    pub(crate) set: String,
}

/// A server as started: its address and the exact command.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct ServerRun {
    pub(crate) server: Option<Server>,
    pub(crate) address: String,
    pub(crate) command: String,
}

/// One goal of the issue and whether this run met it (`None`: not measured).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Goal {
    pub(crate) name: String,
    pub(crate) measured: String,
    pub(crate) met: Option<bool>,
}

/// Everything `compare` measured and how.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Report {
    pub(crate) tool: String,
    pub(crate) started_utc: String,
    pub(crate) secs: f64,
    pub(crate) interrupted: bool,
    pub(crate) machine: Machine,
    /// Every setting, in order: (name, value).
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) sysctls: Vec<Sysctl>,
    pub(crate) servers: Vec<ServerRun>,
    pub(crate) notes: Vec<String>,
    pub(crate) held: Vec<Held>,
    pub(crate) rps: Vec<Rps>,
    pub(crate) cps: Vec<Cps>,
    pub(crate) goals: Vec<Goal>,
    /// File names of the plots, relative to the report.
    pub(crate) plots: Vec<String>,
}

/// `a / b` when both are known and `b` is above zero.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// A cell of the side-by-side table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cell {
    Value(f64),
    Failed,
    Missing,
}

impl Cell {
    fn value(self) -> Option<f64> {
        match self {
            Cell::Value(v) => Some(v),
            _ => None,
        }
    }

    fn show(self, decimals: usize) -> String {
        match self {
            Cell::Value(v) => group(v, decimals),
            Cell::Failed => "failed".into(),
            Cell::Missing => "-".into(),
        }
    }
}

/// One row: a scenario, both servers, and the ratio dataplane / kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) dataplane: Cell,
    pub(crate) kernel: Cell,
    pub(crate) decimals: usize,
}

impl Row {
    pub(crate) fn ratio(&self) -> Option<f64> {
        ratio(self.dataplane.value(), self.kernel.value())
    }
}

fn cell<T>(found: Option<&T>, failed: impl Fn(&T) -> bool, v: impl Fn(&T) -> Option<f64>) -> Cell {
    match found {
        None => Cell::Missing,
        Some(t) if failed(t) => Cell::Failed,
        Some(t) => v(t).map_or(Cell::Missing, Cell::Value),
    }
}

fn find_held(r: &Report, s: Server, n: u64) -> Option<&Held> {
    r.held
        .iter()
        .find(|h| h.server == Some(s) && h.requested == n)
}

fn find_rps<'a>(r: &'a Report, s: Server, proto: &str, c: u64) -> Option<&'a Rps> {
    r.rps
        .iter()
        .find(|x| x.server == Some(s) && x.proto == proto && x.conns == c)
}

fn find_cps<'a>(r: &'a Report, s: Server, proto: &str, c: u64) -> Option<&'a Cps> {
    r.cps
        .iter()
        .find(|x| x.server == Some(s) && x.proto == proto && x.concurrency == c)
}

fn distinct<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The side-by-side rows, held connections first, then RPS and latency per
/// concurrency, then CPS.
pub(crate) fn rows(r: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut counts = distinct(r.held.iter().map(|h| h.requested));
    counts.sort_unstable();
    for n in counts {
        let (d, k) = (
            find_held(r, Server::Dataplane, n),
            find_held(r, Server::Kernel, n),
        );
        let failed = |h: &Held| h.error.is_some();
        let n_text = group(n as f64, 0);
        let mut row = |name: String, f: &dyn Fn(&Held) -> Option<f64>, decimals| {
            rows.push(Row {
                scenario: name,
                dataplane: cell(d, failed, f),
                kernel: cell(k, failed, f),
                decimals,
            });
        };
        row(
            format!("held {n_text}: connections held"),
            &|h| h.held.map(|v| v as f64),
            0,
        );
        row(
            format!("held {n_text}: bytes/conn"),
            &|h| h.bytes_per_conn,
            0,
        );
    }
    // The kernel baseline, then nginx where it ran (its rows say so).
    let mut baselines = vec![(Server::Kernel, "")];
    let nginx = r.rps.iter().any(|x| x.server == Some(Server::Nginx))
        || r.cps.iter().any(|x| x.server == Some(Server::Nginx));
    if nginx {
        baselines.push((Server::Nginx, " vs nginx"));
    }
    for (base, suffix) in baselines {
        let levels = distinct(r.rps.iter().map(|x| (x.proto.clone(), x.conns)));
        for (proto, c) in levels {
            let (d, k) = (
                find_rps(r, Server::Dataplane, &proto, c),
                find_rps(r, base, &proto, c),
            );
            if k.is_none() && base == Server::Nginx {
                continue;
            }
            let failed = |x: &Rps| x.out.is_none();
            let mut row = |name: &str, f: &dyn Fn(&RpsOut) -> f64, decimals| {
                let get = |x: &Rps| x.out.as_ref().map(f);
                rows.push(Row {
                    scenario: format!("{proto} c={c}: {name}{suffix}"),
                    dataplane: cell(d, failed, get),
                    kernel: cell(k, failed, get),
                    decimals,
                });
            };
            row("requests/s", &|o| o.rps, 0);
            row("p50 µs", &|o| o.p50_us, 1);
            row("p99 µs", &|o| o.p99_us, 1);
        }
        for (proto, c) in distinct(r.cps.iter().map(|x| (x.proto.clone(), x.concurrency))) {
            let (d, k) = (
                find_cps(r, Server::Dataplane, &proto, c),
                find_cps(r, base, &proto, c),
            );
            if k.is_none() && base == Server::Nginx {
                continue;
            }
            let failed = |x: &Cps| x.out.is_none();
            let mut row = |name: &str, f: &dyn Fn(&CpsOut) -> f64, decimals| {
                let get = |x: &Cps| x.out.as_ref().map(f);
                rows.push(Row {
                    scenario: format!("{proto} c={c}: {name}{suffix}"),
                    dataplane: cell(d, failed, get),
                    kernel: cell(k, failed, get),
                    decimals,
                });
            };
            row("connections/s", &|o| o.cps, 0);
            row("connect p99 µs", &|o| o.p99_us, 1);
        }
    }
    rows
}

fn times(x: f64) -> String {
    format!("{x:.2}×")
}

/// The goals, judged on this report's numbers.
pub(crate) fn goals(r: &Report) -> Vec<Goal> {
    let mut goals = Vec::new();

    // RPS and p99 at equal concurrency, every level measured on both.
    let pairs: Vec<(u64, &RpsOut, &RpsOut)> =
        distinct(r.rps.iter().map(|x| (x.proto.clone(), x.conns)))
            .into_iter()
            .filter_map(|(proto, c)| {
                let d = find_rps(r, Server::Dataplane, &proto, c)?.out.as_ref()?;
                let k = find_rps(r, Server::Kernel, &proto, c)?.out.as_ref()?;
                Some((c, d, k))
            })
            .collect();
    let (mut rps_text, mut rps_met) = (Vec::new(), None);
    let (mut lat_text, mut lat_met) = (Vec::new(), None);
    for &(c, d, k) in &pairs {
        let x = ratio(Some(d.rps), Some(k.rps)).unwrap_or(0.0);
        rps_text.push(format!("c={c}: {}", times(x)));
        rps_met = Some(rps_met.unwrap_or(true) && x >= 3.0);
        lat_text.push(format!(
            "c={c}: p99 {:.1} µs vs kernel p50 {:.1} µs",
            d.p99_us, k.p50_us
        ));
        lat_met = Some(lat_met.unwrap_or(true) && d.p99_us <= k.p50_us);
    }
    let or_none = |v: Vec<String>| {
        if v.is_empty() {
            "not measured".to_owned()
        } else {
            v.join("; ")
        }
    };
    goals.push(Goal {
        name: "RPS ≥ 3× the kernel at equal concurrency".into(),
        measured: or_none(rps_text),
        met: rps_met,
    });

    let (mut cps_text, mut cps_met) = (Vec::new(), None);
    for (proto, c) in distinct(r.cps.iter().map(|x| (x.proto.clone(), x.concurrency))) {
        let d = find_cps(r, Server::Dataplane, &proto, c).and_then(|x| x.out.as_ref());
        let k = find_cps(r, Server::Kernel, &proto, c).and_then(|x| x.out.as_ref());
        if let Some(x) = ratio(d.map(|o| o.cps), k.map(|o| o.cps)) {
            cps_text.push(format!("{proto} c={c}: {}", times(x)));
            cps_met = Some(cps_met.unwrap_or(true) && x >= 10.0);
        }
    }
    goals.push(Goal {
        name: "CPS ≥ 10× the kernel".into(),
        measured: or_none(cps_text),
        met: cps_met,
    });
    goals.push(Goal {
        name: "p99 latency ≤ the kernel's p50 at equal concurrency".into(),
        measured: or_none(lat_text),
        met: lat_met,
    });

    let biggest = r
        .held
        .iter()
        .filter(|h| h.server == Some(Server::Dataplane) && h.error.is_none())
        .filter_map(|h| Some((h.requested, h.bytes_per_conn?)))
        .max_by_key(|&(n, _)| n);
    goals.push(match biggest {
        Some((n, b)) => Goal {
            name: "≤ 1 KiB per held connection".into(),
            measured: format!("{} bytes at {} held", group(b, 0), group(n as f64, 0)),
            met: Some(b <= 1024.0),
        },
        None => Goal {
            name: "≤ 1 KiB per held connection".into(),
            measured: "not measured".into(),
            met: None,
        },
    });
    goals
}

#[cfg(test)]
#[path = "report/tests.rs"]
mod tests;
