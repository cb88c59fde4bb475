use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

/// The key of Microsoft's "Verifying the RSS hash calculation" examples.
const MS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

fn sa(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(a), port))
}

fn sa6(a: &str, port: u16) -> SocketAddr {
    SocketAddr::from((a.parse::<Ipv6Addr>().unwrap(), port))
}

/// The hash input of a segment from `src` to `dst`, as long as it is.
fn input_of(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (b, len) = input(src, dst).unwrap();
    b[..len].to_vec()
}

/// The bit-by-bit definition: for each input bit set, XOR the key's leftmost 32 bits;
/// shift the key left one bit per input bit.
fn reference(key: &[u8], input: &[u8]) -> u32 {
    let mut h = 0;
    for (i, byte) in input.iter().enumerate() {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                h ^= window(key, i * 8 + b);
            }
        }
    }
    h
}

#[test]
fn microsoft_verification_vectors_ipv4_tcp() {
    // (destination, source, IPv4 with TCP ports). The hash input is the packet's
    // source address, destination address, source port, destination port.
    let vectors = [
        (
            sa([161, 142, 100, 80], 1766),
            sa([66, 9, 149, 187], 2794),
            0x51cc_c178,
        ),
        (
            sa([65, 69, 140, 83], 4739),
            sa([199, 92, 111, 2], 14230),
            0xc626_b0ea,
        ),
        (
            sa([12, 22, 207, 184], 38024),
            sa([24, 19, 198, 95], 12898),
            0x5c2b_394a,
        ),
        (
            sa([209, 142, 163, 6], 2217),
            sa([38, 27, 205, 30], 48228),
            0xafc7_327f,
        ),
        (
            sa([202, 188, 127, 2], 1303),
            sa([153, 39, 163, 191], 44251),
            0x10e8_28a2,
        ),
    ];
    let t = Toeplitz::new(&MS_KEY).unwrap();
    for (dst, src, want) in vectors {
        assert_eq!(t.hash_tcp(src, dst), Some(want), "{src} -> {dst}");
        assert_eq!(
            reference(&MS_KEY, &input_of(src, dst)),
            want,
            "{src} -> {dst}"
        );
    }
}

#[test]
fn microsoft_verification_vectors_ipv6_tcp() {
    // (destination, source, IPv6 with TCP ports): the input is the source address, the
    // destination address (16 bytes each), source port, destination port.
    let vectors = [
        (
            sa6("3ffe:2501:200:3::1", 1766),
            sa6("3ffe:2501:200:1fff::7", 2794),
            0x4020_7d3d,
        ),
        (
            sa6("ff02::1", 4739),
            sa6("3ffe:501:8::260:97ff:fe40:efab", 14230),
            0xdde5_1bbf,
        ),
        (
            sa6("fe80::200:f8ff:fe21:67cf", 38024),
            sa6("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251),
            0x02d1_feef,
        ),
    ];
    let t = Toeplitz::new(&MS_KEY).unwrap();
    for (dst, src, want) in vectors {
        assert_eq!(input_of(src, dst).len(), 36);
        assert_eq!(t.hash_tcp(src, dst), Some(want), "{src} -> {dst}");
        assert_eq!(
            reference(&MS_KEY, &input_of(src, dst)),
            want,
            "{src} -> {dst}"
        );
    }
    let v4 = sa([198, 18, 0, 1], 80);
    assert_eq!(t.hash_tcp(v4, vectors[0].0), None, "mixed families");
}

#[test]
fn tables_agree_with_the_definition() {
    let key: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(73) ^ 0x5a).collect();
    let t = Toeplitz::new(&key).unwrap();
    let mut x = 0x1234_5678_9abc_def0_u64;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut input = [0u8; MAX_INPUT];
        for (i, chunk) in input.chunks_mut(4).enumerate() {
            let word = (x as u32).rotate_left(9 * i as u32) ^ (x >> 32) as u32;
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        assert_eq!(t.hash(&input), reference(&key, &input));
        assert_eq!(t.hash(&input[..12]), reference(&key, &input[..12]));
    }
    assert!(
        Toeplitz::new(&key[..39]).is_none(),
        "too short for 36 bytes"
    );
}

/// Hands out every port of 40000–40999 that `queue`'s replies from `remote` to `local`
/// hash to, and nothing else.
fn every_port_of_the_queue(rss: &Arc<Rss>, queue: u32, local: IpAddr, remote: SocketAddr) {
    let reply = |p| rss.reply_queue(SocketAddr::new(local, p), remote).unwrap();
    let mut ports = RssPorts::new(rss.clone(), queue, 40000, 40999);
    let mut taken = HashSet::new();
    while let Some(p) = ports.choose(local, remote, &mut |p| taken.contains(&p)) {
        assert!((40000..=40999).contains(&p));
        assert_eq!(reply(p), queue, "port {p} to {remote}");
        assert!(taken.insert(p), "port {p} given twice");
    }
    // Exhausted: every port of the range that maps to the queue was handed out.
    let all = (40000..=40999).filter(|&p| reply(p) == queue).count();
    assert_eq!(taken.len(), all, "queue {queue}, {remote}");
    assert!(all > 150, "a fair share for queue {queue}: {all}");
}

#[test]
fn every_chosen_port_lands_on_the_wanted_queue() {
    // A synthetic RETA of 128 entries over 4 queues, as `ethtool -X equal 4` sets.
    let reta: Vec<u32> = (0..128).map(|i| i % 4).collect();
    let rss = Arc::new(Rss::new(&MS_KEY, reta).unwrap());
    let local = Ipv4Addr::new(198, 18, 0, 10);
    let local6: Ipv6Addr = "2001:2::10".parse().unwrap();
    for queue in 0..4 {
        every_port_of_the_queue(&rss, queue, local.into(), sa([198, 18, 0, 1], 80));
        every_port_of_the_queue(&rss, queue, local6.into(), sa6("2001:2::1", 80));
    }
    // The IPv6 choice is not the IPv4 one: the whole 36-byte input counts.
    let pick = |local: IpAddr, remote| {
        let mut p = RssPorts::new(rss.clone(), 1, 40000, 40999);
        (0..20)
            .map(|_| p.choose(local, remote, &mut |_| false).unwrap())
            .collect::<Vec<_>>()
    };
    assert_ne!(
        pick(local.into(), sa([198, 18, 0, 1], 80)),
        pick(local6.into(), sa6("2001:2::1", 80))
    );
}

#[test]
fn exhaustion_and_an_uncovered_queue_return_none() {
    let rss = Arc::new(Rss::new(&MS_KEY, vec![0, 1]).unwrap());
    let (local, remote) = (Ipv4Addr::new(198, 18, 0, 10), sa([198, 18, 0, 1], 7));
    let mut ports = RssPorts::new(rss.clone(), 1, 50000, 50063);
    assert_eq!(ports.choose(local.into(), remote, &mut |_| true), None);
    let mut none = RssPorts::new(rss.clone(), 5, 50000, 50063);
    assert_eq!(none.choose(local.into(), remote, &mut |_| false), None);
    assert!(rss.covers(1) && !rss.covers(5));
}

#[test]
fn parses_ethtool_output() {
    let text = "RX flow hash indirection table for eth0 with 4 RX ring(s):
    0:      0     1     2     3     0     1     2     3
    8:      3     2     1     0     3     2     1     0
RSS hash key:
6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:ae:7b:30:b4:77:cb:2d:a3:80:30:f2:0c:6a:42:b7:3b:be:ac:01:fa
RSS hash function:
    toeplitz: on
    xor: off
    crc32: off
RSS input transformation:
    symmetric-xor: off
";
    let rss = Rss::parse_ethtool(text).unwrap();
    assert_eq!(rss.reta, [0, 1, 2, 3, 0, 1, 2, 3, 3, 2, 1, 0, 3, 2, 1, 0]);
    assert_eq!(rss.max_queue(), 3);
    let (dst, src) = (sa([161, 142, 100, 80], 1766), sa([66, 9, 149, 187], 2794));
    assert_eq!(rss.hash.hash_tcp(src, dst), Some(0x51cc_c178));
    assert_eq!(rss.reply_queue(dst, src), Some(rss.reta[0x51cc_c178 % 16]));

    let xor = text
        .replace("toeplitz: on", "toeplitz: off")
        .replace("xor: off", "xor: on");
    assert!(
        Rss::parse_ethtool(&xor)
            .unwrap_err()
            .to_string()
            .contains("xor")
    );
    let no_key = text.replace(
        "RSS hash key:\n6d",
        "RSS hash key:\nOperation not supported\n6d",
    );
    assert!(Rss::parse_ethtool(&no_key).is_err());
    assert!(Rss::parse_ethtool("").is_err());
}

#[test]
fn no_rss_falls_back_to_sequential_ports() {
    let mut c = chooser(None, 1);
    let (local, remote) = (Ipv4Addr::new(198, 18, 0, 10), sa([198, 18, 0, 1], 7));
    assert_eq!(c.choose(local.into(), remote, &mut |_| false), Some(32768));
}
