//! CPU use over a measured window: per core from `/proc/stat`, per process from
//! `/proc/<pid>/stat`. On veth the receive work of a frame (veth transmit → XDP → the
//! AF_XDP copy, or the kernel's TCP input in softirq) runs on the *sending* core, so a
//! rate alone does not say whether the server core or the generator core bound it; the
//! busy share of both cores over the same window does.
//!
//! Parsing and arithmetic are plain functions, tested without a test bed.

use std::time::Instant;

use super::report::{CoreUse, Cpu};

/// One core's counters from a `cpuN` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoreTimes {
    pub(crate) user: u64,
    pub(crate) nice: u64,
    pub(crate) system: u64,
    pub(crate) idle: u64,
    pub(crate) iowait: u64,
    pub(crate) irq: u64,
    pub(crate) softirq: u64,
    pub(crate) steal: u64,
}

impl CoreTimes {
    /// Every tick the core spent in any state (guest time is already inside user).
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// The per-core lines of `/proc/stat`, indexed by core number (`None` for a core not
/// listed, e.g. offline). The aggregate `cpu` line is skipped.
pub(crate) fn parse_stat(text: &str) -> Vec<Option<CoreTimes>> {
    let mut cores: Vec<Option<CoreTimes>> = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let Some(n) = w
            .next()
            .and_then(|h| h.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = w.map_while(|x| x.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        if cores.len() <= n {
            cores.resize(n + 1, None);
        }
        cores[n] = Some(CoreTimes {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        });
    }
    cores
}

/// How a core spent the window between two readings, in percent of the window:
/// busy = 100 × (1 − (idle + iowait) / total). `None` when no tick passed or the
/// counters went backwards.
pub(crate) fn core_use(a: &CoreTimes, b: &CoreTimes) -> Option<CoreUse> {
    let d = |x: u64, y: u64| y.checked_sub(x);
    let total = d(a.total(), b.total())?;
    if total == 0 {
        return None;
    }
    let idle = d(a.idle, b.idle)? + d(a.iowait, b.iowait)?;
    let pct = |v: u64| (100.0 * v as f64 / total as f64).clamp(0.0, 100.0);
    Some(CoreUse {
        busy: (100.0 - pct(idle)).clamp(0.0, 100.0),
        user: pct(d(a.user, b.user)? + d(a.nice, b.nice)?),
        system: pct(d(a.system, b.system)?),
        irq: pct(d(a.irq, b.irq)?),
        softirq: pct(d(a.softirq, b.softirq)?),
    })
}

/// Work done per busy second of the server core: `rate / (busy% / 100)`. `None` when
/// the core was not seen busy (or the rate is unknown).
pub(crate) fn per_core_second(rate: f64, busy_pct: f64) -> Option<f64> {
    (rate.is_finite() && busy_pct.is_finite() && busy_pct > 0.0 && rate >= 0.0)
        .then(|| rate / (busy_pct / 100.0))
}

/// An estimate of the server's own work on veth, in percent of one core: the server
/// core's user, system and irq time (the server process, its transmit path) plus the
/// generator core's softirq (where the frames the generator sent are taken in: the
/// server's receive path). The server core's softirq is left out: there the server's
/// responses reach the generator's socket.
pub(crate) fn server_work(server: &CoreUse, generator: &CoreUse) -> f64 {
    server.user + server.system + server.irq + generator.softirq
}

/// `(ppid, utime + stime in ticks)` from the text of `/proc/<pid>/stat`. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses itself, so the
/// fields are counted from the last `)`.
pub(crate) fn parse_pid_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) … utime(14) stime(15).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `root` and every process descending from it (nginx's worker is its master's child).
pub(crate) fn tree(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| parse_pid_stat(&t))
            {
                parent.push((pid, ppid));
            }
        }
    }
    descendants(root, &parent)
}

/// `root` and its descendants in a (pid, ppid) table.
pub(crate) fn descendants(root: u32, parent: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parent
                .iter()
                .filter(|&&(pid, ppid)| ppid == p && pid != p && !out.contains(&pid))
                .map(|&(pid, _)| pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A reading of every core and of some processes, at an instant.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    at: Instant,
    cores: Vec<Option<CoreTimes>>,
    /// utime + stime of the processes read, ticks (`None` if none could be read).
    process_ticks: Option<u64>,
}

impl Sample {
    /// Reads `/proc/stat` and `/proc/<pid>/stat` of each of `pids`.
    pub(crate) fn take(pids: &[u32]) -> Sample {
        let at = Instant::now();
        let cores = parse_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
        let ticks: Vec<u64> = pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|t| parse_pid_stat(&t).map(|(_, t)| t))
            .collect();
        Sample {
            at,
            cores,
            process_ticks: (!ticks.is_empty()).then(|| ticks.iter().sum()),
        }
    }
}

/// CPU use between two samples for the server and generator cores.
pub(crate) fn between(
    a: &Sample,
    b: &Sample,
    server_core: usize,
    gen_core: usize,
    window: &str,
) -> Cpu {
    let core = |n: usize| match (a.cores.get(n), b.cores.get(n)) {
        (Some(Some(x)), Some(Some(y))) => core_use(x, y),
        _ => None,
    };
    let process = match (a.process_ticks, b.process_ticks) {
        (Some(x), Some(y)) if y >= x => Some((y - x) as f64 / clock_ticks()),
        _ => None,
    };
    let (server_core, generator_core) = (core(server_core), core(gen_core));
    let work = match (&server_core, &generator_core) {
        (Some(s), Some(g)) => Some(server_work(s, g)),
        _ => None,
    };
    Cpu {
        server_core,
        generator_core,
        server_process_cpu_secs: process,
        generator_idle: None,
        server_work: work,
        window_secs: b.at.saturating_duration_since(a.at).as_secs_f64(),
        window: window.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  300 10 200 5000 20 5 100 0 0 0\n\
        cpu0 100 10 50 2500 10 0 40 0 0 0\n\
        cpu1 200 0 150 2500 10 5 60 0 0 0\n\
        intr 12345 0 0\n\
        ctxt 999\n\
        cpu_not_a_core 1 2 3 4\n";

    #[test]
    fn stat_lines_by_core_skipping_the_aggregate() {
        let c = parse_stat(STAT);
        assert_eq!(c.len(), 2);
        let c1 = c[1].unwrap();
        assert_eq!(
            (c1.user, c1.system, c1.idle, c1.iowait, c1.irq, c1.softirq),
            (200, 150, 2500, 10, 5, 60)
        );
        assert_eq!(c[0].unwrap().nice, 10);
        // Old kernels have fewer columns; missing ones read as 0.
        let old = parse_stat("cpu3 1 2 3 4\n");
        assert_eq!(old.len(), 4);
        assert!(old[0].is_none());
        assert_eq!(old[3].unwrap().idle, 4);
        assert_eq!(old[3].unwrap().steal, 0);
        assert!(parse_stat("cpu0 1 2\n").iter().all(Option::is_none));
    }

    #[test]
    fn busy_is_everything_but_idle_and_iowait() {
        let a = CoreTimes {
            user: 100,
            idle: 1000,
            ..CoreTimes::default()
        };
        // 200 ticks: 60 user + 20 nice, 40 system, 10 irq, 30 softirq, 30 idle, 10 iowait.
        let b = CoreTimes {
            user: 160,
            nice: 20,
            system: 40,
            idle: 1030,
            iowait: 10,
            irq: 10,
            softirq: 30,
            steal: 0,
        };
        let u = core_use(&a, &b).unwrap();
        assert!((u.busy - 80.0).abs() < 1e-9, "{u:?}");
        assert!((u.user - 40.0).abs() < 1e-9, "{u:?}");
        assert!((u.system - 20.0).abs() < 1e-9, "{u:?}");
        assert!((u.irq - 5.0).abs() < 1e-9, "{u:?}");
        assert!((u.softirq - 15.0).abs() < 1e-9, "{u:?}");
        // No tick passed, or counters went backwards: unknown, not 0 or 100.
        assert_eq!(core_use(&a, &a), None);
        assert_eq!(core_use(&b, &a), None);
    }

    #[test]
    fn a_fully_idle_and_a_fully_busy_core() {
        let a = CoreTimes::default();
        let idle = CoreTimes { idle: 500, ..a };
        assert_eq!(core_use(&a, &idle).unwrap().busy, 0.0);
        let busy = CoreTimes { softirq: 500, ..a };
        let u = core_use(&a, &busy).unwrap();
        assert_eq!((u.busy, u.softirq), (100.0, 100.0));
    }

    #[test]
    fn work_per_busy_second_of_the_server_core() {
        assert_eq!(per_core_second(300_000.0, 100.0), Some(300_000.0));
        assert_eq!(per_core_second(300_000.0, 50.0), Some(600_000.0));
        assert_eq!(per_core_second(300_000.0, 0.0), None);
        assert_eq!(per_core_second(f64::NAN, 50.0), None);
    }

    #[test]
    fn server_work_is_its_own_core_less_softirq_plus_the_generators_softirq() {
        let server = CoreUse {
            busy: 96.0,
            user: 35.0,
            system: 20.0,
            irq: 1.0,
            softirq: 40.0,
        };
        let generator = CoreUse {
            softirq: 34.0,
            ..server.clone()
        };
        assert!((server_work(&server, &generator) - 90.0).abs() < 1e-9);
        // 270,000 requests/s with 90% of a core of server work: 300,000 per second of it.
        assert_eq!(per_core_second(270_000.0, 90.0), Some(300_000.0));
    }

    #[test]
    fn pid_stat_counts_fields_after_the_name() {
        let t = "4242 (nginx: worker (x) 1) S 4241 4241 4241 0 -1 4194560 100 0 0 0 \
                 250 75 0 0 20 0 1 0 12345 1000000 200 18446744073709551615\n";
        assert_eq!(parse_pid_stat(t), Some((4241, 325)));
        assert_eq!(parse_pid_stat("garbage"), None);
        assert_eq!(parse_pid_stat("1 (x) S 0"), None);
    }

    #[test]
    fn descendants_of_a_process() {
        let table = [(1, 0), (10, 1), (11, 10), (12, 10), (13, 11), (20, 1)];
        let mut d = descendants(10, &table);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 13]);
        assert_eq!(descendants(99, &table), vec![99]);
    }

    #[test]
    fn reading_this_process_and_the_cores() {
        let me = std::process::id();
        let a = Sample::take(&[me]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = Sample::take(&[me]);
        assert!(!a.cores.is_empty(), "no cpuN lines in /proc/stat");
        let c = between(&a, &b, 0, 0, "test");
        assert!(c.server_process_cpu_secs.is_some(), "{c:?}");
        assert!(c.window_secs > 0.0, "{c:?}");
        assert!(tree(me).contains(&me));
    }
}
