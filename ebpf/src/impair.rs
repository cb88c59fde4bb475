//! Loss on a test bed without netem: a tc filter that drops a configured fraction of
//! the IP frames leaving (egress) or arriving at (ingress) an interface.
//!
//! The kernel here has no `sch_netem`, so the veth test bed emulates a lossy path with a
//! small BPF program (`src/bpf/impair.bpf.c`) attached as a direct-action `cls_bpf`
//! filter on the interface's clsact egress or ingress hook ([`Hook`]), each with its own
//! rate and counters. On the generator's end of the veth (gen0 in c10m-gen), egress drops
//! frames toward the server before the peer sees them, and ingress drops the server's
//! frames before the generator's kernel does, so the dataplane (behind XDP on dut0) and
//! the kernel (dut0's own stack) lose the same fraction either way. Only IPv4 and IPv6
//! frames are drawn from; ARP always passes.
//!
//! What egress sees: everything the kernel transmits through the qdisc layer on that
//! interface — kernel sockets in the generator's namespace. Frames an AF_XDP socket
//! sends bypass tc, so the AF_XDP generators (`c10m-bench rps`, `cps`, `conns`) are not
//! impaired. Ingress sees what the interface receives on its way to the kernel's stack
//! (an XDP program on the interface, such as an AF_XDP generator's, sees it first). It
//! drops and never delays, so it does not reorder (no `sch_fq` on this kernel for an
//! earliest-departure-time delay either).
//!
//! Frames, not buffers. Linux TCP hands the device buffers of up to 64 KiB (GSO:
//! segmented after tc, even with the interface's GSO off), and a veth with GRO on merges
//! the frames it receives before tc ingress; dropping either would lose a burst. So
//! [`Impairment::set`] also sets, for egress, the interface's `gso_max_segs` to 1 (with
//! `ip link`) and, for ingress, its GRO off (with `ethtool`): one frame per buffer, each
//! drop one frame drawn independently. [`Impairment::off`] sets them back: `gso_max_segs`
//! to the kernel's default, 65,535, and GRO on, the test bed's setting for gen0 (which
//! needs it for frames the server's XDP program sends back, see `scripts/testbed`).
//!
//! The filter stays on the interface after the process that attached it exits (tc
//! filters are not tied to a descriptor): [`Impairment::set`] attaches it or changes the
//! rate in place, [`Impairment::status`] reads the rate and counters back from the
//! kernel, and [`Impairment::off`] removes it. All three act on the calling thread's
//! network namespace and need root (or `CAP_BPF` and `CAP_NET_ADMIN`).

use std::fmt;
use std::io;
use std::str::FromStr;

use libbpf_rs::query::{ProgInfoIter, ProgInfoQueryOptions};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::{Error, sys};

/// The filter's tc handle and priority on either hook: fixed, so a later call finds it
/// without any state of its own.
pub(crate) const TC_HANDLE: u32 = 0xc10;
pub(crate) const TC_PRIORITY: u32 = 1;

/// Parts per million in 100%.
const MILLION: u32 = 1_000_000;

/// A loss rate, in parts per million of the frames seen.
///
/// Parsed from a percentage (`"1%"`, `"0.1%"`, `"5"` — the sign is optional) with at
/// most four decimals, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LossRate(u32);

impl LossRate {
    /// No loss.
    pub const NONE: LossRate = LossRate(0);

    /// The rate of `ppm` parts per million, `None` above 1,000,000.
    pub fn from_ppm(ppm: u32) -> Option<LossRate> {
        (ppm <= MILLION).then_some(LossRate(ppm))
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// The fraction, 0.0 to 1.0.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / f64::from(MILLION)
    }
}

impl fmt::Display for LossRate {
    /// `1%`, `0.1%`, `0.0125%`: the shortest exact percentage.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, part) = (self.0 / 10_000, self.0 % 10_000);
        if part == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{part:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

/// Why a loss rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a loss rate is a percentage from 0 to 100 with at most 4 decimals (e.g. 1% or 0.1%), not '{0}'"
)]
pub struct LossRateError(String);

impl FromStr for LossRate {
    type Err = LossRateError;

    fn from_str(s: &str) -> Result<LossRate, LossRateError> {
        let bad = || LossRateError(s.to_owned());
        let number = s.trim().strip_suffix('%').unwrap_or(s.trim());
        let (whole, part) = number.split_once('.').unwrap_or((number, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(part) || part.len() > 4 {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let part: u32 = format!("{part:0<4}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(10_000)
            .and_then(|w| w.checked_add(part))
            .and_then(LossRate::from_ppm)
            .ok_or_else(bad)
    }
}

/// Where on an interface the filter drops frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Frames the interface sends (on gen0 of the bed: toward the server).
    Egress,
    /// Frames the interface receives (on gen0 of the bed: toward the client).
    Ingress,
}

impl Hook {
    /// Both, egress first.
    pub const BOTH: [Hook; 2] = [Hook::Egress, Hook::Ingress];

    /// `egress` or `ingress`, as tc names them.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Egress => "egress",
            Hook::Ingress => "ingress",
        }
    }

    /// Makes each buffer this hook sees one frame (see the module docs), or undoes that.
    fn one_frame_per_buffer(self, ifname: &str, on: bool) -> Result<(), Error> {
        match self {
            Hook::Egress => {
                let segs = if on { 1 } else { GSO_MAX_SEGS }.to_string();
                command(
                    ifname,
                    "ip",
                    &["link", "set", "dev", ifname, "gso_max_segs", &segs],
                )
            }
            Hook::Ingress => {
                let gro = if on { "off" } else { "on" };
                command(ifname, "ethtool", &["-K", ifname, "gro", gro])
            }
        }
    }
}

/// An interface's impairment on one hook as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpairStatus {
    /// The configured loss rate.
    pub loss: LossRate,
    /// IP frames the filter has seen since it was attached.
    pub seen: u64,
    /// Of those, the frames it dropped.
    pub dropped: u64,
}

/// The impairment filters of an interface (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Impairment;

impl Impairment {
    /// Drops `loss` of the IP frames `ifname` sends or receives (`hook`): attaches the
    /// filter (counters from zero) or, if it is there, changes the rate in place
    /// (counters go on).
    pub fn set(ifname: &str, hook: Hook, loss: LossRate) -> Result<ImpairStatus, Error> {
        let ifindex = ifindex(ifname)?;
        hook.one_frame_per_buffer(ifname, true)?;
        if find(ifname, ifindex, hook)?.is_none() {
            let prog = sys::load_impair().map_err(|cause| match cause.kind() {
                libbpf_rs::ErrorKind::PermissionDenied => Error::PermissionDenied,
                _ => Error::Load { cause },
            })?;
            sys::tc_attach(std::os::fd::AsFd::as_fd(&prog), ifindex, hook)
                .map_err(|cause| tc_error(ifname, "attaching the impairment filter", cause))?;
        }
        let maps = find(ifname, ifindex, hook)?.ok_or_else(|| {
            tc_error(
                ifname,
                "finding the filter just attached",
                io::ErrorKind::NotFound.into(),
            )
        })?;
        maps.config
            .update(
                &0u32.to_ne_bytes(),
                &loss.ppm().to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|cause| Error::Map {
                what: format!("setting the loss rate on {ifname}"),
                cause,
            })?;
        maps.status(ifname)
    }

    /// The impairment on `ifname`'s `hook`, `None` if it has none.
    pub fn status(ifname: &str, hook: Hook) -> Result<Option<ImpairStatus>, Error> {
        let ifindex = ifindex(ifname)?;
        find(ifname, ifindex, hook)?
            .map(|maps| maps.status(ifname))
            .transpose()
    }

    /// Removes the filter from `ifname`'s `hook` and returns what it had counted; `None`
    /// if it had none.
    pub fn off(ifname: &str, hook: Hook) -> Result<Option<ImpairStatus>, Error> {
        let ifindex = ifindex(ifname)?;
        let last = Impairment::status(ifname, hook)?;
        sys::tc_detach(ifindex, hook)
            .map_err(|cause| tc_error(ifname, "removing the impairment filter", cause))?;
        hook.one_frame_per_buffer(ifname, false)?;
        Ok(last)
    }
}

/// `ifname`'s index; first routes libbpf's messages to the log (a query of an interface
/// without a clsact qdisc makes libbpf print the kernel's complaint).
fn ifindex(ifname: &str) -> Result<u32, Error> {
    crate::steering::route_libbpf_log();
    sys::ifindex(ifname).ok_or_else(|| Error::NoSuchInterface {
        ifname: ifname.to_owned(),
    })
}

/// The kernel's default `gso_max_segs` (`GSO_MAX_SEGS`).
const GSO_MAX_SEGS: u32 = 65_535;

/// Runs `program args` about `ifname` in the calling thread's network namespace (a
/// child process starts in its creator thread's).
fn command(ifname: &str, program: &str, args: &[&str]) -> Result<(), Error> {
    let what = format!("{program} {}", args.join(" "));
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|cause| tc_error(ifname, &what, cause))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Err(tc_error(ifname, &what, io::Error::other(why)))
}

fn tc_error(ifname: &str, what: &str, cause: io::Error) -> Error {
    match cause.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied,
        _ => Error::Tc {
            ifname: ifname.to_owned(),
            what: what.to_owned(),
            cause,
        },
    }
}

/// The maps of the filter attached to `ifindex`.
struct Maps {
    config: MapHandle,
    counts: MapHandle,
}

impl Maps {
    fn status(&self, ifname: &str) -> Result<ImpairStatus, Error> {
        let map_error = |cause| Error::Map {
            what: format!("reading the impairment of {ifname}"),
            cause,
        };
        let key = 0u32.to_ne_bytes();
        let config = self.config.lookup(&key, MapFlags::ANY).map_err(map_error)?;
        let ppm = config
            .as_deref()
            .and_then(|v| v.get(..4))
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let per_cpu = self
            .counts
            .lookup_percpu(&key, MapFlags::ANY)
            .map_err(map_error)?
            .unwrap_or_default();
        let field = |v: &[u8], at: usize| {
            v.get(at..at + 8)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
        };
        Ok(ImpairStatus {
            loss: LossRate::from_ppm(ppm).unwrap_or(LossRate(MILLION)),
            seen: per_cpu.iter().map(|v| field(v, 0)).sum(),
            dropped: per_cpu.iter().map(|v| field(v, 8)).sum(),
        })
    }
}

/// The filter on `ifindex`'s `hook` and its maps; `None` if there is none. A program
/// of another name at the filter's handle and priority is an error.
fn find(ifname: &str, ifindex: u32, hook: Hook) -> Result<Option<Maps>, Error> {
    let Some(id) = sys::tc_query(ifindex, hook)
        .map_err(|cause| tc_error(ifname, "looking for the impairment filter", cause))?
    else {
        return Ok(None);
    };
    let opts = ProgInfoQueryOptions::default().include_map_ids(true);
    let info = ProgInfoIter::with_query_opts(opts)
        .find(|p| p.id == id)
        .ok_or_else(|| {
            tc_error(
                ifname,
                "reading the filter's program",
                io::ErrorKind::NotFound.into(),
            )
        })?;
    if info.name != "impair" {
        let theirs = format!(
            "tc {} handle {TC_HANDLE:#x} holds program {:?}, not the impairment filter",
            hook.name(),
            info.name
        );
        return Err(tc_error(
            ifname,
            "looking for the impairment filter",
            io::Error::other(theirs),
        ));
    }
    let (mut config, mut counts) = (None, None);
    for map in info.map_ids {
        let handle = MapHandle::from_map_id(map).map_err(|cause| Error::Map {
            what: format!("opening map {map} of the filter on {ifname}"),
            cause,
        })?;
        match handle.name().to_str() {
            Some("impair_config") => config = Some(handle),
            Some("impair_counts") => counts = Some(handle),
            _ => {}
        }
    }
    match (config, counts) {
        (Some(config), Some(counts)) => Ok(Some(Maps { config, counts })),
        _ => Err(tc_error(
            ifname,
            "finding the filter's maps",
            io::ErrorKind::NotFound.into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rates_parse_and_print_as_percentages() {
        for (text, ppm, shown) in [
            ("0", 0, "0%"),
            ("0%", 0, "0%"),
            ("0.1%", 1_000, "0.1%"),
            ("1%", 10_000, "1%"),
            ("5", 50_000, "5%"),
            ("12.5%", 125_000, "12.5%"),
            ("0.0125%", 125, "0.0125%"),
            ("100%", 1_000_000, "100%"),
        ] {
            let rate: LossRate = text.parse().unwrap();
            assert_eq!(rate.ppm(), ppm, "{text}");
            assert_eq!(rate.to_string(), shown, "{text}");
        }
        for bad in [
            "", "%", "-1%", "100.1%", "1e2", "0.00001%", "1.%x", "abc", ".5%",
        ] {
            assert!(bad.parse::<LossRate>().is_err(), "{bad}");
        }
        assert!((LossRate::from_ppm(10_000).unwrap().fraction() - 0.01).abs() < 1e-12);
        assert_eq!(LossRate::from_ppm(1_000_001), None);
    }
}
