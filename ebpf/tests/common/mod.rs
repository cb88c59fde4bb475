//! A throw-away test bed per test: two network namespaces joined by a veth pair,
//! addressed from 198.18.200.0/24 (benchmarking range, never routed anywhere), deleted
//! on drop even when the test panics.
//!
//! Namespaces are entered with `setns` on a scoped thread ([`in_netns`]), not through
//! `ip netns exec`, so the loader runs inside this test process and sees the bed's
//! interfaces by index. Shell tools (`ip -n`, `ip netns exec ping`) are used for setup
//! and for looking at the result the way an operator would.
#![allow(dead_code)]

pub(crate) mod sys;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
pub(crate) const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
/// The "dataplane" address: steered by XDP, never configured in the kernel.
pub(crate) const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
pub(crate) const GEN_MAC: &str = "02:00:c6:12:c8:01";
pub(crate) const DUT_MAC: &str = "02:00:c6:12:c8:02";

pub(crate) fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned));
    euid.as_deref() == Some("0")
}

/// Under `CI=true` a privileged test that cannot run fails; elsewhere it says so and
/// passes.
pub(crate) fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run ({why}): CI must run as root with network namespaces"
    );
    eprintln!("skipped: needs root ({why})");
}

/// True if privileged tests can run; otherwise [`skip`]s.
pub(crate) fn privileged() -> bool {
    is_root() || {
        skip("not root");
        false
    }
}

/// Runs `args` and returns stdout; `Err` carries the command and its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Runs `f` on a thread that has entered network namespace `ns`, and returns its result
/// (a panic in `f` is a panic here).
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            sys::enter_netns(ns).unwrap_or_else(|e| panic!("entering netns {ns}: {e}"));
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Two namespaces, `gen` (198.18.200.1) and `dut` (198.18.200.2), and a veth pair
/// between them, all up.
#[derive(Debug)]
pub(crate) struct Bed {
    pub(crate) gen_ns: String,
    pub(crate) dut_ns: String,
    pub(crate) gen_if: String,
    pub(crate) dut_if: String,
}

impl Bed {
    /// Builds a bed, or returns `None` after [`skip`] when this machine cannot.
    pub(crate) fn new() -> Option<Bed> {
        if !privileged() {
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        // Interface names have at most 15 bytes: "c10m" + pid (<= 7) + "-" + n + side.
        let bed = Bed {
            gen_ns: format!("c10m-t{pid}-{n}-gen"),
            dut_ns: format!("c10m-t{pid}-{n}-dut"),
            gen_if: format!("c10m{pid}-{n}g"),
            dut_if: format!("c10m{pid}-{n}d"),
        };
        // From here on `bed` is dropped, and so cleaned up, on every exit path.
        match bed.build() {
            Ok(()) => Some(bed),
            Err(why) => {
                skip(&why);
                None
            }
        }
    }

    fn build(&self) -> Result<(), String> {
        let (g, d, gi, di) = (&self.gen_ns, &self.dut_ns, &self.gen_if, &self.dut_if);
        // One queue each way, so every frame arrives on rx queue 0 (a veth gets one
        // queue per CPU by default, and a frame sent on tx queue i lands on rx queue i).
        let queues = "numtxqueues 1 numrxqueues 1";
        for command in [
            format!("netns add {g}"),
            format!("netns add {d}"),
            format!(
                "link add {gi} netns {g} address {GEN_MAC} {queues} \
                 type veth peer name {di} netns {d} address {DUT_MAC} {queues}"
            ),
            format!("-n {g} addr add {GEN_ADDR}/24 dev {gi}"),
            format!("-n {d} addr add {DUT_ADDR}/24 dev {di}"),
            format!("-n {g} link set dev lo up"),
            format!("-n {g} link set dev {gi} up"),
            format!("-n {d} link set dev lo up"),
            format!("-n {d} link set dev {di} up"),
            // As scripts/testbed does: with checksum offload a veth hands its peer frames
            // whose TCP/UDP checksum is only partial, and an AF_XDP socket receives them
            // so; and no super-frames (TSO/GSO) that would not fit in a UMEM chunk.
            format!("netns exec {g} ethtool -K {gi} tx off tso off gso off"),
        ] {
            ip(&command.split_whitespace().collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// `ip -d link show` of the dut interface.
    pub(crate) fn dut_link(&self) -> String {
        ip(&[
            "-n",
            &self.dut_ns,
            "-d",
            "link",
            "show",
            "dev",
            &self.dut_if,
        ])
        .unwrap()
    }

    /// The XDP attachment the kernel reports on the dut interface: `Some("xdp")`
    /// (native), `Some("xdpgeneric")`, or `None`.
    pub(crate) fn dut_xdp(&self) -> Option<String> {
        xdp_kind(&self.dut_link())
    }

    /// Pings `addr` from `gen` once; true if it answered within a second.
    pub(crate) fn ping_from_gen(&self, addr: Ipv4Addr) -> bool {
        let addr = addr.to_string();
        ip(&[
            "netns",
            "exec",
            &self.gen_ns,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-q",
            &addr,
        ])
        .is_ok()
    }
}

/// The attach mode `ip link show` prints after the MTU on the first line: `xdp`
/// (native), `xdpgeneric`, `xdpoffload` or `xdpmulti`.
pub(crate) fn xdp_kind(link: &str) -> Option<String> {
    let first = link.lines().next().unwrap_or_default();
    first
        .split_whitespace()
        .find(|word| matches!(*word, "xdp" | "xdpgeneric" | "xdpoffload" | "xdpmulti"))
        .map(str::to_owned)
}

impl Drop for Bed {
    fn drop(&mut self) {
        // The veth pair dies with its namespaces. Errors are ignored: a half-built bed
        // lacks some of these.
        for ns in [&self.gen_ns, &self.dut_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
