//! The report of `c10m-bench compare`: what was measured, on which machine, with which
//! settings, and how the dataplane compares with the kernel. Plain data and pure
//! functions (ratios, goals, the terminal table, Markdown) so they are tested without a
//! test bed.

use serde::{Deserialize, Serialize};

pub(crate) mod flood;
mod load;
pub(crate) mod push;
mod render;

pub(crate) use flood::{Attempts, Flood, FloodOut};
pub(crate) use load::{Cps, CpsOut, Load, Measured, Output, Rps, RpsOut};
pub(crate) use push::{Push, PushOut, PushSample};
pub(crate) use render::{group, markdown, table};

/// The servers compared.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Server {
    /// `c10m run` on AF_XDP at 198.18.0.10.
    Dataplane,
    /// `c10m kernel` (epoll, SO_REUSEPORT) at 198.18.0.2.
    Kernel,
    /// nginx at 198.18.0.2 (http only), where installed.
    Nginx,
    /// `c10m-bench reflect` at 198.18.0.10: the stateless reflector on the dataplane's
    /// AF_XDP path, the ceiling (rps and cps only).
    Reflector,
}

impl Server {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Dataplane => "dataplane",
            Server::Kernel => "kernel",
            Server::Nginx => "nginx",
            Server::Reflector => "reflector",
        }
    }
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

/// How one core spent a window, in percent of it (`/proc/stat`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct CoreUse {
    /// 100 × (1 − (idle + iowait) / total).
    pub(crate) busy: f64,
    /// user + nice.
    pub(crate) user: f64,
    pub(crate) system: f64,
    #[serde(default)]
    pub(crate) irq: f64,
    pub(crate) softirq: f64,
}

/// CPU use over a measured window: the server core, the generator core, and the
/// server processes' own CPU time.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Cpu {
    pub(crate) server_core: Option<CoreUse>,
    pub(crate) generator_core: Option<CoreUse>,
    /// utime + stime of the server process and its children over the window.
    pub(crate) server_process_cpu_secs: Option<f64>,
    /// Percent of the window in which the generator's loop found nothing to do
    /// (spinning or asleep): its core can be 100% busy while it waits on the server.
    #[serde(default)]
    pub(crate) generator_idle: Option<f64>,
    /// Estimate of the server's own work, percent of one core: the server core's user +
    /// system + irq plus the generator core's softirq (on veth the server's receive path
    /// runs on the sending core).
    #[serde(default)]
    pub(crate) server_work: Option<f64>,
    /// Length of the sampled window, seconds.
    #[serde(default)]
    pub(crate) window_secs: f64,
    /// Which window was sampled: `measured` (the generator's own measured window, to
    /// within 0.1 s) or `child run` (the whole generator run, connect and warm-up
    /// included).
    #[serde(default)]
    pub(crate) window: String,
}

/// Below this share the server shared its core with other work: the run's figures are
/// not the server's alone.
pub(crate) const SHARED: f64 = 80.0;

/// A core at least this busy (percent) is saturated.
pub(crate) const FULL: f64 = 95.0;
/// A generator whose loop found nothing to do for at least this share of the window
/// (percent) was waiting on the server, however busy its core (it spins before it
/// sleeps).
pub(crate) const WAITING: f64 = 5.0;

impl Cpu {
    /// The share (percent) of the server core's busy time that the server process itself
    /// had; well under 100 means other work shared the core (or its receive path for the
    /// generator's frames ran in ksoftirqd).
    pub(crate) fn process_share(&self) -> Option<f64> {
        let busy_secs = self.server_core.as_ref()?.busy / 100.0 * self.window_secs;
        let p = self.server_process_cpu_secs?;
        (busy_secs > 0.0).then(|| 100.0 * p / busy_secs)
    }

    /// What bounds a run: a core ≥ [`FULL`] busy is saturated, except the generator's when
    /// its loop idled for ≥ [`WAITING`] of the window.
    pub(crate) fn bound(&self) -> &'static str {
        let busy = |c: &Option<CoreUse>| c.as_ref().map(|c| c.busy);
        let (Some(s), Some(g)) = (busy(&self.server_core), busy(&self.generator_core)) else {
            return "unknown";
        };
        let generator = g >= FULL && self.generator_idle.is_none_or(|i| i < WAITING);
        match (s >= FULL, generator) {
            (true, true) => "both cores",
            (true, false) => "server core",
            (false, true) => "generator core",
            (false, false) => "neither core",
        }
    }
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
    /// The flood scenario, one record per server.
    #[serde(default)]
    pub(crate) flood: Vec<Flood>,
    /// The push scenario, one record per server.
    #[serde(default)]
    pub(crate) push: Vec<Push>,
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

/// One row: a scenario, the dataplane, its baseline (the kernel, or nginx in the rows
/// that say so) and the reflector (the ceiling, rps and cps rows only), and the ratios
/// dataplane / kernel and dataplane / reflector.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) dataplane: Cell,
    pub(crate) kernel: Cell,
    pub(crate) reflector: Cell,
    pub(crate) decimals: usize,
    /// Whether dataplane / kernel means something (not for a core's busy share).
    pub(crate) relative: bool,
}

impl Row {
    pub(crate) fn ratio(&self) -> Option<f64> {
        if !self.relative {
            return None;
        }
        ratio(self.dataplane.value(), self.kernel.value())
    }

    /// dataplane / reflector: the dataplane's share of the ceiling.
    pub(crate) fn of_reflector(&self) -> Option<f64> {
        if !self.relative {
            return None;
        }
        ratio(self.dataplane.value(), self.reflector.value())
    }
}

fn server_busy(c: Option<&Cpu>) -> Option<f64> {
    Some(c?.server_core.as_ref()?.busy)
}

fn gen_busy(c: Option<&Cpu>) -> Option<f64> {
    Some(c?.generator_core.as_ref()?.busy)
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
/// concurrency, then CPS, then the flood.
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
                reflector: Cell::Missing,
                decimals,
                relative: true,
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
        load::load_rows(&mut rows, &r.rps, base, suffix);
        load::load_rows(&mut rows, &r.cps, base, suffix);
    }
    flood::flood_rows(&mut rows, &r.flood);
    push::push_rows(&mut rows, &r.push);
    rows
}

/// One rps or cps run with its CPU figures, for the CPU table and notes.
pub(crate) struct CpuRun<'a> {
    pub(crate) server: Option<Server>,
    /// `rps http c=100`, `cps http c=100`.
    pub(crate) run: String,
    pub(crate) rate: Option<f64>,
    pub(crate) cpu: Option<&'a Cpu>,
    pub(crate) per_core_second: Option<f64>,
    pub(crate) per_server_work_second: Option<f64>,
}

pub(crate) fn cpu_runs(r: &Report) -> Vec<CpuRun<'_>> {
    load::cpu_runs_of(&r.rps)
        .chain(load::cpu_runs_of(&r.cps))
        .collect()
}

/// The notes on CPU use: how it was measured, what the cores carry on veth, and what
/// bounds each run. Empty when no run has CPU figures.
pub(crate) fn cpu_notes(r: &Report, server_core: usize, gen_core: usize) -> Vec<String> {
    let runs: Vec<CpuRun> = cpu_runs(r)
        .into_iter()
        .filter(|x| x.cpu.is_some())
        .collect();
    if runs.is_empty() {
        return Vec::new();
    }
    let mut notes = vec![format!(
        "CPU use: /proc/stat of the server core (cpu{server_core}) and the generator core \
         (cpu{gen_core}) sampled as the generator's measured window opened and closed (it \
         prints a phase line on stderr; compare reads it within 0.1 s), so connection set-up \
         and warm-up are excluded; busy = 1 − (idle + iowait) / total. Server process CPU = \
         utime + stime of the server process and its children over the same window. Held \
         connections are not sampled."
    )];
    notes.push(
        "On veth the receive work of a frame runs on the core that sent it: the generator's \
         requests and SYNs are taken in (veth transmit → XDP → the AF_XDP copy for the \
         dataplane; the kernel's TCP input in softirq for the kernel) on the generator core, \
         and the servers' responses reach the generator's AF_XDP socket on the server core. \
         So neither core carries only its own side, and a rate can be bound by either."
            .into(),
    );
    notes.push(
        "Server work (est.) = the server core's user + system + irq share plus the generator \
         core's softirq share: the server process and its transmit path, and its receive path \
         that runs on the generator's core, less the generator's receive path on the server \
         core. Requests (connections) per server-work second divide the rate by it: the \
         fairest of these figures when both cores are busy, but an estimate (timer softirqs \
         and a few frames go to the wrong side). This kernel accounts CPU time by ticks, so \
         softirq work that ran while the server process was on its core is in the server \
         process's CPU seconds too."
            .into(),
    );
    notes.push(
        "The dataplane's adaptive idle policy spins up to 256 empty loop rounds before it \
         sleeps, so its core's busy share includes some spinning and its requests (or \
         connections) per server-core second understate what it does per second of work. \
         The generator has the same policy and sleeps only when nothing is due for 1 ms, \
         so its core shows near 100% busy even while it waits on the server: it reports the share of \
         the window its loop found nothing to do (generator loop idle), and its core counts \
         as saturated only when that is under 5%."
            .into(),
    );
    let mut bounds = Vec::new();
    let mut generator_bound = false;
    for x in &runs {
        let Some(c) = x.cpu else { continue };
        let b = c.bound();
        generator_bound |= b == "generator core";
        let busy = |u: Option<&CoreUse>| u.map_or("?".to_owned(), |u| format!("{:.0}%", u.busy));
        let idle = c
            .generator_idle
            .map_or(String::new(), |i| format!(", its loop idle {i:.0}%"));
        bounds.push(format!(
            "{} {}: {b} (server core {}, generator core {}{idle})",
            x.server.map_or("?", Server::name),
            x.run,
            busy(c.server_core.as_ref()),
            busy(c.generator_core.as_ref())
        ));
    }
    let mut text = format!(
        "What bounds each run (a core ≥ 95% busy is saturated): {}.",
        bounds.join("; ")
    );
    if generator_bound {
        text.push_str(
            " A generator-bound run (generator core ≥ 95% busy with its loop idle under 5%, \
             server core not) measures the \
             generator: the server had capacity left, so its rate and the dataplane / kernel \
             ratio understate the server's capacity; requests per server-core second is the \
             fairer comparison there.",
        );
    }
    notes.push(text);
    let shared: Vec<String> = runs
        .iter()
        .filter_map(|x| {
            let share = x.cpu?.process_share()?;
            (share < SHARED).then(|| {
                format!(
                    "{} {} ({share:.0}%)",
                    x.server.map_or("?", Server::name),
                    x.run
                )
            })
        })
        .collect();
    if !shared.is_empty() {
        notes.push(format!(
            "The server process had under {:.0}% of its core's busy time in: {}. Other work \
             shared the core (the machine was not quiet), so these runs' rates and CPU \
             figures are not the server's alone; run again on a quiet machine.",
            SHARED,
            shared.join(", ")
        ));
    }
    if runs
        .iter()
        .any(|x| x.cpu.is_some_and(|c| c.window != "measured"))
    {
        notes.push(
            "Some runs printed no phase lines: their CPU figures cover the whole generator run, \
             connection set-up and warm-up included (window \"child run\")."
                .into(),
        );
    }
    notes
}

fn times(x: f64) -> String {
    format!("{x:.2}×")
}

/// The goals, judged on this report's numbers.
pub(crate) fn goals(r: &Report) -> Vec<Goal> {
    let mut goals = Vec::new();

    // RPS and p99 at equal concurrency, every level measured on both.
    let pairs: Vec<(u64, &RpsOut, &RpsOut)> = load::levels(&r.rps)
        .into_iter()
        .filter_map(|(proto, c)| {
            let d = load::find(&r.rps, Server::Dataplane, &proto, c)?;
            let k = load::find(&r.rps, Server::Kernel, &proto, c)?;
            let (d, k) = (d.measured.out.as_ref()?, k.measured.out.as_ref()?);
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
    for (proto, c) in load::levels(&r.cps) {
        let d = load::find(&r.cps, Server::Dataplane, &proto, c).and_then(|x| x.measured.rate());
        let k = load::find(&r.cps, Server::Kernel, &proto, c).and_then(|x| x.measured.rate());
        if let Some(x) = ratio(d, k) {
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

    // The ceiling: the dataplane's share of the reflector's rate, same generator, same run.
    let share = |xs: Vec<(String, Option<f64>, Option<f64>)>, floor: f64| {
        let (mut text, mut met) = (Vec::new(), None);
        for (level, d, c) in xs {
            if let Some(x) = ratio(d, c) {
                text.push(format!("{level}: {}", times(x)));
                met = Some(met.unwrap_or(true) && x >= floor);
            }
        }
        (or_none(text), met)
    };
    let rps_levels = load::levels(&r.rps)
        .into_iter()
        .filter(|(proto, c)| proto == "http" && *c >= 100)
        .map(|(proto, c)| {
            let rate = |s| load::find(&r.rps, s, &proto, c).and_then(|x| x.measured.rate());
            (
                format!("c={c}"),
                rate(Server::Dataplane),
                rate(Server::Reflector),
            )
        })
        .collect();
    let (measured, met) = share(rps_levels, 0.8);
    goals.push(Goal {
        name: "HTTP RPS ≥ 0.8× the reflector at ≥ 100 connections".into(),
        measured,
        met,
    });
    let cps_levels = load::levels(&r.cps)
        .into_iter()
        .map(|(proto, c)| {
            let rate = |s| load::find(&r.cps, s, &proto, c).and_then(|x| x.measured.rate());
            (
                format!("{proto} c={c}"),
                rate(Server::Dataplane),
                rate(Server::Reflector),
            )
        })
        .collect();
    let (measured, met) = share(cps_levels, 0.6);
    goals.push(Goal {
        name: "CPS ≥ 0.6× the reflector".into(),
        measured,
        met,
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
