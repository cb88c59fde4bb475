//! What the AF_XDP generators (`conns`, `xsk`, `rps`, `cps`) share about the host:
//! interface facts from sysfs, MAC addresses, and the benchmarking range they must stay in.

use std::fs;
use std::net::Ipv4Addr;

use anyhow::bail;

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

/// Whether `a` is in the benchmarking range 198.18.0.0/15 (RFC 2544).
pub(crate) fn in_bench_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 198 && (o[1] == 18 || o[1] == 19)
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
}
