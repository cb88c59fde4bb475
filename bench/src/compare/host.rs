//! What `compare` reads from the host: the machine, the clock as a UTC timestamp, the
//! kernel's socket memory (`/proc/net/sockstat`, `/proc/slabinfo`) and process RSS, and
//! the sysctls of a network namespace. Parsers are pure functions, tested on fixed text.

use std::fs;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use super::report::Machine;

/// Slab caches a kernel TCP connection allocates from, measured before and while
/// holding: the socket, its inode, its file, its epoll item, and half-open and
/// TIME-WAIT minisocks. (Its dentry, 192 bytes, is left out: the dentry cache moves
/// with every build on the machine, and leaving it out favours the kernel.)
pub(crate) const SLAB_CACHES: [&str; 6] = [
    "TCP",
    "request_sock_TCP",
    "tw_sock_TCP",
    "sock_inode_cache",
    "filp",
    "eventpoll_epi",
];

/// The machine: CPU model, online cores, RAM, kernel, host name.
pub(crate) fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let read = |p: &str| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let ram_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| kib_field(&m, "MemTotal:"))
        .unwrap_or(0);
    Machine {
        cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ram_bytes: ram_kib * 1024,
        kernel: format!(
            "{} {} {} {}",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease"),
            read("/proc/sys/kernel/version"),
            std::env::consts::ARCH
        ),
        hostname: read("/proc/sys/kernel/hostname"),
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_owned())
    })
}

/// The value in kB of a `/proc/*/status` or `/proc/meminfo` line starting with `key`.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The memory available for new allocations (`MemAvailable` of `/proc/meminfo`), bytes.
pub(crate) fn mem_available() -> Option<u64> {
    let m = fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&m, "MemAvailable:").map(|k| k * 1024)
}

/// `TcpExt: … ListenOverflows … ListenDrops …` of `/proc/net/netstat` text (a header
/// line of names, then a line of values).
pub(crate) fn parse_listen_overflows(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let field = |name: &str| {
        let i = names.split_whitespace().position(|w| w == name)?;
        values.split_whitespace().nth(i)?.parse().ok()
    };
    Some((field("ListenOverflows")?, field("ListenDrops")?))
}

/// The accept-queue overflows and listen drops of the network namespace of `pid`.
pub(crate) fn listen_overflows(pid: u32) -> Option<(u64, u64)> {
    parse_listen_overflows(&fs::read_to_string(format!("/proc/{pid}/net/netstat")).ok()?)
}

/// A process's resident set, bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:").map(|k| k * 1024)
}

/// `TCP: inuse N … mem PAGES` of `/proc/net/sockstat`: (sockets in use, buffer pages).
pub(crate) fn parse_sockstat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse::<u64>().ok()
    };
    Some((field("inuse")?, field("mem")?))
}

/// Bytes in use (active objects × object size) of each named slab cache, in `names`
/// order; a cache the kernel does not list (merged into another) counts 0.
pub(crate) fn parse_slabinfo(text: &str, names: &[&str]) -> Vec<u64> {
    names
        .iter()
        .map(|name| {
            text.lines()
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    if w.next()? != *name {
                        return None;
                    }
                    let active: u64 = w.next()?.parse().ok()?;
                    let _total = w.next()?;
                    let size: u64 = w.next()?.parse().ok()?;
                    Some(active * size)
                })
                .unwrap_or(0)
        })
        .collect()
}

/// The kernel's TCP memory as seen from the namespace of process `pid`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KernelSample {
    /// TCP sockets in use in the namespace.
    pub(crate) inuse: u64,
    /// Socket buffer bytes (sockstat `mem` pages × 4096; system-wide).
    pub(crate) buffers: u64,
    /// Bytes of each of [`SLAB_CACHES`] (system-wide).
    pub(crate) slab: Vec<u64>,
    /// Summed RSS of the server processes.
    pub(crate) rss: u64,
}

impl KernelSample {
    /// Reads sockstat through `/proc/PID/net` (the namespace of `pids[0]`), slabinfo,
    /// and the RSS of every pid.
    pub(crate) fn read(pids: &[u32]) -> anyhow::Result<KernelSample> {
        let first = pids.first().context("no server process")?;
        let path = format!("/proc/{first}/net/sockstat");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let Some((inuse, pages)) = parse_sockstat(&text) else {
            bail!("no TCP line in {path}");
        };
        let slab =
            fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo (needs root)")?;
        Ok(KernelSample {
            inuse,
            buffers: pages * 4096,
            slab: parse_slabinfo(&slab, &SLAB_CACHES),
            rss: pids.iter().filter_map(|&p| rss_bytes(p)).sum(),
        })
    }

    pub(crate) fn slab_total(&self) -> u64 {
        self.slab.iter().sum()
    }
}

/// Seconds since the epoch → (`20261123T210102Z`, `2026-11-23T21:01:02Z`).
pub(crate) fn utc_stamp(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
    )
}

/// Now, as [`utc_stamp`].
pub(crate) fn now_stamp() -> (String, String) {
    utc_stamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// A sysctl's value inside network namespace `ns`.
pub(crate) fn sysctl_get(ns: &str, name: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-n", name])
        .output()
        .context("running ip netns exec … sysctl (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "sysctl {name} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Sets a sysctl inside network namespace `ns`.
pub(crate) fn sysctl_set(ns: &str, name: &str, value: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw"])
        .arg(format!("{name}={value}"))
        .output()
        .context("running ip netns exec … sysctl")?;
    if !out.status.success() {
        bail!(
            "sysctl -w {name}={value} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The full path of `prog` on `PATH`, if it is there.
pub(crate) fn which(prog: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// True when running as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let ids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            ids.split_whitespace().nth(1).map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// The soft RLIMIT_NOFILE of this process, from `/proc/self/limits`.
pub(crate) fn nofile_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_tcp_line() {
        let text =
            "sockets: used 26\nTCP: inuse 3 orphan 0 tw 0 alloc 3 mem 386\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(text), Some((3, 386)));
        assert_eq!(parse_sockstat("sockets: used 1\n"), None);
    }

    #[test]
    fn slabinfo_active_objects_times_size() {
        let text = "slabinfo - version: 2.1\n\
            # name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables\n\
            TCPv6                 26     26   2496   13    8 : tunables    0    0    0\n\
            TCP                   79    156   2368   13    8 : tunables    0    0    0\n\
            filp                1008   1008    192   21    1 : tunables    0    0    0\n";
        assert_eq!(
            parse_slabinfo(text, &["TCP", "filp", "absent"]),
            vec![79 * 2368, 1008 * 192, 0]
        );
    }

    #[test]
    fn netstat_listen_overflows() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
            TcpExt: 5 138 140 9\n\
            IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_listen_overflows(text), Some((138, 140)));
        assert_eq!(parse_listen_overflows("IpExt: A\nIpExt: 1\n"), None);
    }

    #[test]
    fn cpu_model_and_kib_fields() {
        let cpu = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n";
        assert_eq!(
            cpu_model(cpu).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        let status = "Name:\tc10m\nVmRSS:\t   12345 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(12345));
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0).0, "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400).1, "2000-02-29T00:00:00Z");
        // 2026-11-23 21:01:02 UTC.
        assert_eq!(
            utc_stamp(1_795_467_662),
            (
                "20261123T210102Z".to_owned(),
                "2026-11-23T21:01:02Z".to_owned()
            )
        );
    }
}
