//! Connections waiting for a neighbour's link-layer address, woken when it answers.
//!
//! When smoltcp has a segment for an on-link peer (or gateway) whose MAC it does not know,
//! it sends an ARP request or a neighbour solicitation *instead of* the segment and
//! silences that socket for a whole second (`DISCOVERY_SILENT_TIME`): the socket is allowed
//! to send again as soon as the neighbour is in the cache, but only if something polls it,
//! and on this stack nothing did before its timer fired a second later. A peer that knew
//! our MAC already (a client whose neighbour entry outlived a restart of the dataplane, an
//! IPv6 client, which needs no solicitation from us before its SYN) therefore waited a
//! second for its SYN-ACK, and Linux, whose first SYN retransmission is also due after
//! one second, often sent its SYN twice. Linux queues a packet waiting for resolution and
//! sends it with the answer; this module gets the same effect: the frame the stack sent
//! for a connection is read for a solicitation (see [`solicited`]), the connection is
//! noted with the address it asked for, and an ARP or neighbour-discovery frame from that
//! address ([`heard_from`]) puts the connection back on the dirty list, so it sends in the
//! same poll that read the answer.
//!
//! Frames are read at fixed offsets: what smoltcp builds (no VLAN tag, no IPv6 extension
//! headers) and what the parser lets through to smoltcp as control frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Connections remembered at most; when full, the ones older than smoltcp's silence are
/// forgotten, and a connection that finds no room waits out the silence as before.
const CAPACITY: usize = 1024;

/// smoltcp's `DISCOVERY_SILENT_TIME`: after it, the socket retries on its own.
const SILENT_MS: u64 = 1000;

/// The connections that asked for a neighbour, with the address and when.
#[derive(Debug, Default)]
pub(crate) struct Awaiting {
    waiting: Vec<(u32, IpAddr, u64)>,
}

impl Awaiting {
    /// `slot`'s last poll sent a solicitation for `addr` at `now_ms` instead of a segment.
    pub(crate) fn note(&mut self, slot: u32, addr: IpAddr, now_ms: u64) {
        if self.waiting.len() == CAPACITY {
            self.waiting
                .retain(|&(_, _, at)| now_ms.saturating_sub(at) < SILENT_MS);
        }
        if self.waiting.len() < CAPACITY {
            self.waiting.push((slot, addr, now_ms));
        }
    }

    /// `addr` has been heard from: forgets and yields the connections waiting for it.
    pub(crate) fn answered(&mut self, addr: IpAddr, mut wake: impl FnMut(u32)) {
        self.waiting.retain(|&(slot, a, _)| {
            let hit = a == addr;
            if hit {
                wake(slot);
            }
            !hit
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const ICMPV6: u8 = 58;
const NEIGHBOUR_SOLICIT: u8 = 135;
const NEIGHBOUR_ADVERT: u8 = 136;
/// Offsets in an Ethernet frame: ARP's operation, sender and target protocol addresses;
/// IPv6's next header and source; ICMPv6's type and the target of NS and NA.
const ARP_OP: usize = 20;
const ARP_SPA: usize = 28;
const ARP_TPA: usize = 38;
const IP6_NEXT: usize = 20;
const IP6_SRC: usize = 22;
const ICMP6_TYPE: usize = 54;
const ND_TARGET: usize = 62;

/// The address a transmitted frame asks the link-layer address of: an ARP request's
/// target, a neighbour solicitation's target. `None` for every other frame.
pub(crate) fn solicited(frame: &[u8]) -> Option<IpAddr> {
    match frame.get(12..14)? {
        t if t == ETHERTYPE_ARP => {
            (frame.get(ARP_OP..ARP_OP + 2)? == [0, 1]).then_some(())?;
            ipv4_at(frame, ARP_TPA)
        }
        t if t == ETHERTYPE_IPV6 => {
            (*frame.get(IP6_NEXT)? == ICMPV6 && *frame.get(ICMP6_TYPE)? == NEIGHBOUR_SOLICIT)
                .then_some(())?;
            ipv6_at(frame, ND_TARGET)
        }
        _ => None,
    }
}

/// Whose link-layer address a received frame may teach smoltcp's neighbour cache: the
/// sender of any ARP packet, the source of a neighbour solicitation or advertisement
/// (smoltcp fills its cache from these, when they carry a link-layer address).
pub(crate) fn heard_from(frame: &[u8]) -> Option<IpAddr> {
    match frame.get(12..14)? {
        t if t == ETHERTYPE_ARP => ipv4_at(frame, ARP_SPA),
        t if t == ETHERTYPE_IPV6 => {
            let kind = *frame.get(ICMP6_TYPE)?;
            (*frame.get(IP6_NEXT)? == ICMPV6
                && (kind == NEIGHBOUR_SOLICIT || kind == NEIGHBOUR_ADVERT))
                .then_some(())?;
            ipv6_at(frame, IP6_SRC)
        }
        _ => None,
    }
}

fn ipv4_at(frame: &[u8], at: usize) -> Option<IpAddr> {
    let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(b)))
}

fn ipv6_at(frame: &[u8], at: usize) -> Option<IpAddr> {
    let b: [u8; 16] = frame.get(at..at + 16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u8, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&ETHERTYPE_ARP);
        f[ARP_OP + 1] = op;
        f[ARP_SPA..ARP_SPA + 4].copy_from_slice(&spa);
        f[ARP_TPA..ARP_TPA + 4].copy_from_slice(&tpa);
        f
    }

    fn nd(kind: u8, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut f = vec![0u8; 86];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6);
        f[IP6_NEXT] = ICMPV6;
        f[IP6_SRC..IP6_SRC + 16].copy_from_slice(&src.octets());
        f[ICMP6_TYPE] = kind;
        f[ND_TARGET..ND_TARGET + 16].copy_from_slice(&target.octets());
        f
    }

    #[test]
    fn solicitations_and_answers_are_read_from_the_header() {
        let (us, peer) = ([198, 18, 0, 10], [198, 18, 0, 1]);
        let v4 = IpAddr::from(peer);
        assert_eq!(solicited(&arp(1, us, peer)), Some(v4));
        assert_eq!(solicited(&arp(2, us, peer)), None, "a reply asks nothing");
        assert_eq!(heard_from(&arp(2, peer, us)), Some(v4));
        assert_eq!(heard_from(&arp(1, peer, us)), Some(v4));

        let (us6, peer6): (Ipv6Addr, Ipv6Addr) =
            ("2001:2::10".parse().unwrap(), "2001:2::1".parse().unwrap());
        let ns = nd(NEIGHBOUR_SOLICIT, us6, peer6);
        assert_eq!(solicited(&ns), Some(IpAddr::V6(peer6)));
        let na = nd(NEIGHBOUR_ADVERT, peer6, peer6);
        assert_eq!(solicited(&na), None);
        assert_eq!(heard_from(&na), Some(IpAddr::V6(peer6)));
        let mut echo = na.clone();
        echo[ICMP6_TYPE] = 128;
        assert_eq!(heard_from(&echo), None, "an echo request teaches nothing");
        // Truncated frames and other EtherTypes are nothing.
        assert_eq!(solicited(&arp(1, us, peer)[..40]), None);
        assert_eq!(heard_from(&ns[..50]), None);
        assert_eq!(solicited(&ns[..70]), None, "its target cut off");
        let mut ipv4 = arp(1, us, peer);
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!((solicited(&ipv4), heard_from(&ipv4)), (None, None));
    }

    #[test]
    fn an_answer_wakes_only_the_connections_waiting_for_it() {
        let (a, b) = (IpAddr::from([198, 18, 0, 1]), IpAddr::from([198, 18, 0, 2]));
        let mut w = Awaiting::default();
        w.note(1, a, 0);
        w.note(2, b, 0);
        w.note(3, a, 5);
        let mut woken = Vec::new();
        w.answered(a, |s| woken.push(s));
        assert_eq!(woken, [1, 3]);
        w.answered(a, |s| woken.push(s));
        assert_eq!(woken, [1, 3], "each is woken once");
        w.answered(b, |s| woken.push(s));
        assert_eq!(woken, [1, 3, 2]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_full_list_forgets_what_smoltcp_retries_anyway() {
        let a = IpAddr::from([198, 18, 0, 1]);
        let mut w = Awaiting::default();
        for slot in 0..CAPACITY as u32 {
            w.note(slot, a, 0);
        }
        w.note(9999, a, SILENT_MS - 1);
        assert_eq!(
            w.waiting.len(),
            CAPACITY,
            "none old enough to forget: not noted"
        );
        w.note(7777, a, SILENT_MS);
        assert_eq!(w.waiting.len(), 1, "all silenced ones retried on their own");
        let mut woken = Vec::new();
        w.answered(a, |s| woken.push(s));
        assert_eq!(woken, [7777]);
    }
}
