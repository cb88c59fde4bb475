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

use super::{CLIENT, SERVICE, XDP_PASS, counters, privileged};
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

/// A TCP segment from `CLIENT:sport` to the service's port 80, checksums right.
fn segment(sport: u16, control: TcpControl, seq: u32, ack: Option<u32>, o: Opts) -> Vec<u8> {
    let tcp = TcpRepr {
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
    };
    c10m_stack::wire::tcp_frame((CLIENT_MAC, CLIENT), (SERVER_MAC, SERVICE), &tcp)
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
    let config = Config {
        mac: SERVER_MAC,
        addrs: vec![(SERVICE, 24)],
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
    while tx.pop().is_some() {}
    (s, tx)
}

/// The program, with the service at `cookies` and queue 0's keys from `keys`.
fn program(cookies: XdpCookies) -> sys::Loaded {
    let loaded = sys::load().expect("the verifier accepts the program");
    let key = maps::service_key(SERVICE, Proto::Tcp, 80);
    let value = maps::service_value(cookies);
    loaded.services.update(&key, &value, MapFlags::ANY).unwrap();
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
    if !privileged() {
        return;
    }
    let loaded = program(XdpCookies::Always {
        window: WINDOW as u16,
    });
    let (mut s, mut tx) = stack(SynCookies::Always);
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
            let frame = syn(sport, isn, o);
            let before = counters(&loaded);
            let (action, out) = run(&loaded, &frame);
            assert_eq!(action, XDP_REDIRECT, "answered in XDP: {o:?}");
            assert_eq!(counters(&loaded).cookies - before.cookies, 1);

            // A valid SYN-ACK: checksums, flags, numbers, the MSS option alone.
            let eth = EthernetFrame::new_checked(&out[..]).unwrap();
            assert_eq!(
                out.len(),
                58,
                "trimmed to Ethernet, IPv4 and TCP with one option"
            );
            assert_eq!(eth.dst_addr(), EthernetAddress(CLIENT_MAC));
            assert_eq!(eth.src_addr(), EthernetAddress(SERVER_MAC));
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVICE, CLIENT));
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            let (a, b) = (IpAddress::Ipv4(SERVICE), IpAddress::Ipv4(CLIENT));
            assert!(tcp.verify_checksum(&a, &b));
            let r = TcpRepr::parse(&tcp, &a, &b, &ChecksumCapabilities::default()).unwrap();
            assert_eq!(r.control, TcpControl::Syn);
            assert_eq!((r.src_port, r.dst_port), (80, sport));
            assert_eq!(r.ack_number, Some(TcpSeqNumber(isn.wrapping_add(1) as i32)));
            assert_eq!(r.max_seg_size, Some(1460));
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
            let ack = segment(
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
    let key = maps::service_key(SERVICE, Proto::Tcp, 80);
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
    for (name, frame, want) in [
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
    ] {
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
