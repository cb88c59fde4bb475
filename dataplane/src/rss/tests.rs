use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::*;

/// The key of Microsoft's "Verifying the RSS hash calculation" examples.
const MS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
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
        assert_eq!(t.hash_tcp4(src, dst), want, "{src} -> {dst}");
        assert_eq!(reference(&MS_KEY, &input(src, dst)), want, "{src} -> {dst}");
    }
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
        let mut input = [0u8; INPUT];
        input[..8].copy_from_slice(&x.to_be_bytes());
        input[8..].copy_from_slice(&(x as u32).rotate_left(9).to_be_bytes());
        assert_eq!(t.hash(&input), reference(&key, &input));
    }
    assert!(
        Toeplitz::new(&key[..15]).is_none(),
        "too short for 12 bytes"
    );
}

#[test]
fn every_chosen_port_lands_on_the_wanted_queue() {
    // A synthetic RETA of 128 entries over 4 queues, as `ethtool -X equal 4` sets.
    let reta: Vec<u32> = (0..128).map(|i| i % 4).collect();
    let rss = Arc::new(Rss::new(&MS_KEY, reta).unwrap());
    let local = Ipv4Addr::new(198, 18, 0, 10);
    let remote = sa([198, 18, 0, 1], 80);
    for queue in 0..4 {
        let mut ports = RssPorts::new(rss.clone(), queue, 40000, 40999);
        let mut taken = HashSet::new();
        while let Some(p) = ports.choose(local.into(), remote.into(), &mut |p| taken.contains(&p)) {
            assert!((40000..=40999).contains(&p));
            assert_eq!(
                rss.reply_queue(SocketAddrV4::new(local, p), remote),
                queue,
                "port {p}"
            );
            assert!(taken.insert(p), "port {p} given twice");
        }
        // Exhausted: every port of the range that maps to the queue was handed out.
        let all = (40000..=40999)
            .filter(|&p| rss.reply_queue(SocketAddrV4::new(local, p), remote) == queue)
            .count();
        assert_eq!(taken.len(), all, "queue {queue}");
        assert!(all > 150, "a fair share for queue {queue}: {all}");
    }
}

#[test]
fn exhaustion_and_an_uncovered_queue_return_none() {
    let rss = Arc::new(Rss::new(&MS_KEY, vec![0, 1]).unwrap());
    let (local, remote) = (Ipv4Addr::new(198, 18, 0, 10), sa([198, 18, 0, 1], 7));
    let mut ports = RssPorts::new(rss.clone(), 1, 50000, 50063);
    assert_eq!(
        ports.choose(local.into(), remote.into(), &mut |_| true),
        None
    );
    let mut none = RssPorts::new(rss.clone(), 5, 50000, 50063);
    assert_eq!(
        none.choose(local.into(), remote.into(), &mut |_| false),
        None
    );
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
    assert_eq!(rss.hash.hash_tcp4(src, dst), 0x51cc_c178);
    assert_eq!(rss.reply_queue(dst, src), rss.reta[0x51cc_c178 % 16]);

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
    assert_eq!(
        c.choose(local.into(), remote.into(), &mut |_| false),
        Some(32768)
    );
}
