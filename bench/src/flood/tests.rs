use super::*;

use smoltcp::wire::IpAddress;

const TARGET: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 7);
const MACS: ([u8; 6], [u8; 6]) = ([2, 0, 0xc6, 0x12, 0, 1], [2, 0, 0xc6, 0x12, 0, 2]);

fn forger(kind: Kind, src: &str) -> Forger {
    Forger::new(kind, MACS, TARGET, Prefix::parse_src(src).unwrap(), 42)
}

/// Parses a frame back with smoltcp, checksums verified; (source, TCP header fields).
fn parse(f: &[u8]) -> (Ipv4Addr, TcpRepr<'_>) {
    let eth = EthernetFrame::new_checked(f).expect("an Ethernet frame");
    let e = EthernetRepr::parse(&eth).unwrap();
    assert_eq!(e.src_addr, EthernetAddress(MACS.0));
    assert_eq!(e.dst_addr, EthernetAddress(MACS.1));
    assert_eq!(e.ethertype, EthernetProtocol::Ipv4);
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Packet::new_checked(&f[14..]).expect("an IPv4 packet");
    assert!(ip.verify_checksum(), "IPv4 checksum");
    let ip_repr = Ipv4Repr::parse(&ip, &caps).expect("a valid IPv4 header");
    assert_eq!(ip_repr.dst_addr, *TARGET.ip());
    assert_eq!(ip_repr.next_header, IpProtocol::Tcp);
    assert_eq!(ip_repr.payload_len + 34, f.len(), "lengths add up");
    let tcp = TcpPacket::new_checked(&f[34..]).expect("a TCP segment");
    let (src, dst) = (
        IpAddress::Ipv4(ip_repr.src_addr),
        IpAddress::Ipv4(*TARGET.ip()),
    );
    assert!(tcp.verify_checksum(&src, &dst), "TCP checksum");
    let repr = TcpRepr::parse(&tcp, &src, &dst, &caps).expect("a valid TCP header");
    assert_eq!(repr.dst_port, 7);
    assert!(repr.src_port >= PORT_LO);
    assert!(repr.payload.is_empty());
    (ip_repr.src_addr, repr)
}

fn frames(kind: Kind, src: &str, n: usize) -> Vec<Vec<u8>> {
    let mut f = forger(kind, src);
    (0..n)
        .map(|_| {
            // A dirty buffer, as a reused UMEM frame is: every byte must be written.
            let mut buf = vec![0xa5; f.len()];
            f.write(&mut buf);
            buf
        })
        .collect()
}

#[test]
fn syn_frames_parse_back_with_random_sources_and_isns() {
    let fs = frames(Kind::Syn, "198.19.0.0/16", 1000);
    let prefix = Prefix::parse_src("198.19.0.0/16").unwrap();
    let (mut srcs, mut isns) = (Vec::new(), Vec::new());
    for f in &fs {
        assert_eq!(f.len(), 58);
        let (src, t) = parse(f);
        assert!(prefix.contains(src), "{src}");
        assert_ne!(src, Ipv4Addr::new(198, 19, 0, 0), "the network address");
        assert_ne!(
            src,
            Ipv4Addr::new(198, 19, 255, 255),
            "the broadcast address"
        );
        assert_eq!(t.control, TcpControl::Syn);
        assert_eq!(t.ack_number, None);
        assert_eq!(t.max_seg_size, Some(MSS));
        srcs.push((src, t.src_port));
        isns.push(t.seq_number);
    }
    srcs.sort_unstable();
    srcs.dedup();
    isns.sort_unstable_by_key(|s| s.0);
    isns.dedup();
    // 1,000 draws from 65,534 × 64,512 sources and 2^32 ISNs: collisions are rare.
    assert!(srcs.len() > 990, "{} distinct sources", srcs.len());
    assert!(isns.len() > 990, "{} distinct ISNs", isns.len());
}

#[test]
fn ack_and_rst_frames_carry_the_right_flags() {
    for f in frames(Kind::Ack, "198.19.0.0/16", 200) {
        assert_eq!(f.len(), 54);
        let (_, t) = parse(&f);
        assert_eq!(t.control, TcpControl::None);
        assert!(t.ack_number.is_some());
    }
    let acks: Vec<u32> = frames(Kind::Ack, "198.19.0.0/16", 100)
        .iter()
        .map(|f| parse(f).1.ack_number.unwrap().0 as u32)
        .collect();
    assert!(acks.windows(2).any(|w| w[0] != w[1]), "random ACK numbers");
    for f in frames(Kind::Rst, "198.19.0.0/16", 200) {
        assert_eq!(f.len(), 54);
        let (_, t) = parse(&f);
        assert_eq!(t.control, TcpControl::Rst);
        assert_eq!(t.ack_number, None);
    }
}

#[test]
fn small_prefixes_keep_sources_inside() {
    for (src, expect) in [
        ("198.18.5.7/32", 1),
        ("198.18.5.6/31", 2),
        ("198.18.5.4/30", 2),
    ] {
        let prefix = Prefix::parse_src(src).unwrap();
        let mut seen: Vec<Ipv4Addr> = frames(Kind::Syn, src, 200)
            .iter()
            .map(|f| parse(f).0)
            .collect();
        assert!(seen.iter().all(|a| prefix.contains(*a)), "{src}: {seen:?}");
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), expect, "{src}: {seen:?}");
    }
}

#[test]
fn runt_frames_are_syns_with_a_malformed_ip_header() {
    let (runts, syns) = (
        frames(Kind::Runt, "198.19.0.0/16", 50),
        frames(Kind::Syn, "198.19.0.0/16", 50),
    );
    for (runt, syn) in runts.iter().zip(&syns) {
        assert_eq!(runt.len(), 58);
        assert_eq!(runt[14], 0x44, "IPv4, IHL 4");
        assert!(
            Ipv4Packet::new_checked(&runt[14..]).is_err(),
            "smoltcp refuses it"
        );
        // Otherwise the very SYN the same seed forges.
        assert_eq!(runt[..14], syn[..14]);
        assert_eq!(runt[15..], syn[15..]);
        assert_eq!(parse(syn).1.control, TcpControl::Syn);
    }
}

#[test]
fn replies_are_what_the_program_tallied_over_the_run() {
    let before = Counters {
        tallied_syn_ack: 5,
        tallied_rst: 1,
        tallied_other: 2,
        cookies: 9,
        ..Counters::default()
    };
    let after = Counters {
        tallied_syn_ack: 105,
        tallied_rst: 4,
        tallied_other: 2,
        cookies: 90,
        ..Counters::default()
    };
    let want = Replies {
        syn_ack: 100,
        rst: 3,
        other: 0,
    };
    assert_eq!(Replies::between(&before, &after), want);
}

#[test]
fn targets_sources_and_rates_are_checked() {
    let args = |src: &str, target: &str, secs: f64| Args {
        kind: Kind::Syn,
        target: target.parse().unwrap(),
        rate: 0,
        secs,
        src: src.into(),
        iface: "gen0".into(),
        queue: 0,
        dst_mac: None,
        xdp_mode: XdpMode::Auto,
        json: false,
    };
    assert!(check(&args("198.19.0.0/16", "198.18.0.10:7", 5.0)).is_ok());
    let e = format!(
        "{:#}",
        check(&args("10.0.0.0/8", "198.18.0.10:7", 5.0)).unwrap_err()
    );
    assert!(e.contains("198.18.0.0/15") && !e.contains('\n'), "{e}");
    assert!(check(&args("198.19.0.0/16", "10.0.0.1:7", 5.0)).is_err());
    assert!(check(&args("198.18.0.0/24", "198.18.0.10:7", 5.0)).is_err());
    assert!(check(&args("198.19.0.0/16", "198.18.0.10:0", 5.0)).is_err());
    assert!(check(&args("198.19.0.0/16", "198.18.0.10:7", 0.0)).is_err());
    assert!(check(&args("198.19.0.0/16", "198.18.0.10:7", 601.0)).is_err());
    assert_eq!(parse_rate("max"), Ok(0));
    assert_eq!(parse_rate("0"), Ok(0));
    assert_eq!(parse_rate("250000"), Ok(250_000));
    assert!(parse_rate("fast").is_err());
}
