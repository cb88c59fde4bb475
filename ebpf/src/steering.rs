//! [`Steering`]: the program attached to one interface, and its maps.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::str::FromStr;
use std::sync::Once;

use libbpf_rs::{MapCore, MapFlags, MapHandle, PrintLevel};

use crate::maps::{self, Counters, MAX_QUEUES, Proto, QueueCookies, XdpCookies};
use crate::{Error, sys};

/// How the program runs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, otherwise generic (with a warning).
    #[default]
    Auto,
    /// Native (driver) XDP: runs before the kernel allocates an `sk_buff`.
    Native,
    /// Generic (SKB) XDP: works on any interface, after the `sk_buff` exists; slower,
    /// and AF_XDP runs in copy mode only.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// An XDP mode name that is not `auto`, `native` (`drv`) or `generic` (`skb`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown XDP mode {0:?}: expected auto, native or generic")]
pub struct XdpModeError(pub String);

impl FromStr for XdpMode {
    type Err = XdpModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            _ => Err(XdpModeError(s.to_owned())),
        }
    }
}

/// The steering program, attached to one interface through a bpf_link.
///
/// Dropping it closes the link, which detaches the program; so does the process
/// exiting in any way, `kill -9` included. The kernel frees the program and maps once
/// the last descriptor to them is gone.
pub struct Steering {
    // Declared first so it is dropped first: detach before the maps' handles go.
    link: OwnedFd,
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    prog_id: u32,
    loaded: sys::Loaded,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("prog_id", &self.prog_id)
            .field("link_fd", &self.link.as_raw_fd())
            .finish()
    }
}

impl Steering {
    /// Loads the program through the kernel verifier and attaches it to `ifname` (in
    /// the calling thread's network namespace) with a bpf_link.
    ///
    /// The maps start empty: nothing is steered until services, addresses and
    /// sockets are registered, and all traffic passes to the kernel meanwhile.
    pub fn attach(ifname: &str, mode: XdpMode) -> Result<Steering, Error> {
        route_libbpf_log();
        let ifindex = sys::ifindex(ifname).ok_or_else(|| Error::NoSuchInterface {
            ifname: ifname.to_owned(),
        })?;
        if !has_bpf_capabilities() {
            return Err(Error::PermissionDenied);
        }
        let loaded = sys::load().map_err(|cause| Error::Load { cause })?;
        let (link, mode) = match mode {
            XdpMode::Native | XdpMode::Generic => (link(&loaded, ifname, ifindex, mode)?, mode),
            XdpMode::Auto => match link(&loaded, ifname, ifindex, XdpMode::Native) {
                Ok(link) => (link, XdpMode::Native),
                Err(Error::NativeUnsupported { .. }) => {
                    tracing::warn!(
                        "driver of {ifname} does not support native XDP: using generic mode \
                         (slower; AF_XDP in copy mode)"
                    );
                    (
                        link(&loaded, ifname, ifindex, XdpMode::Generic)?,
                        XdpMode::Generic,
                    )
                }
                Err(err) => return Err(err),
            },
        };
        let prog_id = libbpf_rs::Program::id_from_fd(loaded.prog.as_fd()).unwrap_or(0);
        tracing::info!(
            "XDP program id {prog_id} attached to {ifname} (ifindex {ifindex}) in {mode} mode"
        );
        Ok(Steering {
            link,
            ifname: ifname.to_owned(),
            ifindex,
            mode,
            prog_id,
            loaded,
        })
    }

    /// The mode actually attached: [`XdpMode::Native`] or [`XdpMode::Generic`].
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The kernel's id of the loaded program, as `bpftool prog show id N` takes it.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Registers the service `addr:port`: IPv4 `proto` traffic to it is steered to the
    /// AF_XDP sockets. For an IPv6 address (whose TCP is steered on every port by
    /// [`add_address`](Self::add_address)) UDP to it is steered, and a TCP service
    /// carries its SYN-cookie mode ([`set_syn_cookies`](Self::set_syn_cookies)). Adding a
    /// service twice is not an error.
    pub fn add_service(
        &self,
        addr: impl Into<IpAddr>,
        proto: Proto,
        port: u16,
    ) -> Result<(), Error> {
        let addr = addr.into();
        let (map, key) = self.service_key(addr, proto, port);
        let value = maps::service_value(XdpCookies::Off);
        update(map, &key, &value, || {
            format!(
                "adding service {addr} {proto}/{port} (at most {})",
                maps::MAX_SERVICES
            )
        })
    }

    /// The service map of `addr`'s family and the service's key there.
    fn service_key(&self, addr: IpAddr, proto: Proto, port: u16) -> (&MapHandle, Vec<u8>) {
        let map = match addr {
            IpAddr::V4(_) => &self.loaded.services,
            IpAddr::V6(_) => &self.loaded.services6,
        };
        (map, maps::service_key(addr, proto, port))
    }

    /// Sets whether the program answers the SYNs of the TCP service `addr:port` (IPv4 or
    /// IPv6) with SYN cookies itself (see the crate docs); [`XdpCookies::Off`] when it is
    /// added. The service must have been added ([`Error::NoSuchService`] otherwise).
    pub fn set_syn_cookies(
        &self,
        addr: impl Into<IpAddr>,
        port: u16,
        cookies: XdpCookies,
    ) -> Result<(), Error> {
        let (addr, proto) = (addr.into(), Proto::Tcp);
        let (map, key) = self.service_key(addr, proto, port);
        match map.update(&key, &maps::service_value(cookies), MapFlags::EXIST) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == libbpf_rs::ErrorKind::NotFound => {
                Err(Error::NoSuchService { addr, proto, port })
            }
            Err(cause) => Err(Error::Map {
                what: format!("setting the SYN cookies of service {addr} {proto}/{port}"),
                cause,
            }),
        }
    }

    /// Publishes rx `queue`'s SYN-cookie keys and pressure for the program (`None`: it
    /// answers no SYN of that queue). The entry is written under its lock, so the
    /// program never reads half of it. One system call: for the worker's periodic
    /// control work, not its packet path.
    pub fn publish_cookie_keys(
        &self,
        queue: u32,
        keys: Option<&QueueCookies>,
    ) -> Result<(), Error> {
        check_queue(queue)?;
        let value = maps::cookie_keys_value(keys);
        self.loaded
            .cookie_keys
            .update(&queue.to_ne_bytes(), &value, MapFlags::LOCK)
            .map_err(|cause| Error::Map {
                what: format!("publishing the SYN-cookie keys of rx queue {queue}"),
                cause,
            })
    }

    /// Removes the service `addr:port`: its traffic goes to the kernel again (for an
    /// IPv6 TCP service: its SYNs go to the stack, no longer answered here).
    pub fn remove_service(
        &self,
        addr: impl Into<IpAddr>,
        proto: Proto,
        port: u16,
    ) -> Result<(), Error> {
        let addr = addr.into();
        let (map, key) = self.service_key(addr, proto, port);
        delete(map, &key, || {
            format!("removing service {addr} {proto}/{port}")
        })?
        .then_some(())
        .ok_or(Error::NoSuchService { addr, proto, port })
    }

    /// Steers IPv4 `proto` traffic to any address in `addr/len` (any port) to the
    /// AF_XDP sockets: for a client whose replies come back to a whole source range
    /// (`c10m-bench conns`). Services and prefixes add up. `len` is at most 32; the
    /// address bits past it are ignored. Adding a prefix twice is not an error.
    pub fn add_prefix(&self, addr: Ipv4Addr, len: u8, proto: Proto) -> Result<(), Error> {
        self.set_prefix(addr, len, proto, maps::PREFIX_STEER)
    }

    /// Counts IPv4 `proto` traffic to any address in `addr/len` by TCP flags in the
    /// program's `tallied_*` [`Counters`] and drops it: for a flood generator, whose
    /// spoofed sources get replies it only needs to count, at the cost of a map
    /// update rather than a copy to userspace. Replaces a steered prefix of the same
    /// key ([`Steering::remove_prefix`] removes either).
    pub fn tally_prefix(&self, addr: Ipv4Addr, len: u8, proto: Proto) -> Result<(), Error> {
        self.set_prefix(addr, len, proto, maps::PREFIX_TALLY)
    }

    fn set_prefix(&self, addr: Ipv4Addr, len: u8, proto: Proto, how: u32) -> Result<(), Error> {
        let key = maps::prefix_key(addr, len, proto);
        update(&self.loaded.prefixes, &key, &how.to_ne_bytes(), || {
            format!(
                "adding prefix {addr}/{len} {proto} (at most {})",
                maps::MAX_PREFIXES
            )
        })
    }

    /// Stops steering `proto` traffic to `addr/len`; `Ok(false)` if it was not steered.
    pub fn remove_prefix(&self, addr: Ipv4Addr, len: u8, proto: Proto) -> Result<bool, Error> {
        let key = maps::prefix_key(addr, len, proto);
        delete(&self.loaded.prefixes, &key, || {
            format!("removing prefix {addr}/{len} {proto}")
        })
    }

    /// Steers ARP for an IPv4 `addr` and ICMP to it, or for an IPv6 `addr` TCP and
    /// ICMPv6 to it and the neighbour solicitations for it, to the AF_XDP sockets, so the
    /// userspace stack answers them (IPv4 TCP goes by [`add_service`](Self::add_service)).
    /// Adding an address twice is not an error.
    pub fn add_address(&self, addr: impl Into<IpAddr>) -> Result<(), Error> {
        let addr = addr.into();
        let (map, key) = self.address_key(addr);
        update(map, &key, &1u32.to_ne_bytes(), || {
            format!("adding address {addr} (at most {})", maps::MAX_ADDRESSES)
        })
    }

    /// Stops steering what [`add_address`](Self::add_address) steered for `addr`.
    pub fn remove_address(&self, addr: impl Into<IpAddr>) -> Result<(), Error> {
        let addr = addr.into();
        let (map, key) = self.address_key(addr);
        delete(map, &key, || format!("removing address {addr}"))?
            .then_some(())
            .ok_or(Error::NoSuchAddress { addr })
    }

    /// The map an address lives in and its key there (wire order).
    fn address_key(&self, addr: IpAddr) -> (&MapHandle, Vec<u8>) {
        match addr {
            IpAddr::V4(a) => (&self.loaded.addrs, maps::addr_key(a).to_vec()),
            IpAddr::V6(a) => (&self.loaded.addrs6, a.octets().to_vec()),
        }
    }

    /// Sends the dataplane's frames arriving on rx `queue` to the AF_XDP socket `xsk_fd`,
    /// replacing any socket registered before. The socket must have a UMEM and an RX
    /// ring, and should be bound to this interface and queue: the kernel drops frames
    /// redirected to a socket bound elsewhere. The map does not keep the socket alive:
    /// closing it removes it from the map, and its frames count as `no_xsk` again.
    pub fn register_xsk(&self, queue: u32, xsk_fd: BorrowedFd<'_>) -> Result<(), Error> {
        check_queue(queue)?;
        let fd = u32::try_from(xsk_fd.as_raw_fd()).expect("a valid descriptor is not negative");
        update(
            &self.loaded.xsks,
            &queue.to_ne_bytes(),
            &fd.to_ne_bytes(),
            || {
                format!(
                    "registering the AF_XDP socket of rx queue {queue} (it needs a UMEM and an RX ring)"
                )
            },
        )
    }

    /// Removes rx `queue`'s socket: its frames for the dataplane go to the kernel and
    /// count as `no_xsk`, and the program answers none of its SYNs any more (its cookie
    /// keys are withdrawn). Not an error if none was registered.
    pub fn unregister_xsk(&self, queue: u32) -> Result<(), Error> {
        check_queue(queue)?;
        self.publish_cookie_keys(queue, None)?;
        delete(&self.loaded.xsks, &queue.to_ne_bytes(), || {
            format!("unregistering the AF_XDP socket of rx queue {queue}")
        })
        .map(drop)
    }

    /// The counters, summed over CPUs. Reading them does not stop the program.
    pub fn counters(&self) -> Result<Counters, Error> {
        let values = self
            .loaded
            .counters
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|cause| Error::Map {
                what: "reading the counters".into(),
                cause,
            })?
            .unwrap_or_default();
        Ok(Counters::sum(&values))
    }
}

/// Attaches in one explicit mode, turning the kernel's refusals into operator errors.
fn link(loaded: &sys::Loaded, ifname: &str, ifindex: u32, mode: XdpMode) -> Result<OwnedFd, Error> {
    let flags = match mode {
        XdpMode::Native => sys::XDP_FLAGS_DRV_MODE,
        XdpMode::Generic | XdpMode::Auto => sys::XDP_FLAGS_SKB_MODE,
    };
    sys::link_xdp(loaded.prog.as_fd(), ifindex, flags).map_err(|cause| {
        let ifname = ifname.to_owned();
        match cause.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Error::PermissionDenied,
            Some(libc::ENODEV) => Error::NoSuchInterface { ifname },
            // The kernel: "Underlying driver does not support XDP in native mode".
            Some(libc::EOPNOTSUPP) if mode == XdpMode::Native => {
                Error::NativeUnsupported { ifname }
            }
            // EBUSY: a link or program in this mode; EEXIST: a program in the other mode.
            Some(libc::EBUSY | libc::EEXIST) => Error::AlreadyAttached { ifname },
            _ => Error::Attach {
                ifname,
                mode,
                cause,
            },
        }
    })
}

fn check_queue(queue: u32) -> Result<(), Error> {
    if queue < MAX_QUEUES {
        Ok(())
    } else {
        Err(Error::QueueOutOfRange {
            queue,
            max: MAX_QUEUES,
        })
    }
}

fn update(
    map: &MapHandle,
    key: &[u8],
    value: &[u8],
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    map.update(key, value, MapFlags::ANY)
        .map_err(|cause| Error::Map {
            what: what(),
            cause,
        })
}

/// Deletes `key`; `Ok(false)` if it was not there.
fn delete(map: &MapHandle, key: &[u8], what: impl FnOnce() -> String) -> Result<bool, Error> {
    match map.delete(key) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == libbpf_rs::ErrorKind::NotFound => Ok(false),
        Err(cause) => Err(Error::Map {
            what: what(),
            cause,
        }),
    }
}

/// Whether the effective capability set allows loading and attaching XDP:
/// CAP_NET_ADMIN and one of CAP_BPF or CAP_SYS_ADMIN. Unknown means yes, and the
/// kernel decides.
fn has_bpf_capabilities() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Some(caps) = effective_capabilities() else {
        return true;
    };
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Whether the driver of `ifname` (in the calling thread's network namespace) says it
/// does AF_XDP zero-copy: `NETDEV_XDP_ACT_XSK_ZEROCOPY` among the XDP features it reports
/// (Linux 6.3+). `None` when nothing is said: an older kernel, or no such interface.
/// Asking first spares a socket the zero-copy attempt that fails, after which the kernel
/// pins the whole UMEM a second time for copy mode.
pub fn xsk_zero_copy(ifname: &str) -> Option<bool> {
    /// `NETDEV_XDP_ACT_XSK_ZEROCOPY` of `include/uapi/linux/netdev.h`.
    const XSK_ZEROCOPY: u64 = 1 << 3;
    let features = sys::xdp_features(sys::ifindex(ifname)?)?;
    Some(features & XSK_ZEROCOPY != 0)
}

/// Sends libbpf's messages to the `log` crate (target `libbpf`) instead of stderr:
/// warnings at warn level, the rest (the verifier log among them) at debug level.
/// Process-wide, set on the first attach.
pub(crate) fn route_libbpf_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let forward = |level: PrintLevel, message: String| {
            let message = message.trim_end();
            match level {
                PrintLevel::Warn => tracing::warn!(target: "libbpf", "{message}"),
                PrintLevel::Info | PrintLevel::Debug => {
                    tracing::debug!(target: "libbpf", "{message}")
                }
            }
        };
        libbpf_rs::set_print(Some((PrintLevel::Debug, forward)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [XdpMode::Auto, XdpMode::Native, XdpMode::Generic] {
            assert_eq!(mode.to_string().parse::<XdpMode>(), Ok(mode));
        }
        assert_eq!("skb".parse::<XdpMode>(), Ok(XdpMode::Generic));
        let err = "offload".parse::<XdpMode>().unwrap_err();
        assert_eq!(err, XdpModeError("offload".into()));
        assert_eq!(
            err.to_string(),
            "unknown XDP mode \"offload\": expected auto, native or generic"
        );
    }

    #[test]
    fn reads_effective_capabilities() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn steering_can_be_shared_between_threads() {
        fn check<T: Send + Sync>() {}
        check::<Steering>();
    }

    #[test]
    fn queue_range() {
        assert!(check_queue(MAX_QUEUES - 1).is_ok());
        assert!(matches!(
            check_queue(MAX_QUEUES),
            Err(Error::QueueOutOfRange { .. })
        ));
    }
}
