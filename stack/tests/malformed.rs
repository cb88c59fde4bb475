//! Malformed frames are dropped and counted, never a panic: truncation at every offset,
//! bad checksums, bad lengths, garbage TCP options, unknown EtherTypes, and random damage.

mod common;

use std::net::Ipv4Addr;

use c10m_stack::wire::{Impairments, Pair, Queue};
use c10m_stack::{Drop, Instant, ListenOptions, Stack};
use common::frames::{self, fix_checksums};
use common::pair;
use proptest::prelude::*;
use smoltcp::wire::TcpControl;

const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 18, 0, 1), 40_000);
const SERVER: (Ipv4Addr, u16) = (Pair::SERVER, 80);

fn server() -> Stack {
    let mut p = pair(64, Impairments::none());
    p.b.listen(80, ListenOptions::default()).unwrap();
    p.b
}

fn syn() -> Vec<u8> {
    frames::tcp(CLIENT, SERVER, TcpControl::Syn, 1000, None, b"")
}

fn data() -> Vec<u8> {
    frames::tcp(
        CLIENT,
        SERVER,
        TcpControl::Psh,
        1000,
        Some(1),
        b"hello, world",
    )
}

/// Feeds one frame; returns the drop reason it was counted under, if any.
fn feed(stack: &mut Stack, frame: &[u8]) -> Option<Drop> {
    let before = stack.counters();
    stack.ingress(Instant::from_millis(1), frame, &mut Queue::default());
    let after = stack.counters();
    assert_eq!(after.rx_frames, before.rx_frames + 1);
    let changed: Vec<Drop> = Drop::ALL
        .into_iter()
        .filter(|&d| after.dropped(d) != before.dropped(d))
        .collect();
    assert!(
        changed.len() <= 1,
        "one frame, one drop reason: {changed:?}"
    );
    changed.first().copied()
}

#[test]
fn truncation_at_every_offset_is_counted() {
    for frame in [syn(), data(), frames::arp_request(Pair::SERVER)] {
        let mut stack = server();
        for len in 0..frame.len() {
            let why = feed(&mut stack, &frame[..len]);
            if frame[12..14] == [0x08, 0x06] {
                // ARP goes to smoltcp, which drops a short one itself (not a panic).
                assert!(
                    why.is_none() || why == Some(Drop::Truncated),
                    "{len}: {why:?}"
                );
            } else {
                assert_eq!(why, Some(Drop::Truncated), "truncated at {len}");
            }
        }
        assert_eq!(stack.connections(), 0);
    }
}

#[test]
fn bad_checksums_are_counted() {
    let mut stack = server();
    let mut f = syn();
    f[14 + 10] ^= 0xff; // IPv4 header checksum
    assert_eq!(feed(&mut stack, &f), Some(Drop::IpChecksum));
    let mut f = syn();
    f[14 + 20 + 16] ^= 0xff; // TCP checksum
    assert_eq!(feed(&mut stack, &f), Some(Drop::TcpChecksum));
    let mut f = data();
    *f.last_mut().unwrap() ^= 1; // payload damage
    assert_eq!(feed(&mut stack, &f), Some(Drop::TcpChecksum));
    assert_eq!(stack.connections(), 0);
}

#[test]
fn bad_lengths_are_counted() {
    let mut stack = server();
    let cases: [(usize, u8, &str); 5] = [
        (14, 0x44, "IHL 4"),
        (14, 0x55, "IPv5"),
        (14 + 3, 10, "total length below the header"),
        (14 + 20 + 12, 0x40, "TCP data offset 4"),
        (14 + 20 + 12, 0xf0, "TCP data offset beyond the segment"),
    ];
    for (at, value, what) in cases {
        let mut f = syn();
        f[at] = value;
        if at == 14 + 3 {
            f[14 + 2] = 0;
        }
        fix_checksums(&mut f);
        assert_eq!(feed(&mut stack, &f), Some(Drop::Malformed), "{what}");
    }
}

#[test]
fn unknown_ethertypes_fragments_and_strangers_are_counted() {
    let mut stack = server();
    let mut f = syn();
    f[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6
    assert_eq!(feed(&mut stack, &f), Some(Drop::Ethertype));
    let mut f = syn();
    f[14 + 6] = 0x20; // more fragments
    fix_checksums(&mut f);
    assert_eq!(feed(&mut stack, &f), Some(Drop::Fragment));
    let mut f = syn();
    f[14 + 9] = 17; // UDP
    fix_checksums(&mut f);
    assert_eq!(feed(&mut stack, &f), Some(Drop::Protocol));
    let f = frames::tcp(
        CLIENT,
        (Ipv4Addr::new(198, 18, 0, 99), 80),
        TcpControl::Syn,
        1,
        None,
        b"",
    );
    assert_eq!(feed(&mut stack, &f), Some(Drop::NotForUs));
    let mut f = syn();
    f[0..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]);
    assert_eq!(feed(&mut stack, &f), Some(Drop::NotForUs));
    assert_eq!(stack.connections(), 0);
}

/// A SYN whose options area holds `options` (zero-padded to 4 bytes), checksums valid.
fn syn_with_options(options: &[u8]) -> Vec<u8> {
    let mut f = syn();
    f.truncate(14 + 20 + 20); // drop the MSS option smoltcp emitted
    f.extend_from_slice(options);
    let tcp_len = 20 + options.len().div_ceil(4) * 4;
    f.resize(14 + 20 + tcp_len, 0);
    f[14 + 20 + 12] = ((tcp_len / 4) as u8) << 4;
    f[14 + 2..14 + 4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    fix_checksums(&mut f);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Garbage TCP options: dropped as malformed or handled (a SYN-ACK or RST), never a
    /// panic, and never a leaked slot.
    #[test]
    fn garbage_tcp_options(options in proptest::collection::vec(any::<u8>(), 1..40)) {
        let mut stack = server();
        let f = syn_with_options(&options);
        let why = feed(&mut stack, &f);
        prop_assert!(why.is_none() || why == Some(Drop::Malformed), "{:?}", why);
        prop_assert!(stack.connections() <= 1);
        if why.is_some() {
            prop_assert_eq!(stack.connections(), 0);
        }
    }

    /// Random damage anywhere in valid frames, with and without repaired checksums: every
    /// frame is either dropped (and counted under one reason) or processed.
    #[test]
    fn random_damage(
        which in 0..3usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        repair in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut stack = server();
        let mut f = match which { 0 => syn(), 1 => data(), _ => frames::arp_request(Pair::SERVER) };
        for (at, v) in edits {
            let i = at.index(f.len());
            f[i] = v;
        }
        if repair {
            fix_checksums(&mut f);
        }
        let len = cut.index(f.len() + 1);
        feed(&mut stack, &f[..len]);
        let c = stack.counters();
        prop_assert!(stack.connections() <= 1);
        prop_assert_eq!(c.rx_frames, 1);
    }
}
