//! What the AF_XDP generators (`conns`, `xsk`, `rps`, `cps`, `flood`) share about the
//! host: interface facts from sysfs, MAC addresses (the kernel's ARP answer for a target),
//! and the benchmarking range they must stay in; and [`on_gen`], where the kernel clients
//! of `compare` and `loss` run.

use std::fs::{self, File};
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sched::{CloneFlags, CpuSet, sched_setaffinity, setns};
use nix::unistd::Pid;

/// The test bed's generator namespace (scripts/testbed).
pub(crate) const GEN_NS: &str = "c10m-gen";

/// `/sys/class/net/IFACE/FILE`, trimmed; `None` if it cannot be read.
pub(crate) fn sys(iface: &str, file: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/sys/class/net/{iface}/{file}")).ok()?;
    Some(text.trim().to_owned())
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next().ok_or("a MAC has six bytes")?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC byte {p:?}"))?;
    }
    match parts.next() {
        None => Ok(mac),
        Some(_) => Err("a MAC has six bytes".into()),
    }
}

/// IFACE's own MAC address.
pub(crate) fn mac_of(iface: &str) -> anyhow::Result<[u8; 6]> {
    match sys(iface, "address").map(|m| parse_mac(&m)) {
        Some(Ok(mac)) => Ok(mac),
        _ => bail!("{iface} has no Ethernet MAC address"),
    }
}

/// Fails with what to do unless IFACE exists in this network namespace.
pub(crate) fn require_iface(iface: &str) -> anyhow::Result<()> {
    if iface.is_empty() || iface.contains('/') || sys(iface, "ifindex").is_none() {
        bail!(
            "no interface named {iface} in this network namespace: bring the test bed up \
             (scripts/testbed up) and run inside c10m-gen (ip netns exec c10m-gen …)"
        );
    }
    Ok(())
}

/// The target's MAC, from the kernel's neighbour table after it resolved the address.
pub(crate) fn resolve_mac(target: Ipv4Addr) -> anyhow::Result<[u8; 6]> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        // Any datagram makes the kernel resolve the address (port 9, discard).
        let _ = sock.send_to(b"x", (target, 9));
        std::thread::sleep(Duration::from_millis(100));
        let arp = fs::read_to_string("/proc/net/arp").unwrap_or_default();
        for line in arp.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 4
                && cols[0] == target.to_string()
                && cols[2] == "0x2"
                && let Ok(mac) = parse_mac(cols[3])
            {
                return Ok(mac);
            }
        }
    }
    bail!("no ARP answer from {target}: is the server running? (or give --dst-mac)")
}

/// Whether `a` is in the benchmarking range 198.18.0.0/15 (RFC 2544).
pub(crate) fn in_bench_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 198 && (o[1] == 18 || o[1] == 19)
}

/// A generator's source prefix (`--src`), wholly inside the benchmarking range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The network address, host bits clear.
    pub(crate) net: u32,
    /// The prefix length, 15 to 32.
    pub(crate) len: u8,
}

impl Prefix {
    /// Parses `--src ADDR/LEN` and refuses, in one line, a prefix that reaches outside
    /// 198.18.0.0/15: a generator must never send from addresses someone else owns.
    pub(crate) fn parse_src(s: &str) -> anyhow::Result<Prefix> {
        let (addr, len) = c10m_dataplane::parse_cidr(s).map_err(|e| anyhow!("--src: {e}"))?;
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        let p = Prefix {
            net: u32::from(addr) & mask,
            len,
        };
        if len < 15 || !in_bench_range(Ipv4Addr::from(p.net)) {
            bail!(
                "--src {s} is not inside the benchmarking range 198.18.0.0/15: \
                 use a prefix inside it, e.g. 198.19.0.0/16"
            );
        }
        Ok(p)
    }

    /// The host-bit mask.
    pub(crate) fn hostmask(self) -> u32 {
        u32::MAX.checked_shr(u32::from(self.len)).unwrap_or(0)
    }

    /// The last address of the prefix.
    pub(crate) fn last(self) -> u32 {
        self.net | self.hostmask()
    }

    /// Whether `a` is inside the prefix.
    pub(crate) fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & !self.hostmask() == self.net
    }
}

/// Runs `f` on a thread in c10m-gen pinned to `core`: a kernel client where the
/// generator runs.
pub(crate) fn on_gen<T: Send>(
    core: usize,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(Path::new("/var/run/netns").join(GEN_NS))
                .with_context(|| format!("opening namespace {GEN_NS}"))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).context("entering c10m-gen")?;
            let mut set = CpuSet::new();
            set.set(core)?;
            sched_setaffinity(Pid::from_raw(0), &set).context("pinning the client")?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a client thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_mac("02:00:c6:12:00:0a"),
            Ok([2, 0, 0xc6, 0x12, 0, 0x0a])
        );
        assert!(parse_mac("02:00:c6:12:00").is_err());
        assert!(parse_mac("02:00:c6:12:00:0a:01").is_err());
        assert!(parse_mac("02:00:c6:12:00:zz").is_err());
    }

    #[test]
    fn the_benchmarking_range_is_198_18_slash_15() {
        assert!(in_bench_range(Ipv4Addr::new(198, 18, 0, 10)));
        assert!(in_bench_range(Ipv4Addr::new(198, 19, 255, 1)));
        assert!(!in_bench_range(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!in_bench_range(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn a_missing_interface_says_what_to_do() {
        let e = require_iface("no-such-if0").unwrap_err().to_string();
        assert!(e.contains("scripts/testbed up"), "{e}");
        assert!(require_iface("../x").is_err());
    }

    #[test]
    fn a_source_prefix_outside_the_range_is_refused_in_one_line() {
        let p = Prefix::parse_src("198.19.0.0/16").unwrap();
        assert_eq!(
            (p.net, p.len),
            (u32::from(Ipv4Addr::new(198, 19, 0, 0)), 16)
        );
        assert_eq!(p.last(), u32::from(Ipv4Addr::new(198, 19, 255, 255)));
        assert!(p.contains(Ipv4Addr::new(198, 19, 7, 9)));
        assert!(!p.contains(Ipv4Addr::new(198, 18, 7, 9)));
        assert!(Prefix::parse_src("198.18.0.0/15").is_ok());
        assert!(Prefix::parse_src("198.18.5.7/32").is_ok());
        for bad in ["10.0.0.0/8", "198.16.0.0/14", "198.20.0.0/16", "0.0.0.0/0"] {
            let e = format!("{:#}", Prefix::parse_src(bad).unwrap_err());
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains("--src"), "{e}");
        }
        let e = Prefix::parse_src("10.0.0.0/8").unwrap_err().to_string();
        assert!(e.contains("198.18.0.0/15"), "{e}");
    }
}
