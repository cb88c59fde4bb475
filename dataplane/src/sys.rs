//! The few system calls libc has no safe wrapper for: thread placement (keeps the control
//! thread and the memory warmer off the workers' cores), the host's own IPv4 addresses
//! (`getifaddrs`) and the interface's liveness (`SIOCGIFINDEX` / `SIOCGIFFLAGS` ioctls), and killing a process
//! group (an `--on-state` command past its timeout, with what it started).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Restricts the calling thread (`who`, for the log) to the online cores not in `avoid`
/// (all of them if that leaves none). Logs, never fails: placement is an optimisation.
pub(crate) fn avoid_cores(avoid: &[usize], who: &str) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let allowed: Vec<usize> = (0..cores.max(1)).filter(|c| !avoid.contains(c)).collect();
    if allowed.is_empty() {
        tracing::warn!("every core runs a worker: {who} shares one");
        return;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it for indices
    // below CPU_SETSIZE (checked), and sched_setaffinity reads `size_of` bytes of it for
    // the calling thread (pid 0).
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in allowed.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        tracing::warn!(
            "could not keep {who} off the workers' cores: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One IPv4 address the host has on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfAddr {
    /// The interface's name.
    pub(crate) iface: String,
    /// The address.
    pub(crate) addr: IpAddr,
    /// Its prefix length (from the netmask).
    pub(crate) prefix: u8,
}

/// The IPv4 and IPv6 addresses of every interface in the calling thread's network
/// namespace (`getifaddrs(3)`, a netlink dump).
pub(crate) fn host_addrs() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores the head of a list it allocated in `head` on success;
    // it is freed with freeifaddrs below, once, after the last read.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is a non-null element of the list, which lives until freeifaddrs.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points to a sockaddr, whose first field is the family.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        let (addr, bits) = match i32::from(family) {
            libc::AF_INET => {
                // SAFETY: for an AF_INET entry, ifa_addr and (if non-null) ifa_netmask
                // point to sockaddr_in structures owned by the list (read unaligned, to
                // assume nothing).
                let sin = |sa: *const libc::sockaddr| unsafe {
                    std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>())
                };
                let addr = Ipv4Addr::from(u32::from_be(sin(ifa.ifa_addr).sin_addr.s_addr));
                let bits = (!ifa.ifa_netmask.is_null())
                    .then(|| sin(ifa.ifa_netmask).sin_addr.s_addr.count_ones());
                (IpAddr::V4(addr), bits.unwrap_or(32))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, sockaddr_in6 structures for an AF_INET6 entry.
                let sin6 = |sa: *const libc::sockaddr| unsafe {
                    std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>())
                };
                let addr = Ipv6Addr::from(sin6(ifa.ifa_addr).sin6_addr.s6_addr);
                let bits = (!ifa.ifa_netmask.is_null()).then(|| {
                    let mask = sin6(ifa.ifa_netmask).sin6_addr.s6_addr;
                    mask.iter().map(|b| b.count_ones()).sum::<u32>()
                });
                (IpAddr::V6(addr), bits.unwrap_or(128))
            }
            _ => continue,
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let iface = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(IfAddr {
            iface,
            addr,
            prefix: bits as u8,
        });
    }
    // SAFETY: `head` came from getifaddrs and nothing borrowed from the list remains.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Watches one interface: whether it still exists with the same index and is
/// administratively up. Two ioctls on a datagram socket per look, no netlink state.
#[derive(Debug)]
pub(crate) struct LinkWatch {
    sock: OwnedFd,
    name: [libc::c_char; libc::IFNAMSIZ],
    index: libc::c_int,
}

impl LinkWatch {
    /// Starts watching `iface` (in the calling thread's network namespace) as it is now.
    pub(crate) fn new(iface: &str) -> io::Result<LinkWatch> {
        let bytes = iface.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (d, &s) in name.iter_mut().zip(bytes) {
            *d = s as libc::c_char;
        }
        // SAFETY: socket(2) with constant arguments; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut w = LinkWatch {
            sock,
            name,
            index: 0,
        };
        // SAFETY: reading the `ifru_ifindex` member SIOCGIFINDEX just wrote.
        w.index = unsafe { w.ioctl(libc::SIOCGIFINDEX)?.ifr_ifru.ifru_ifindex };
        Ok(w)
    }

    /// Whether the interface is still the one watched (same index) and up (IFF_UP).
    /// Carrier loss does not count: a cable can come back, and the workers wait.
    pub(crate) fn alive(&self) -> bool {
        let index = self.ioctl(libc::SIOCGIFINDEX);
        // SAFETY: reading the union members the two ioctls just wrote.
        let same = index.is_ok_and(|r| unsafe { r.ifr_ifru.ifru_ifindex } == self.index);
        let flags = self.ioctl(libc::SIOCGIFFLAGS);
        // SAFETY: as above.
        let up = flags.is_ok_and(|r| unsafe { r.ifr_ifru.ifru_flags } & libc::IFF_UP as i16 != 0);
        same && up
    }

    fn ioctl(&self, request: libc::c_ulong) -> io::Result<libc::ifreq> {
        // SAFETY: an all-zero ifreq is valid (name, then a union of plain data).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name = self.name;
        // SAFETY: SIOCGIFINDEX and SIOCGIFFLAGS read the NUL-terminated name and write
        // one member of the union, all inside `req`, which outlives the call.
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), request as _, &mut req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(req)
    }
}

/// Sends SIGKILL to process group `pgid` (a child started as its own group's leader).
#[cfg(feature = "management")]
pub(crate) fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: kill(2) takes plain integers; a negative pid names the group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_127_0_0_1_slash_8_and_is_up() {
        let addrs = host_addrs().unwrap();
        let lo = IfAddr {
            iface: "lo".into(),
            addr: Ipv4Addr::LOCALHOST.into(),
            prefix: 8,
        };
        assert!(addrs.contains(&lo), "{addrs:?}");
        assert!(LinkWatch::new("lo").unwrap().alive());
        assert!(LinkWatch::new("no-such-if0").is_err());
        assert!(LinkWatch::new("sixteen-bytes-if").is_err());
    }
}
