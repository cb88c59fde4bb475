//! What the daemon reads about the host before it starts: the interface (from sysfs,
//! which `ip netns exec` remounts for the namespace it enters), the process's
//! capabilities, and the addresses the host already has (the service address must not
//! be one: the XDP program would take its ARP and the host's own traffic would die).

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::StartError;
use crate::sys::{self, IfAddr};

fn sys(iface: &str) -> PathBuf {
    PathBuf::from("/sys/class/net").join(iface)
}

/// Checks the interface exists; interface names never contain `/` and fit in 15 bytes.
pub(crate) fn check_iface(iface: &str) -> Result<(), StartError> {
    if iface.is_empty() || iface.len() > 15 || iface.contains('/') || !sys(iface).exists() {
        return Err(StartError::NoSuchInterface(iface.to_owned()));
    }
    Ok(())
}

/// Checks that no interface of this network namespace has `addr` (`iface` is the
/// dataplane's: a match there is named first): the kernel would answer for it too, and
/// the XDP program would take its traffic from the kernel. [`run`](crate::run) checks
/// it at start; so does any other user of the steering program (`c10m-bench reflect`).
pub fn check_addr_free(addr: impl Into<IpAddr>, iface: &str) -> Result<(), StartError> {
    let host = sys::host_addrs().map_err(StartError::HostAddresses)?;
    addr_free(addr.into(), iface, &host)
}

/// [`check_addr_free`] against a given list of the host's addresses.
fn addr_free(addr: IpAddr, iface: &str, host: &[IfAddr]) -> Result<(), StartError> {
    let mut taken = host.iter().filter(|a| a.addr == addr);
    let first = taken
        .clone()
        .find(|a| a.iface == iface)
        .or_else(|| taken.next());
    match first {
        None => Ok(()),
        Some(a) => Err(StartError::AddressInUse {
            addr,
            iface: a.iface.clone(),
            prefix: a.prefix,
        }),
    }
}

/// The interface's MAC address.
pub(crate) fn mac(iface: &str) -> Result<[u8; 6], StartError> {
    let text = fs::read_to_string(sys(iface).join("address"))
        .map_err(|_| StartError::NoSuchInterface(iface.to_owned()))?;
    parse_mac(text.trim()).ok_or_else(|| StartError::NoMac {
        iface: iface.to_owned(),
        found: text.trim().to_owned(),
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The interface's rx queue count (`/sys/class/net/IFACE/queues/rx-*`).
pub(crate) fn rx_queues(iface: &str) -> u32 {
    fs::read_dir(sys(iface).join("queues")).map_or(1, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
            .count() as u32
    })
}

/// Whether the process may attach XDP and open AF_XDP sockets: CAP_NET_ADMIN,
/// CAP_NET_RAW and CAP_BPF (or CAP_SYS_ADMIN). Unknown means yes; the kernel decides.
pub(crate) fn privileged() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return true;
    };
    let Some(caps) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return true;
    };
    let has = |bit: u32| caps & (1 << bit) != 0;
    has(12) && has(13) && (has(39) || has(21))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:c6:12:00:02"),
            Some([2, 0, 0xc6, 0x12, 0, 2])
        );
        assert_eq!(parse_mac("02:00:c6:12:00"), None);
        assert_eq!(parse_mac("02:00:c6:12:00:02:03"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn the_hosts_own_address_is_refused() {
        let ip = |a: [u8; 4]| IpAddr::from(a);
        let a = |iface: &str, addr: IpAddr, prefix| IfAddr {
            iface: iface.into(),
            addr,
            prefix,
        };
        let dut6: IpAddr = "2001:2::2".parse().unwrap();
        let host = [
            a("lo", ip([127, 0, 0, 1]), 8),
            a("eth9", ip([198, 18, 0, 2]), 16),
            a("dut0", ip([198, 18, 0, 2]), 24),
            a("dut0", dut6, 64),
        ];
        assert!(addr_free(ip([198, 18, 0, 10]), "dut0", &host).is_ok());
        assert!(addr_free(ip([198, 18, 0, 10]), "dut0", &[]).is_ok());
        let e = addr_free(ip([198, 18, 0, 2]), "dut0", &host)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "198.18.0.2 is already an address of this host (dut0): the dataplane needs an \
             address of its own — pick another in 198.18.0.0/24, or remove it with \
             'ip addr del 198.18.0.2/24 dev dut0'"
        );
        let e = addr_free(ip([198, 18, 0, 2]), "other0", &host[..2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("(eth9)") && e.contains("198.18.0.0/16"), "{e}");
        let e = addr_free(ip([127, 0, 0, 1]), "dut0", &host)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dev lo"), "{e}");
        // IPv6: the host's own address is refused, another in its /64 is not.
        assert!(addr_free("2001:2::10".parse().unwrap(), "dut0", &host).is_ok());
        let e = addr_free(dut6, "dut0", &host).unwrap_err().to_string();
        assert!(
            e.contains("pick another in 2001:2::/64")
                && e.contains("'ip addr del 2001:2::2/64 dev dut0'"),
            "{e}"
        );
    }

    #[test]
    fn loopback_exists_and_bogus_does_not() {
        assert!(check_iface("lo").is_ok());
        assert!(check_iface("no-such-if0").is_err());
        assert!(check_iface("../lo").is_err());
    }
}
