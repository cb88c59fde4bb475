//! The program's verdicts on hand-made frames, through `BPF_PROG_TEST_RUN`: loaded by
//! the kernel verifier, never attached, so no interface or namespace is involved.
//! Needs root; skipped otherwise (failed when `CI=true`). The SYN-cookie answers are
//! in `tests/cookies.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags};

use crate::maps::{self, Counters, Proto, XdpCookies};
use crate::sys;

mod cookies;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 10);
const KERNEL: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);

const SERVICE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 0x10);
const KERNEL6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x200, 0, 0, 0, 1);

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned));
    euid.as_deref() == Some("0")
}

/// False (after saying so) when the test cannot run here; panics under `CI=true`.
fn privileged() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test needs root (BPF_PROG_TEST_RUN): CI must run it as root"
    );
    eprintln!("skipped: needs root");
    false
}

/// Ethernet header with `ethertype`, optionally behind one 802.1Q tag, then `payload`.
fn eth(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if let Some(id) = vlan {
        frame.extend(0x8100u16.to_be_bytes());
        frame.extend(id.to_be_bytes());
    }
    frame.extend(ethertype.to_be_bytes());
    frame.extend(payload);
    frame
}

/// An IPv4 packet; `options` bytes go after the fixed header (IHL grows with them).
fn ipv4(dst: Ipv4Addr, proto: u8, options: &[u8], frag_off: u16, payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut p = vec![0x40 | ihl as u8, 0];
    p.extend(total.to_be_bytes());
    p.extend([0, 1]);
    p.extend(frag_off.to_be_bytes());
    p.extend([64, proto, 0, 0]);
    p.extend(CLIENT.octets());
    p.extend(dst.octets());
    p.extend(options);
    p.extend(payload);
    p
}

/// The first 20 bytes of a TCP header, or a UDP header plus padding: ports first.
fn l4(dport: u16) -> Vec<u8> {
    let mut h = 40000u16.to_be_bytes().to_vec();
    h.extend(dport.to_be_bytes());
    h.resize(20, 0);
    h
}

fn arp(target: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    p.extend([0x02, 0, 0, 0, 0, 1]);
    p.extend(CLIENT.octets());
    p.extend([0; 6]);
    p.extend(target.octets());
    eth(0x0806, None, &p)
}

fn tcp(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    eth(0x0800, None, &ipv4(dst, 6, &[], 0, &l4(port)))
}

fn udp(dst: Ipv4Addr, port: u16) -> Vec<u8> {
    eth(0x0800, None, &ipv4(dst, 17, &[], 0, &l4(port)))
}

fn icmp_echo(dst: Ipv4Addr) -> Vec<u8> {
    eth(
        0x0800,
        None,
        &ipv4(dst, 1, &[], 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
    )
}

/// An IPv6 packet from the client's IPv6 address (checksums are not the program's
/// business).
fn ipv6(dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend((payload.len() as u16).to_be_bytes());
    p.extend([next, 64]);
    p.extend(CLIENT6.octets());
    p.extend(dst.octets());
    p.extend(payload);
    eth(0x86dd, None, &p)
}

/// A neighbour solicitation for `target`, to its solicited-node group.
fn solicit(target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend(t);
    ipv6(group, 58, &ns)
}

fn counters(loaded: &sys::Loaded) -> Counters {
    let values = loaded
        .counters
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap();
    Counters::sum(&values.unwrap())
}

#[test]
fn verdicts_on_handmade_frames() {
    if !privileged() {
        return;
    }
    let loaded = sys::load().expect("the verifier accepts the program");
    let one = 1u32.to_ne_bytes();
    for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 9000)] {
        let key = maps::service_key(SERVICE.into(), proto, port);
        let value = maps::service_value(XdpCookies::Off);
        loaded.services.update(&key, &value, MapFlags::ANY).unwrap();
    }
    loaded
        .addrs
        .update(&maps::addr_key(SERVICE), &one, MapFlags::ANY)
        .unwrap();
    let clients = Ipv4Addr::new(198, 19, 0, 0);
    let key = maps::prefix_key(clients, 16, Proto::Tcp);
    loaded.prefixes.update(&key, &one, MapFlags::ANY).unwrap();
    let spoofed = Ipv4Addr::new(198, 19, 128, 0);
    let tally = maps::PREFIX_TALLY.to_ne_bytes();
    for proto in [Proto::Tcp, Proto::Udp] {
        let key = maps::prefix_key(spoofed, 17, proto);
        loaded.prefixes.update(&key, &tally, MapFlags::ANY).unwrap();
    }
    loaded
        .addrs6
        .update(&SERVICE6.octets(), &one, MapFlags::ANY)
        .unwrap();
    let key = maps::service_key(SERVICE6.into(), Proto::Udp, 9000);
    let value = maps::service_value(XdpCookies::Off);
    loaded
        .services6
        .update(&key, &value, MapFlags::ANY)
        .unwrap();
    let mut v4_in_v6 = ipv6(SERVICE6, 6, &l4(80));
    v4_in_v6[14] = 0x45;
    let victim = Ipv4Addr::new(198, 19, 200, 1);
    let with_flags = |flags: u8| {
        let mut seg = l4(80);
        seg[13] = flags;
        eth(0x0800, None, &ipv4(victim, 6, &[], 0, &seg))
    };
    let client = Ipv4Addr::new(198, 19, 3, 4);
    let outside = Ipv4Addr::new(198, 20, 3, 4);

    // Options whose first bytes would read as port 80 if IHL were ignored.
    let options = [0x9c, 0x40, 0x00, 0x50, 1, 1, 1, 0];
    let mut cut_tcp = tcp(SERVICE, 80);
    cut_tcp.truncate(14 + 20 + 3);
    let mut cut_other = tcp(KERNEL, 80);
    cut_other.truncate(14 + 20 + 3);
    let mut bad_ihl = ipv4(SERVICE, 6, &[], 0, &l4(80));
    bad_ihl[0] = 0x44;
    let mut bad_ihl_other = ipv4(KERNEL, 6, &[], 0, &l4(80));
    bad_ihl_other[0] = 0x44;

    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, u32, Counters)> = vec![
        ("tcp to service", tcp(SERVICE, 80), XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("udp to service", udp(SERVICE, 9000), XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("tcp, other port", tcp(SERVICE, 81), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("udp on the tcp port", udp(SERVICE, 80), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("tcp to the kernel", tcp(KERNEL, 80), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("tcp into a prefix", tcp(client, 80), XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("udp into a tcp prefix", udp(client, 80), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("tcp outside the prefix", tcp(outside, 80), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("vlan-tagged, to a service", eth(0x0800, Some(7), &ipv4(SERVICE, 6, &[], 0, &l4(80))),
            XDP_PASS, Counters { vlan: 1, ..Default::default() }),
        ("vlan-tagged arp for service", eth(0x0806, Some(7), &arp(SERVICE)[14..]), XDP_PASS,
            Counters { vlan: 1, ..Default::default() }),
        ("802.1ad tag only", eth(0x88a8, None, &[0, 7]), XDP_PASS,
            Counters { vlan: 1, ..Default::default() }),
        ("ip options", eth(0x0800, None, &ipv4(SERVICE, 6, &options, 0, &l4(80))), XDP_PASS,
            Counters { no_xsk: 1, ..Default::default() }),
        ("ip options, other port", eth(0x0800, None, &ipv4(SERVICE, 6, &options, 0, &l4(81))),
            XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("first fragment", eth(0x0800, None, &ipv4(SERVICE, 6, &[], 0x2000, &l4(80))), XDP_PASS,
            Counters { passed: 1, ..Default::default() }),
        ("later fragment", eth(0x0800, None, &ipv4(SERVICE, 6, &[], 0x00b9, &l4(80))), XDP_PASS,
            Counters { passed: 1, ..Default::default() }),
        ("arp for service", arp(SERVICE), XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("arp for kernel", arp(KERNEL), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("ping service", icmp_echo(SERVICE), XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("ping kernel", icmp_echo(KERNEL), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("ipv6", eth(0x86dd, None, &[0x60; 60]), XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("tcp to the ipv6 service", ipv6(SERVICE6, 6, &l4(80)), XDP_PASS,
            Counters { no_xsk: 1, ..Default::default() }),
        ("ping6 the service", ipv6(SERVICE6, 58, &[128, 0, 0, 0, 0, 1, 0, 1]), XDP_PASS,
            Counters { no_xsk: 1, ..Default::default() }),
        ("udp to the ipv6 service", ipv6(SERVICE6, 17, &l4(80)), XDP_PASS,
            Counters { passed: 1, ..Default::default() }),
        ("udp to an ipv6 udp service", ipv6(SERVICE6, 17, &l4(9000)), XDP_PASS,
            Counters { no_xsk: 1, ..Default::default() }),
        ("udp to an ipv6 udp service, ports cut short", ipv6(SERVICE6, 17, &[0x9c, 0x40]),
            XDP_DROP, Counters { dropped: 1, ..Default::default() }),
        ("tcp to the ipv6 service, ports cut short", ipv6(SERVICE6, 6, &[0x9c, 0x40]),
            XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("hop-by-hop to the ipv6 service", ipv6(SERVICE6, 0, &[6, 0, 1, 4, 0, 0, 0, 0]),
            XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("destination options to the ipv6 service", ipv6(SERVICE6, 60, &[6, 0, 1, 4, 0, 0, 0, 0]),
            XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("ipv6 fragment to the service", ipv6(SERVICE6, 44, &[6, 0, 0, 1, 0, 0, 0, 7]),
            XDP_PASS, Counters { no_xsk: 1, ..Default::default() }),
        ("hop-by-hop to the kernel's ipv6", ipv6(KERNEL6, 0, &[6, 0, 1, 4, 0, 0, 0, 0]),
            XDP_PASS, Counters { passed: 1, ..Default::default() }),
        ("tcp to the kernel's ipv6", ipv6(KERNEL6, 6, &l4(80)), XDP_PASS,
            Counters { passed: 1, ..Default::default() }),
        ("solicitation for the service", solicit(SERVICE6), XDP_PASS,
            Counters { no_xsk: 1, ..Default::default() }),
        ("solicitation for the kernel", solicit(KERNEL6), XDP_PASS,
            Counters { passed: 1, ..Default::default() }),
        ("version 4 in ipv6, to the service", v4_in_v6, XDP_DROP,
            Counters { dropped: 1, ..Default::default() }),
        ("ipv6 cut short", eth(0x86dd, None, &[0x60; 39]), XDP_PASS,
            Counters { errors: 1, ..Default::default() }),
        ("ethernet only", eth(0x0800, None, &[]), XDP_PASS, Counters { errors: 1, ..Default::default() }),
        ("ip cut short", eth(0x0800, None, &[0x45; 19]), XDP_PASS, Counters { errors: 1, ..Default::default() }),
        ("ihl 4 to service", eth(0x0800, None, &bad_ihl), XDP_DROP, Counters { dropped: 1, ..Default::default() }),
        ("ihl 4 to kernel", eth(0x0800, None, &bad_ihl_other), XDP_PASS, Counters { errors: 1, ..Default::default() }),
        ("ports cut short, service", cut_tcp, XDP_DROP, Counters { dropped: 1, ..Default::default() }),
        ("ports cut short, kernel", cut_other, XDP_PASS, Counters { errors: 1, ..Default::default() }),
        ("syn-ack to a tallied prefix", with_flags(0x12), XDP_DROP,
            Counters { tallied_syn_ack: 1, ..Default::default() }),
        ("rst-ack to a tallied prefix", with_flags(0x14), XDP_DROP,
            Counters { tallied_rst: 1, ..Default::default() }),
        ("ack to a tallied prefix", with_flags(0x10), XDP_DROP,
            Counters { tallied_other: 1, ..Default::default() }),
        ("udp to a tallied prefix", udp(victim, 80), XDP_DROP,
            Counters { tallied_other: 1, ..Default::default() }),
    ];

    for (name, frame, want_action, want) in cases {
        let before = counters(&loaded);
        let (action, _, _) = sys::test_run(loaded.prog.as_fd(), &frame, 1).unwrap();
        let after = counters(&loaded);
        let delta = Counters {
            steered: after.steered - before.steered,
            passed: after.passed - before.passed,
            no_xsk: after.no_xsk - before.no_xsk,
            dropped: after.dropped - before.dropped,
            errors: after.errors - before.errors,
            vlan: after.vlan - before.vlan,
            cookies: after.cookies - before.cookies,
            tallied_syn_ack: after.tallied_syn_ack - before.tallied_syn_ack,
            tallied_rst: after.tallied_rst - before.tallied_rst,
            tallied_other: after.tallied_other - before.tallied_other,
        };
        assert_eq!((action, delta), (want_action, want), "{name}");
    }
}

/// What the verifier walked, and the mean cost of one verdict as the kernel times
/// `BPF_PROG_TEST_RUN`. Printed, not asserted.
#[test]
fn cost_per_frame() {
    if !privileged() {
        return;
    }
    let loaded = sys::load().unwrap();
    let id = libbpf_rs::Program::id_from_fd(loaded.prog.as_fd()).unwrap();
    let info = libbpf_rs::query::ProgInfoIter::default()
        .find(|p| p.id == id)
        .unwrap();
    eprintln!(
        "verifier: {} instructions verified for program id {id}",
        info.verified_insns
    );
    let key = maps::service_key(SERVICE.into(), Proto::Tcp, 80);
    let value = maps::service_value(XdpCookies::Off);
    loaded.services.update(&key, &value, MapFlags::ANY).unwrap();
    for (name, frame) in [("service", tcp(SERVICE, 80)), ("kernel", tcp(KERNEL, 80))] {
        let (action, ns, _) = sys::test_run(loaded.prog.as_fd(), &frame, 100_000).unwrap();
        assert_eq!(action, XDP_PASS);
        eprintln!("test_run: {name} frame {ns} ns per run");
    }
    assert_eq!(counters(&loaded).total(), 200_000);
}
