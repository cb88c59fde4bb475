//! The rps and cps runs: the generators' JSON, the records the report keeps, and what
//! the two share — one path from a generator's figures to the report's rows.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::*;

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
    /// Percent of the measured window in which the generator's loop found nothing to
    /// do (absent from older generators).
    #[serde(default)]
    pub(crate) idle_pct: Option<f64>,
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
    /// Percent of the measured window in which the generator's loop found nothing to
    /// do (absent from older generators).
    #[serde(default)]
    pub(crate) idle_pct: Option<f64>,
}

/// A figure of a generator's output, for a row of the side-by-side table.
pub(crate) type Figure<O> = (&'static str, fn(&O) -> f64);

/// The JSON of a load generator (`c10m-bench rps --json`, `cps --json`): what the
/// rps and cps runs are measured, paired and shown by.
pub(crate) trait Output: DeserializeOwned {
    /// The generator's subcommand, which names the scenario: `rps`, `cps`.
    const NAME: &'static str;
    /// What the rate counts: `requests`, `connections`.
    const UNIT: &'static str;
    /// Per second.
    fn rate(&self) -> f64;
    fn idle_pct(&self) -> Option<f64>;
    /// The latency rows of the side-by-side table, µs.
    fn latencies() -> Vec<Figure<Self>>;
    /// `300,000 requests/s, p50 20.0 µs, p99 40.0 µs`, for the progress lines.
    fn summary(&self) -> String;
}

impl Output for RpsOut {
    const NAME: &'static str = "rps";
    const UNIT: &'static str = "requests";
    fn rate(&self) -> f64 {
        self.rps
    }
    fn idle_pct(&self) -> Option<f64> {
        self.idle_pct
    }
    fn latencies() -> Vec<Figure<Self>> {
        vec![("p50 µs", |o| o.p50_us), ("p99 µs", |o| o.p99_us)]
    }
    fn summary(&self) -> String {
        format!(
            "{} requests/s, p50 {:.1} µs, p99 {:.1} µs",
            group(self.rps, 0),
            self.p50_us,
            self.p99_us
        )
    }
}

impl Output for CpsOut {
    const NAME: &'static str = "cps";
    const UNIT: &'static str = "connections";
    fn rate(&self) -> f64 {
        self.cps
    }
    fn idle_pct(&self) -> Option<f64> {
        self.idle_pct
    }
    fn latencies() -> Vec<Figure<Self>> {
        vec![("connect p99 µs", |o| o.p99_us)]
    }
    fn summary(&self) -> String {
        format!(
            "{} connections/s, p99 {:.1} µs",
            group(self.cps, 0),
            self.p99_us
        )
    }
}

/// How one rps or cps run went: the generator's figures or why it failed, and the CPU
/// use over its measured window. Flattened into [`Rps`] and [`Cps`], so its fields are
/// theirs in the JSON.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Measured<O> {
    pub(crate) out: Option<O>,
    pub(crate) error: Option<String>,
    /// CPU use over the measured window.
    #[serde(default)]
    pub(crate) cpu: Option<Cpu>,
    /// The rate per busy second of the server core: rate / server core busy fraction.
    #[serde(default)]
    pub(crate) per_core_second: Option<f64>,
    /// The rate per second of the server's own work (estimate, see
    /// [`Cpu::server_work`]).
    #[serde(default)]
    pub(crate) per_server_work_second: Option<f64>,
}

impl<O: Output> Measured<O> {
    pub(crate) fn failed(why: &str) -> Self {
        Measured {
            out: None,
            error: Some(why.into()),
            cpu: None,
            per_core_second: None,
            per_server_work_second: None,
        }
    }

    pub(crate) fn rate(&self) -> Option<f64> {
        self.out.as_ref().map(O::rate)
    }
}

/// Requests per second at one concurrency.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Rps {
    pub(crate) server: Option<Server>,
    pub(crate) proto: String,
    pub(crate) conns: u64,
    pub(crate) pipeline: u64,
    #[serde(flatten)]
    pub(crate) measured: Measured<RpsOut>,
}

/// Connections per second.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Cps {
    pub(crate) server: Option<Server>,
    pub(crate) proto: String,
    pub(crate) concurrency: u64,
    #[serde(flatten)]
    pub(crate) measured: Measured<CpsOut>,
}

/// An rps or a cps record, as the table, the goals and the CPU notes read it.
pub(crate) trait Load {
    type Out: Output;
    fn server(&self) -> Option<Server>;
    fn proto(&self) -> &str;
    /// Connections (rps) or attempts in flight (cps): the level runs are paired at.
    fn level(&self) -> u64;
    fn measured(&self) -> &Measured<Self::Out>;
}

impl Load for Rps {
    type Out = RpsOut;
    fn server(&self) -> Option<Server> {
        self.server
    }
    fn proto(&self) -> &str {
        &self.proto
    }
    fn level(&self) -> u64 {
        self.conns
    }
    fn measured(&self) -> &Measured<RpsOut> {
        &self.measured
    }
}

impl Load for Cps {
    type Out = CpsOut;
    fn server(&self) -> Option<Server> {
        self.server
    }
    fn proto(&self) -> &str {
        &self.proto
    }
    fn level(&self) -> u64 {
        self.concurrency
    }
    fn measured(&self) -> &Measured<CpsOut> {
        &self.measured
    }
}

/// The run of `s` at `proto` and `level`.
pub(super) fn find<'a, L: Load>(xs: &'a [L], s: Server, proto: &str, level: u64) -> Option<&'a L> {
    xs.iter()
        .find(|x| x.server() == Some(s) && x.proto() == proto && x.level() == level)
}

/// The (proto, level) pairs run, in the order first run.
pub(super) fn levels<L: Load>(xs: &[L]) -> Vec<(String, u64)> {
    distinct(xs.iter().map(|x| (x.proto().to_owned(), x.level())))
}

/// The side-by-side rows of `xs` at every level: the dataplane against `base` (and the
/// reflector, when `base` is the kernel), the scenario names ending in `suffix`. Levels `base` did not run at are left out for
/// nginx.
pub(super) fn load_rows<L: Load>(rows: &mut Vec<Row>, xs: &[L], base: Server, suffix: &str) {
    let (unit, sub) = (L::Out::UNIT, L::Out::NAME);
    for (proto, c) in levels(xs) {
        let (d, k) = (
            find(xs, Server::Dataplane, &proto, c),
            find(xs, base, &proto, c),
        );
        if k.is_none() && base == Server::Nginx {
            continue;
        }
        // The ceiling beside the kernel baseline's rows (not repeated beside nginx's).
        let r = find(xs, Server::Reflector, &proto, c).filter(|_| base == Server::Kernel);
        let failed = |x: &L| x.measured().out.is_none();
        let mut row =
            |name: &str, f: &dyn Fn(&Measured<L::Out>) -> Option<f64>, decimals, relative| {
                let f = |x: &L| f(x.measured());
                rows.push(Row {
                    scenario: format!("{proto} c={c}: {name}{suffix}"),
                    dataplane: cell(d, failed, f),
                    kernel: cell(k, failed, f),
                    reflector: cell(r, failed, f),
                    decimals,
                    relative,
                });
            };
        row(&format!("{unit}/s"), &|m| m.rate(), 0, true);
        for (latency, v) in L::Out::latencies() {
            row(latency, &|m| m.out.as_ref().map(v), 1, true);
        }
        row(
            &format!("{unit} per server-core second"),
            &|m| m.per_core_second,
            0,
            true,
        );
        row(
            &format!("{unit} per server-work second (est.)"),
            &|m| m.per_server_work_second,
            0,
            true,
        );
        row(
            &format!("server core busy % ({sub})"),
            &|m| server_busy(m.cpu.as_ref()),
            1,
            false,
        );
        row(
            &format!("generator core busy % ({sub})"),
            &|m| gen_busy(m.cpu.as_ref()),
            1,
            false,
        );
    }
}

/// The runs of `xs` with their CPU figures: `rps http c=100`, `cps http c=100`.
pub(super) fn cpu_runs_of<L: Load>(xs: &[L]) -> impl Iterator<Item = CpuRun<'_>> {
    xs.iter().map(|x| {
        let m = x.measured();
        CpuRun {
            server: x.server(),
            run: format!("{} {} c={}", L::Out::NAME, x.proto(), x.level()),
            rate: m.rate(),
            cpu: m.cpu.as_ref(),
            per_core_second: m.per_core_second,
            per_server_work_second: m.per_server_work_second,
        }
    })
}
