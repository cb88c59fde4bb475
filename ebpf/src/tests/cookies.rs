//! The program's SYN-cookie answer, through `BPF_PROG_TEST_RUN`: the SYN-ACK it sends
//! with `XDP_REDIRECT` is byte for byte the one the stack's own cookie path sends for the same
//! SYN, secret and time, and the stack accepts the client's ACK of it. Then what it must
//! not answer. Needs root, like the rest of the module.

use std::os::fd::AsFd;

use c10m_stack::wire::Queue;
use c10m_stack::{Config, Instant, ListenOptions, SocketOptions, Stack, State, SynCookies};
use libbpf_rs::{MapCore, MapFlags};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, IpAddress, Ipv4Packet, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, TcpTimestampRepr,
};

#[cfg(feature = "ipv6")]
use super::CLIENT6;
use super::{CLIENT, SERVICE, SERVICE6, XDP_PASS, counters, privileged};
use crate::maps::{self, Proto, QueueCookies, XdpCookies};
use crate::sys;

/// The answer goes back out of the interface it came in on.
const XDP_REDIRECT: u32 = 4;
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const PERIOD_MS: i64 = 64_000;
const WINDOW: usize = 8192;

/// The options a client's SYN carries.
#[derive(Debug, Clone, Copy, Default)]
struct Opts {
    mss: Option<u16>,
    /// Window scaling, SACK-permitted and timestamps too (which the cookie drops).
    all: bool,
}

/// The address family of a test's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    #[cfg(feature = "ipv6")]
    V6,
}

impl Family {
    /// A TCP segment from the client's `sport` to the service's port 80, checksums right.
    fn segment(
        self,
        sport: u16,
        control: TcpControl,
        seq: u32,
        ack: Option<u32>,
        o: Opts,
    ) -> Vec<u8> {
        let tcp = tcp_repr(sport, control, seq, ack, o);
        match self {
            Family::V4 => {
                c10m_stack::wire::tcp_frame((CLIENT_MAC, CLIENT), (SERVER_MAC, SERVICE), &tcp)
            }
            #[cfg(feature = "ipv6")]
            Family::V6 => {
                c10m_stack::wire::tcp6_frame((CLIENT_MAC, CLIENT6), (SERVER_MAC, SERVICE6), &tcp)
            }
        }
    }

    /// The service's and the client's address.
    fn addrs(self) -> (IpAddress, IpAddress) {
        match self {
            Family::V4 => (IpAddress::Ipv4(SERVICE), IpAddress::Ipv4(CLIENT)),
            #[cfg(feature = "ipv6")]
            Family::V6 => (IpAddress::Ipv6(SERVICE6), IpAddress::Ipv6(CLIENT6)),
        }
    }

    /// A cookie SYN-ACK's length and MSS option: 58 bytes and 1460 over IPv4, 78 and
    /// 1440 over IPv6 (20 bytes more header in the same MTU).
    fn synack(self) -> (usize, u16) {
        match self {
            Family::V4 => (58, 1460),
            #[cfg(feature = "ipv6")]
            Family::V6 => (78, 1440),
        }
    }

    /// The TCP header of a frame from the service, checking the IP header on the way
    /// (addresses, IPv4 checksum) and the TCP checksum.
    fn tcp_from_service(self, frame: &[u8]) -> TcpRepr<'_> {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress(CLIENT_MAC));
        assert_eq!(eth.src_addr(), EthernetAddress(SERVER_MAC));
        let payload = match self {
            Family::V4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVICE, CLIENT));
                ip.payload()
            }
            #[cfg(feature = "ipv6")]
            Family::V6 => {
                let ip = smoltcp::wire::Ipv6Packet::new_checked(eth.payload()).unwrap();
                assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVICE6, CLIENT6));
                assert_eq!(ip.hop_limit(), 64);
                ip.payload()
            }
        };
        let tcp = TcpPacket::new_checked(payload).unwrap();
        let (a, b) = self.addrs();
        assert!(tcp.verify_checksum(&a, &b));
        TcpRepr::parse(&tcp, &a, &b, &ChecksumCapabilities::default()).unwrap()
    }
}

/// An IPv4 segment ([`Family::segment`]).
fn segment(sport: u16, control: TcpControl, seq: u32, ack: Option<u32>, o: Opts) -> Vec<u8> {
    Family::V4.segment(sport, control, seq, ack, o)
}

/// The TCP header of [`segment`].
fn tcp_repr(
    sport: u16,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    o: Opts,
) -> TcpRepr<'static> {
    TcpRepr {
        src_port: sport,
        dst_port: 80,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64240,
        window_scale: o.all.then_some(7),
        max_seg_size: o.mss,
        sack_permitted: o.all,
        sack_ranges: [None; 3],
        timestamp: o.all.then_some(TcpTimestampRepr::new(0x1122_3344, 0)),
        payload: b"",
    }
}

fn syn(sport: u16, isn: u32, o: Opts) -> Vec<u8> {
    segment(sport, TcpControl::Syn, isn, None, o)
}

/// Recomputes the IPv4 and TCP checksums of an Ethernet/IPv4/TCP frame.
fn fix_checksums(frame: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.fill_checksum();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    TcpPacket::new_unchecked(ip.payload_mut()).fill_checksum(&s, &d);
}

/// The stack, listening on port 80 with `mode`, its secret replaced at 0, knowing the
/// client's MAC (from an ARP request, as on a link).
fn stack(mode: SynCookies) -> (Stack, Queue) {
    stack_for(mode, Family::V4)
}

/// [`stack`] for `family`: over IPv6 it has its IPv6 address too, and the client's MAC
/// from a neighbour solicitation.
fn stack_for(mode: SynCookies, family: Family) -> (Stack, Queue) {
    let config = Config {
        mac: SERVER_MAC,
        addrs: vec![(SERVICE, 24)],
        #[cfg(feature = "ipv6")]
        ipv6_addrs: vec![(SERVICE6, 64)],
        seed: 0x5eed,
        ..Config::default()
    };
    let mut s = Stack::new(&config, Instant::ZERO).unwrap();
    s.set_cookie_secret(Instant::ZERO, 0xc00c_1e5e_c4e7);
    let opts = ListenOptions {
        syn_cookies: mode,
        socket: SocketOptions {
            rx_buf: WINDOW,
            ..SocketOptions::default()
        },
        ..ListenOptions::default()
    };
    s.listen(80, opts).unwrap();
    let mut arp = vec![0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1];
    arp.extend(CLIENT_MAC);
    arp.extend(CLIENT.octets());
    arp.extend([0; 6]);
    arp.extend(SERVICE.octets());
    let mut frame = [&[0xff; 6][..], &CLIENT_MAC[..]].concat();
    frame.extend(arp);
    let mut tx = Queue::default();
    s.ingress(Instant::from_millis(1), &frame, &mut tx);
    #[cfg(feature = "ipv6")]
    if family == Family::V6 {
        s.ingress(Instant::from_millis(1), &solicitation(), &mut tx);
    }
    while tx.pop().is_some() {}
    let _ = family;
    (s, tx)
}

/// A neighbour solicitation from the client for the service's IPv6 address (RFC 4861
/// §4.3), to its solicited-node group, with the client's MAC.
#[cfg(feature = "ipv6")]
fn solicitation() -> Vec<u8> {
    use smoltcp::wire::{
        EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr,
        NdiscRepr, RawHardwareAddress,
    };
    let t = SERVICE6.octets();
    let group = std::net::Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ]);
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: SERVICE6,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(CLIENT_MAC))),
    });
    let ip = Ipv6Repr {
        src_addr: CLIENT6,
        dst_addr: group,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(CLIENT_MAC),
        dst_addr: EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut frame = vec![0u8; 14 + 40 + icmp.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut p = Ipv6Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p);
    let caps = ChecksumCapabilities::default();
    let i = &mut Icmpv6Packet::new_unchecked(p.payload_mut());
    icmp.emit(&CLIENT6, &group, i, &caps);
    frame
}

/// The program, with the service at `cookies` (its IPv4 address and, as the daemon
/// registers them, its IPv6 address beside it).
fn program(cookies: XdpCookies) -> sys::Loaded {
    let loaded = sys::load().expect("the verifier accepts the program");
    let key = maps::service_key(SERVICE.into(), Proto::Tcp, 80);
    let value = maps::service_value(cookies);
    loaded.services.update(&key, &value, MapFlags::ANY).unwrap();
    let key = maps::service_key(SERVICE6.into(), Proto::Tcp, 80);
    loaded
        .services6
        .update(&key, &value, MapFlags::ANY)
        .unwrap();
    let one = 1u32.to_ne_bytes();
    let addr = SERVICE6.octets();
    loaded.addrs6.update(&addr, &one, MapFlags::ANY).unwrap();
    loaded
}

fn publish(loaded: &sys::Loaded, keys: Option<QueueCookies>) {
    let value = maps::cookie_keys_value(keys.as_ref());
    loaded
        .cookie_keys
        .update(&0u32.to_ne_bytes(), &value, MapFlags::LOCK)
        .unwrap();
}

fn keys_of(s: &Stack, now: Instant, pressure: bool) -> QueueCookies {
    let k = s.cookie_keys(now);
    QueueCookies {
        k0: k.k0,
        k1: k.k1,
        parity: k.parity,
        pressure,
    }
}

fn run(loaded: &sys::Loaded, frame: &[u8]) -> (u32, Vec<u8>) {
    let (action, _, out) = sys::test_run(loaded.prog.as_fd(), frame, 1).unwrap();
    (action, out)
}

#[test]
fn the_programs_cookie_syn_ack_is_the_stacks_and_its_ack_makes_a_connection() {
    if privileged() {
        cookies_match_the_stacks(Family::V4);
    }
}

/// The same for IPv6 SYNs: one cookie format for both makers, IPv6 addresses hashed as
/// the stack hashes them, the MSS capped at IPv6's 1440.
#[cfg(feature = "ipv6")]
#[test]
fn the_programs_ipv6_cookie_syn_ack_is_the_stacks_and_its_ack_makes_a_connection() {
    if !privileged() {
        return;
    }
    cookies_match_the_stacks(Family::V6);

    // What the stack would not answer either goes on to the socket, untouched.
    let loaded = program(XdpCookies::Always { window: 1000 });
    let (s, _) = stack_for(SynCookies::Always, Family::V6);
    publish(&loaded, Some(keys_of(&s, Instant::from_millis(500), false)));
    let o = Opts {
        mss: Some(1440),
        all: false,
    };
    let plain = Family::V6.segment(40000, TcpControl::Syn, 1, None, o);
    assert_eq!(run(&loaded, &plain).0, XDP_REDIRECT);
    let mut bad_sum = plain.clone();
    bad_sum[14 + 40 + 16] ^= 1;
    let mut with_data = plain.clone();
    with_data[14 + 5] += 4; // IPv6 payload length: 4 bytes of data
    with_data.extend([1, 2, 3, 4]);
    let mut behind_hop_by_hop = plain[..14 + 40].to_vec();
    behind_hop_by_hop[14 + 5] += 8;
    behind_hop_by_hop[14 + 6] = 0;
    behind_hop_by_hop.extend([6, 0, 1, 4, 0, 0, 0, 0]);
    behind_hop_by_hop.extend(&plain[14 + 40..]);
    let ack = Family::V6.segment(40000, TcpControl::None, 2, Some(5), Opts::default());
    for (name, frame) in [
        ("bad tcp checksum", bad_sum),
        ("syn with data", with_data),
        ("behind a hop-by-hop header", behind_hop_by_hop),
        ("ack", ack),
        ("cut short", plain[..14 + 40 + 19].to_vec()),
    ] {
        let before = counters(&loaded);
        let (action, out) = run(&loaded, &frame);
        assert_eq!(action, XDP_PASS, "{name}: not answered");
        assert_eq!(out, frame, "{name}: untouched");
        let after = counters(&loaded);
        assert_eq!(after.cookies, before.cookies, "{name}");
        assert_eq!(after.no_xsk - before.no_xsk, 1, "{name}: steered as before");
    }
}

/// SYNs of many shapes over `family`, over two periods: the program answers each with
/// a valid SYN-ACK, bit for bit the stack's own cookie answer, and the client's ACK of
/// it makes a connection in the stack.
fn cookies_match_the_stacks(family: Family) {
    let loaded = program(XdpCookies::Always {
        window: WINDOW as u16,
    });
    let (mut s, mut tx) = stack_for(SynCookies::Always, family);
    let (len, our_mss) = family.synack();
    let all = |mss| Opts { mss, all: true };
    let only = |mss| Opts { mss, all: false };
    #[rustfmt::skip]
    let cases = [
        (40000u16, 1u32, only(None)),
        (40001, 0xffff_ffff, only(Some(536))),
        (40002, 0x8000_0000, only(Some(1000))),
        (1, 12345, only(Some(1220))),
        (65535, 777, all(Some(1400))),
        (50000, 0xdead_beef, all(Some(1440))),
        (50001, 42, only(Some(1459))),
        (50002, 43, all(Some(1460))),
        (50003, 44, only(Some(9000))),
        (50004, 45, all(None)),
    ];
    let mut accepted = 0;
    // Two periods: both parities, and the second keyed by the secret set at 0.
    for (p, period) in [3i64, 4].into_iter().enumerate() {
        let base = period * PERIOD_MS + 500;
        publish(
            &loaded,
            Some(keys_of(&s, Instant::from_millis(base), false)),
        );
        for (i, &(sport, isn, o)) in cases.iter().enumerate() {
            // Other 4-tuples than the connections of the first period.
            let sport = sport.wrapping_add(7 * p as u16);
            let now = Instant::from_millis(base + 10 * i as i64);
            let frame = family.segment(sport, TcpControl::Syn, isn, None, o);
            let before = counters(&loaded);
            let (action, out) = run(&loaded, &frame);
            assert_eq!(action, XDP_REDIRECT, "answered in XDP: {o:?}");
            assert_eq!(counters(&loaded).cookies - before.cookies, 1);

            // A valid SYN-ACK: checksums, flags, numbers, the MSS option alone.
            assert_eq!(
                out.len(),
                len,
                "trimmed to Ethernet, IP and TCP with one option"
            );
            let r = family.tcp_from_service(&out);
            assert_eq!(r.control, TcpControl::Syn);
            assert_eq!((r.src_port, r.dst_port), (80, sport));
            assert_eq!(r.ack_number, Some(TcpSeqNumber(isn.wrapping_add(1) as i32)));
            assert_eq!(r.max_seg_size, Some(our_mss));
            assert_eq!(
                (r.window_scale, r.sack_permitted, r.timestamp),
                (None, false, None)
            );
            assert_eq!(r.window_len, WINDOW as u16);
            let cookie = r.seq_number.0 as u32;

            // Bit for bit what the stack's own cookie path sends for that SYN.
            s.ingress(now, &frame, &mut tx);
            let ours = tx.pop().expect("the stack answers with a cookie too");
            assert_eq!(out, ours, "XDP and stack SYN-ACKs for {o:?}, isn {isn}");
            assert!(tx.pop().is_none());

            // The client's ACK (a little later) makes the connection.
            let later = Instant::from_millis(base + 10 * i as i64 + 5);
            let ack = family.segment(
                sport,
                TcpControl::None,
                isn.wrapping_add(1),
                Some(cookie.wrapping_add(1)),
                Opts::default(),
            );
            s.ingress(later, &ack, &mut tx);
            s.poll(later, &mut tx);
            accepted += 1;
            let c = s.counters();
            assert_eq!(
                c.cookies_accepted, accepted,
                "cookie of {o:?} valid in the stack"
            );
            assert_eq!(c.in_state(State::Established), accepted);
            assert_eq!((c.cookies_invalid, c.resets_sent), (0, 0));
            while tx.pop().is_some() {}
        }
    }
}

#[test]
fn the_program_answers_only_plain_syns_when_the_mode_says_so() {
    if !privileged() {
        return;
    }
    let loaded = program(XdpCookies::Always { window: 1000 });
    let (s, _) = stack(SynCookies::Always);
    let now = Instant::from_millis(500);
    let keys = keys_of(&s, now, false);
    let plain = syn(
        40000,
        1,
        Opts {
            mss: Some(1460),
            all: false,
        },
    );
    let verdict = |frame: &[u8]| run(&loaded, frame).0;

    // Nothing published for the queue (no worker): the socket's, as before.
    publish(&loaded, None);
    assert_eq!(
        verdict(&plain),
        XDP_PASS,
        "no keys: to the socket (none here)"
    );
    publish(&loaded, Some(keys));
    assert_eq!(verdict(&plain), XDP_REDIRECT);

    let mut bad_sum = plain.clone();
    bad_sum[14 + 20 + 16] ^= 1;
    let mut bad_ip_sum = plain.clone();
    bad_ip_sum[14 + 10] ^= 1;
    let mut bad_mss = plain.clone(); // MSS option of length 3: smoltcp refuses it
    bad_mss[14 + 20 + 21] = 3;
    fix_checksums(&mut bad_mss);
    let mut with_data = segment(40000, TcpControl::Syn, 1, None, Opts::default());
    with_data[14 + 3] += 4; // IPv4 total length: 4 bytes of data
    with_data.extend([1, 2, 3, 4]);
    fix_checksums(&mut with_data);
    let mut broadcast = plain.clone();
    broadcast[..6].copy_from_slice(&[0xff; 6]);
    let mut syn_fin = plain.clone();
    syn_fin[14 + 20 + 13] |= 0x01;
    fix_checksums(&mut syn_fin);
    let mut other_port = plain.clone();
    other_port[14 + 22..14 + 24].copy_from_slice(&81u16.to_be_bytes());
    fix_checksums(&mut other_port);
    let mut vlan = plain[..12].to_vec();
    vlan.extend([0x81, 0x00, 0, 7]);
    vlan.extend(&plain[12..]);
    let mut ip_options = plain[..14].to_vec();
    ip_options.extend([0x46]);
    ip_options.extend(&plain[15..34]);
    ip_options.extend([1, 1, 1, 0]);
    ip_options.extend(&plain[34..]);
    ip_options[14 + 3] += 4;
    fix_checksums(&mut ip_options);

    let none = Opts::default();
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ack", segment(40000, TcpControl::None, 2, Some(5), none)),
        ("rst", segment(40000, TcpControl::Rst, 2, None, none)),
        ("syn-ack", segment(40000, TcpControl::Syn, 2, Some(5), none)),
        ("syn-fin", syn_fin),
        ("bad tcp checksum", bad_sum),
        ("bad ip checksum", bad_ip_sum),
        ("malformed mss option", bad_mss),
        ("syn with data", with_data),
        ("to the broadcast mac", broadcast),
        ("ip options", ip_options),
        ("other port", other_port),
        ("vlan-tagged", vlan),
    ];
    for (name, frame) in cases {
        let before = counters(&loaded);
        let (action, out) = run(&loaded, &frame);
        assert_eq!(action, XDP_PASS, "{name}: not answered");
        assert_eq!(out, frame, "{name}: untouched");
        assert_eq!(counters(&loaded).cookies, before.cookies, "{name}");
    }

    // Auto answers only while the queue is under pressure; off never.
    let window = 1000;
    let key = maps::service_key(SERVICE.into(), Proto::Tcp, 80);
    let set = |c| {
        let v = maps::service_value(c);
        loaded.services.update(&key, &v, MapFlags::ANY).unwrap();
    };
    set(XdpCookies::Auto { window });
    let before = counters(&loaded);
    assert_eq!(
        verdict(&plain),
        XDP_PASS,
        "auto, no pressure: to the socket"
    );
    assert_eq!(
        counters(&loaded).no_xsk - before.no_xsk,
        1,
        "steered as before"
    );
    publish(
        &loaded,
        Some(QueueCookies {
            pressure: true,
            ..keys
        }),
    );
    assert_eq!(verdict(&plain), XDP_REDIRECT, "auto under pressure");
    set(XdpCookies::Off);
    assert_eq!(verdict(&plain), XDP_PASS, "off, even under pressure");
}

/// What answering a SYN costs in the program, as the kernel times single runs (each
/// with the timer's own overhead; a repeated run would answer its own SYN-ACK), next
/// to a frame it only steers. Printed, not asserted.
#[test]
fn cost_of_a_cookie() {
    if !privileged() {
        return;
    }
    let loaded = program(XdpCookies::Always { window: 1000 });
    let (s, _) = stack(SynCookies::Always);
    publish(&loaded, Some(keys_of(&s, Instant::from_millis(5), false)));
    let steered = segment(40000, TcpControl::None, 2, Some(5), Opts::default());
    let all = Opts {
        mss: Some(1460),
        all: true,
    };
    #[allow(unused_mut)]
    let mut cases = vec![
        ("an ACK (steered)", steered, XDP_PASS),
        (
            "a SYN, no options",
            syn(40000, 9, Opts::default()),
            XDP_REDIRECT,
        ),
        (
            "a SYN, MSS, window scale, SACK, timestamps",
            syn(40000, 9, all),
            XDP_REDIRECT,
        ),
    ];
    #[cfg(feature = "ipv6")]
    cases.push((
        "an IPv6 SYN, MSS, window scale, SACK, timestamps",
        Family::V6.segment(40000, TcpControl::Syn, 9, None, all),
        XDP_REDIRECT,
    ));
    for (name, frame, want) in cases {
        let runs = 20_000u32;
        let mut total = 0u64;
        for _ in 0..runs {
            let (action, ns, _) = sys::test_run(loaded.prog.as_fd(), &frame, 1).unwrap();
            assert_eq!(action, want, "{name}");
            total += u64::from(ns);
        }
        eprintln!("test_run: {name}: {} ns per run", total / u64::from(runs));
    }
}
