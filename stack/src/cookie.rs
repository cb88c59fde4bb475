//! SYN cookies (RFC 4987 §3.6): answering a SYN without keeping any state, so that a flood
//! of SYNs from spoofed sources cannot fill the half-open budget and lock real clients out.
//!
//! # The cookie
//!
//! The SYN-ACK's initial sequence number *is* the state. It is 32 bits:
//!
//! ```text
//!  31                               3   2    1 0
//! +----------------------------------+------+-----+
//! | MAC: SipHash-1-3, top 29 bits    | t&1  | MSS |
//! +----------------------------------+------+-----+
//! ```
//!
//! The MAC is a keyed hash of the 4-tuple, the client's initial sequence number and the
//! MSS index, under a key for the current 64-second period `t` ([`PERIOD_MS`]); bit 2 is
//! the period's parity, so checking a cookie costs one hash: it names which of the two
//! periods a cookie may come from (the current one or the previous). A cookie therefore
//! lives between 64 and 128 seconds and dies after two periods. Period keys are derived
//! from a secret (SplitMix64 of the secret and the period): the stack's seed at first,
//! replaced at run time by [`Stack::set_cookie_secret`] (fresh OS randomness from the
//! dataplane). A new secret keys the periods after the one it is set in, so handshakes
//! in flight survive a rotation. A forged cookie is accepted with probability 2^-29 per
//! guess (about 2^-26 for a data segment: up to 7 guesses, see below); each guess costs the attacker
//! a packet that the stack counts
//! ([`Counters::cookies_invalid`](crate::Counters::cookies_invalid)).
//!
//! The client's ISN is a hash input, and the segment that brings the cookie back tells
//! it as `seq - 1` — when that segment is the handshake's ACK or the first data segment.
//! When both were lost or overtaken, the first to arrive is a later one: a data segment
//! `k` full-sized segments on names the ISN as `seq - 1 - k * mss` (the cookie's MSS,
//! which the SYN-ACK gave the client), and the stack tries `k` up to 3 (Linux does not,
//! and resets such clients), and also steps of the segment's own length when it is at
//! least 536 bytes (a client sending below its MSS). The segment itself may be short: a congestion window counted
//! in bytes (smoltcp's) ends a flight with a partial segment. One further on fails the
//! check and is answered like any segment for no connection.
//!
//! The MSS index picks from [`MSS_TABLE`] the largest entry not above the client's MSS (or
//! 536, RFC 9293 §3.7.1, if it sent none) and our own. What a cookie cannot carry is lost:
//! window scaling, SACK-permitted and timestamps (RFC 7323 §2.2: options the SYN-ACK did
//! not offer must not be used), so the SYN-ACK carries the MSS option only and the
//! connection runs with a window of at most 64 KiB, no SACK and no timestamps. Linux
//! stores these in the timestamp option when the client offers one; smoltcp cannot be
//! told to use options it did not negotiate itself, so this stack does not.
//!
//! # The bridge: sequence-number translation
//!
//! smoltcp chooses its own initial sequence number and has no API to set one or to build
//! an established socket from saved state. When a valid cookie comes back (an ACK with
//! `ack - 1` a valid cookie for `seq - 1`), the stack takes a slot with a listening
//! socket, feeds it a SYN it writes itself (the client's ISN, the MSS from the cookie, no
//! other options), lets smoltcp emit its SYN-ACK into a discarding queue to learn
//! smoltcp's ISN `S`, and then feeds the real ACK with its acknowledgement number moved
//! by `delta = S - cookie`. smoltcp's SYN-RECEIVED processing (RFC 9293 §3.10.7.4) finds
//! the ACK exact and moves to ESTABLISHED, and — as its SYN-ACK counts as sent and now
//! acknowledged in full — turns its retransmission timer back to idle; the only trace is
//! a zero round-trip sample, which smoltcp's 1-second minimum RTO absorbs. The
//! connection is then queued for accept exactly like a passive open and never counted as
//! half-open. This is the sequence adjustment Linux's SYNPROXY uses (`nf_ct_seqadj`):
//! from then on every segment in for that connection has its acknowledgement number
//! moved by `+delta` (on a copy of the frame; the checksum is left alone because the
//! stack verified it already and tells smoltcp not to, see `device::capabilities`), and
//! every segment out has its sequence number moved by `-delta`, with the TCP checksum
//! fixed incrementally (RFC 1624 eq. 3). Nothing else needs translating: the
//! acknowledgements we send are in the client's space, and without SACK the client's
//! segments carry no other numbers of ours.
//!
//! The alternatives were worse: patching smoltcp to take an ISN or restore a socket (a
//! fork to maintain), or a proxy that holds the handshake in a second socket (twice the
//! memory). Two cases end without a connection but without a RST either, so that the
//! client's next segment can try again: the listener has as many connections waiting for
//! accept as its backlog (counted as a refusal), or smoltcp's answer to the SYN is an
//! ARP request because the next hop's MAC is unknown (the request is sent).
//!
//! # A second cookie maker: the XDP program
//!
//! Nothing in a cookie needs the stack: the keys of the current period, the 4-tuple, the
//! ISN and the client's MSS make it. So the dataplane's XDP program (`ebpf/src/bpf/
//! steer.bpf.c`) answers IPv4 and IPv6 SYNs with the same SYN-ACK, bit for bit (a test
//! per family compares the two through `BPF_PROG_TEST_RUN`), by [`CookieKeys`]'s
//! definition, before they cost the worker an AF_XDP copy, a pass
//! through the stack and a transmission (6–7 µs on the veth bed, against ~140 ns of XDP:
//! a worker whose stack answered 174,000 SYNs a second and lost the rest of a flood lets
//! the program answer a generator's 450,000–665,000; `ebpf/src/lib.rs` has what the flood
//! test measured).
//! Each worker gives the program its stack's [`CookieKeys`] ([`Stack::cookie_keys`]) and
//! whether [`Stack::cookie_pressure`] holds, per rx queue, when they change; the ACK that
//! returns is checked here as for any cookie. The keys change only when the period does,
//! as [`Stack::set_cookie_secret`] keys the periods after the current one: a program a
//! millisecond late with new keys makes cookies of the previous period, which are still
//! valid. What the program cannot do is what needs the stack's state: the per-source limit
//! ([`ListenOptions::max_per_source`](crate::ListenOptions::max_per_source)) is applied
//! only when the ACK comes back, and a SYN for a 4-tuple that has a connection gets a
//! cookie rather than a challenge ACK (the client's ACK then fails the cookie check, or
//! finds its connection).
//!
//! # Cost
//!
//! Per connection: the 4-byte `Meta::seq_delta`. The timer node makes the record 8-aligned,
//! so it grows from 48 to 56 bytes (4 of them free) and the slot from 480 to 488: 8 bytes
//! per connection, and half the slots now span 9 cache lines rather than 8. Per segment
//! of an ordinary connection: one predictable branch in, one out (`delta == 0`). Per
//! segment of a cookie-born connection: a copy of the received frame into a scratch
//! buffer, and a 4-byte rewrite plus an incremental checksum update per transmitted frame.
//! Per cookie: one SipHash-1-3 of 17 bytes to make it, one to check it (up to seven for a
//! data segment). A delta of 0 (1 in 2^32) needs no translation, which is what
//! 0 means.

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;

use siphasher::sip::SipHasher13;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, IpRepr,
    Ipv4Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::config::mix;
use crate::device::MAX_FRAME;
use crate::seqshift::ETH;
use crate::table::FourTuple;

/// When a listener answers SYNs with SYN cookies (RFC 4987 §3.6): a SYN-ACK whose
/// sequence number encodes the handshake, so that a SYN costs no state and a flood of
/// them from spoofed sources cannot lock real clients out. A connection born from a
/// cookie works like any other, but without window scaling (its window is at most 64 KiB),
/// SACK or timestamps, and with its MSS rounded down to 536, 1220, 1440 or 1460.
/// A cookie is valid for 64 to 128 seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SynCookies {
    /// When the listener's backlog or the stack's half-open budget is full, answer a SYN
    /// with a cookie instead of refusing it.
    #[default]
    Auto,
    /// Answer every SYN with a cookie: no half-open state at all, and every connection
    /// goes without window scaling, SACK and timestamps.
    Always,
    /// Never: a SYN beyond the limits is refused.
    Off,
}

impl SynCookies {
    /// The name used in flags and configuration files: `auto`, `always` or `off`.
    pub fn name(self) -> &'static str {
        match self {
            SynCookies::Auto => "auto",
            SynCookies::Always => "always",
            SynCookies::Off => "off",
        }
    }
}

impl fmt::Display for SynCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A SYN-cookie mode name that is not `auto`, `always` or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynCookiesError(pub String);

impl fmt::Display for SynCookiesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown SYN-cookie mode {:?}: use auto, always or off",
            self.0
        )
    }
}

impl std::error::Error for SynCookiesError {}

impl FromStr for SynCookies {
    type Err = SynCookiesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SynCookies::Auto),
            "always" => Ok(SynCookies::Always),
            "off" => Ok(SynCookies::Off),
            _ => Err(SynCookiesError(s.to_owned())),
        }
    }
}

/// Length of a key period: a cookie is accepted in the period it was made and the next.
pub(crate) const PERIOD_MS: u64 = 64_000;

/// The MSS values a cookie can carry (2 bits): the classic minimum (RFC 9293 §3.7.1),
/// IPv6-tunnel-sized, PPPoE/VPN-sized and Ethernet.
pub(crate) const MSS_TABLE: [u16; 4] = [536, 1220, 1440, 1460];

/// How many full-sized segments after the first one a returning cookie may come on (see
/// `Jar::recover`).
const EARLY_SEGMENTS: u32 = 3;

/// Our own MSS: what smoltcp announces for the stack's 1500-byte MTU (IPv4; 20 bytes
/// less over IPv6, [`Syn::our_mss`]).
pub(crate) const OUR_MSS: u16 = (MAX_FRAME - 14 - 20 - 20) as u16;

/// The largest cookie SYN-ACK (and synthesized SYN): Ethernet, IPv6, TCP with one MSS
/// option ([`Syn::len`] for one).
pub(crate) const SYN_FRAME: usize = ETH + 40 + 24;

/// The index into [`MSS_TABLE`] for a client that announced `client` (`None`: no option).
pub(crate) fn mss_index(client: Option<u16>) -> u8 {
    let cap = client.filter(|&m| m != 0).unwrap_or(536).min(OUR_MSS);
    MSS_TABLE.iter().rposition(|&m| m <= cap).unwrap_or(0) as u8
}

/// The keys of one cookie period, for a cookie maker outside the stack (the XDP program,
/// see the module docs): the cookie for a SYN from `remote_addr:remote_port` to
/// `local_addr:local_port` with initial sequence number `isn`, whose MSS index is `m`,
/// is
///
/// ```text
/// IPv4:  mac = SipHash-1-3(k0, k1; u64 LE remote_addr << 32 | local_addr,
///                                  u64 LE ports_isn, u8 m)              (17 bytes)
/// IPv6:  mac = SipHash-1-3(k0, k1; u128 LE remote_addr, u128 LE local_addr,
///                                  u64 LE ports_isn, u8 m)              (41 bytes)
/// ports_isn = remote_port << 48 | local_port << 32 | isn
/// cookie    = (mac as u32 & !7) | parity << 2 | m
/// ```
///
/// with the addresses as numbers (`u32::from(Ipv4Addr)`, `u128::from(Ipv6Addr)`: the
/// first byte on the wire is the most significant; an IPv4-mapped IPv6 address counts
/// as IPv4), each value's bytes little-endian, and `m` the index into 536, 1220, 1440,
/// 1460 of the largest entry not above the client's MSS (536 without the option) and
/// ours: 1460 over IPv4, 1440 over IPv6. The SYN-ACK announces that MSS of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieKeys {
    /// The first SipHash key.
    pub k0: u64,
    /// The second SipHash key.
    pub k1: u64,
    /// The period's parity: bit 2 of its cookies.
    pub parity: bool,
}

impl CookieKeys {
    /// The cookie for a SYN on `t` with initial sequence number `isn` and MSS index
    /// `mss` (its low two bits), by the formula above: the one definition of a cookie,
    /// which the stack makes and checks with, and which any stateless SYN answerer
    /// (`c10m-bench reflect`) can use as a keyed-hash initial sequence number.
    pub fn cookie(&self, t: &FourTuple, isn: u32, mss: u8) -> u32 {
        let mss = mss & 3;
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        t.write_addrs(&mut h);
        h.write_u64(
            u64::from(t.remote_port) << 48 | u64::from(t.local_port) << 32 | u64::from(isn),
        );
        h.write_u8(mss);
        (h.finish() as u32 & !7) | (u32::from(self.parity) << 2) | u32::from(mss)
    }
}

/// The cookie secret and the scratch buffer of cookie-born segments.
pub(crate) struct Jar {
    /// Keys the periods from `since` on.
    secret: u64,
    /// Keys the periods before `since` (the only one that matters: `since - 1`).
    previous: u64,
    since: u64,
    pub(crate) scratch: Vec<u8>,
}

impl Jar {
    pub(crate) fn new(secret: u64) -> Jar {
        Jar {
            secret,
            previous: secret,
            since: 0,
            scratch: Vec::with_capacity(MAX_FRAME),
        }
    }

    /// A new secret, for the periods after `now_ms`'s: cookies already made in this
    /// period keep theirs.
    pub(crate) fn set_secret(&mut self, now_ms: u64, secret: u64) {
        let period = now_ms / PERIOD_MS;
        if period >= self.since {
            // `secret` keys this period: it keys the periods before the new one's.
            self.previous = self.secret;
        }
        self.secret = secret;
        self.since = period + 1;
    }

    /// The SipHash keys of `period`.
    fn keys(&self, period: u64) -> (u64, u64) {
        let secret = if period >= self.since {
            self.secret
        } else {
            self.previous
        };
        (
            mix(secret, period.wrapping_mul(2)),
            mix(secret, period.wrapping_mul(2) | 1),
        )
    }

    /// The keys of `period` as a cookie maker outside the stack gets them.
    pub(crate) fn period_keys(&self, period: u64) -> CookieKeys {
        let (k0, k1) = self.keys(period);
        CookieKeys {
            k0,
            k1,
            parity: period & 1 == 1,
        }
    }

    /// The cookie for a SYN with initial sequence number `isn` on `t`, at `now_ms`.
    pub(crate) fn make(&self, now_ms: u64, t: &FourTuple, isn: u32, mss: u8) -> u32 {
        self.period_keys(now_ms / PERIOD_MS).cookie(t, isn, mss)
    }

    /// The client's ISN and the MSS index, if `cookie` (from `seg`'s acknowledgement
    /// number) is valid. The segment is normally the handshake's ACK or the first data
    /// segment after it (`seq - 1` is the ISN). When both were lost or overtaken, a
    /// data segment `k` full-sized segments later names the ISN as `seq - 1 - k * mss`:
    /// [`EARLY_SEGMENTS`] such guesses are tried, so that the connection is born (with the
    /// segment buffered out of order) rather than reset. Each guess is a chance for a
    /// forger too: 2^-29 per guess, about 2^-26 for a forged data segment (up to 7 guesses).
    pub(crate) fn recover(
        &self,
        now_ms: u64,
        t: &FourTuple,
        seg: &Segment,
        cookie: u32,
    ) -> Option<(u32, u8)> {
        let first = seg.seq.wrapping_sub(1);
        if let Some(mss) = self.check(now_ms, t, first, cookie) {
            return Some((first, mss));
        }
        if seg.payload == 0 {
            return None;
        }
        // The segments before it were full-sized: the MSS the cookie names (its SYN-ACK
        // told the client). The segment itself may be shorter: the tail of a flight cut
        // by a congestion window counted in bytes (smoltcp's is).
        // A client may also send segments below the MSS it was given, all of one size:
        // then this segment's own length is the step.
        let full = u32::from(MSS_TABLE[usize::from((cookie & 3) as u8)]);
        let own = (seg.payload >= usize::from(MSS_TABLE[0]) && seg.payload as u32 != full)
            .then_some(seg.payload as u32);
        [Some(full), own].into_iter().flatten().find_map(|step| {
            (1..=EARLY_SEGMENTS).find_map(|k| {
                let isn = first.wrapping_sub(k * step);
                self.check(now_ms, t, isn, cookie).map(|mss| (isn, mss))
            })
        })
    }

    /// Whether `cookie` was made for `t` and `isn` in this period or the previous one:
    /// its MSS index if so.
    pub(crate) fn check(&self, now_ms: u64, t: &FourTuple, isn: u32, cookie: u32) -> Option<u8> {
        let now = now_ms / PERIOD_MS;
        let period = if u64::from(cookie >> 2 & 1) == now & 1 {
            now
        } else {
            now.checked_sub(1)?
        };
        let mss = (cookie & 3) as u8;
        (self.period_keys(period).cookie(t, isn, mss) == cookie).then_some(mss)
    }
}

/// What the cookie code reads of a received segment (already validated by `parse`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub(crate) src_mac: EthernetAddress,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) window: u16,
    pub(crate) mss: Option<u16>,
    pub(crate) payload: usize,
}

impl Segment {
    pub(crate) fn read(frame: &[u8]) -> Option<Segment> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let (s, d, payload) = match eth.ethertype() {
            #[cfg(feature = "ipv6")]
            EthernetProtocol::Ipv6 => {
                let ip = smoltcp::wire::Ipv6Packet::new_checked(eth.payload()).ok()?;
                let (s, d) = (ip.src_addr(), ip.dst_addr());
                (IpAddress::Ipv6(s), IpAddress::Ipv6(d), ip.payload())
            }
            _ => {
                let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
                let (s, d) = (ip.src_addr(), ip.dst_addr());
                (IpAddress::Ipv4(s), IpAddress::Ipv4(d), ip.payload())
            }
        };
        let tcp = TcpPacket::new_checked(payload).ok()?;
        let repr = TcpRepr::parse(&tcp, &s, &d, &ChecksumCapabilities::ignored()).ok()?;
        Some(Segment {
            src_mac: eth.src_addr(),
            seq: repr.seq_number.0 as u32,
            ack: repr.ack_number.map_or(0, |a| a.0 as u32),
            window: repr.window_len,
            mss: repr.max_seg_size,
            payload: repr.payload.len(),
        })
    }
}

/// A SYN (`ack: None`) or SYN-ACK with no option but the MSS: the cookie SYN-ACK, and
/// the SYN the stack feeds smoltcp for a returning cookie.
pub(crate) struct Syn {
    /// Source and destination MAC.
    pub(crate) macs: (EthernetAddress, EthernetAddress),
    pub(crate) src: (IpAddress, u16),
    pub(crate) dst: (IpAddress, u16),
    pub(crate) seq: u32,
    pub(crate) ack: Option<u32>,
    pub(crate) window: u16,
    pub(crate) mss: u16,
}

impl Syn {
    /// The frame's length: 58 bytes over IPv4, 78 over IPv6.
    pub(crate) fn len(&self) -> usize {
        match self.src.0 {
            IpAddress::Ipv4(_) => SYN_FRAME - 20,
            #[cfg(feature = "ipv6")]
            IpAddress::Ipv6(_) => SYN_FRAME,
        }
    }

    /// [`OUR_MSS`] for this frame's family.
    pub(crate) fn our_mss(ip: IpAddress) -> u16 {
        match ip {
            IpAddress::Ipv4(_) => OUR_MSS,
            #[cfg(feature = "ipv6")]
            IpAddress::Ipv6(_) => OUR_MSS - 20,
        }
    }

    /// Writes the frame ([`len`](Self::len) bytes) into `buf`, checksums filled. Source
    /// and destination are of one family (both from one [`FourTuple`]).
    pub(crate) fn write(&self, buf: &mut [u8]) {
        let tcp = TcpRepr {
            src_port: self.src.1,
            dst_port: self.dst.1,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.window,
            window_scale: None,
            max_seg_size: Some(self.mss),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = IpRepr::new(
            self.src.0,
            self.dst.0,
            IpProtocol::Tcp,
            tcp.buffer_len(),
            64,
        );
        let eth = EthernetRepr {
            src_addr: self.macs.0,
            dst_addr: self.macs.1,
            ethertype: match ip {
                IpRepr::Ipv4(_) => EthernetProtocol::Ipv4,
                #[cfg(feature = "ipv6")]
                IpRepr::Ipv6(_) => EthernetProtocol::Ipv6,
            },
        };
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut f);
        ip.emit(f.payload_mut(), &caps);
        let t = &mut f.payload_mut()[ip.header_len()..];
        tcp.emit(
            &mut TcpPacket::new_unchecked(t),
            &self.src.0,
            &self.dst.0,
            &caps,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::addr_v4;
    use std::net::Ipv4Addr;

    fn tuple(port: u16) -> FourTuple {
        FourTuple {
            remote_addr: addr_v4(Ipv4Addr::new(198, 19, 0, 7)),
            local_addr: addr_v4(Ipv4Addr::new(198, 18, 0, 10)),
            remote_port: port,
            local_port: 80,
        }
    }

    #[test]
    fn mss_index_picks_the_largest_entry_that_fits() {
        assert_eq!(mss_index(None), 0, "no option: 536");
        assert_eq!(mss_index(Some(0)), 0, "zero is no option");
        assert_eq!(mss_index(Some(100)), 0, "below the table: its smallest");
        assert_eq!(mss_index(Some(536)), 0);
        assert_eq!(mss_index(Some(1219)), 0);
        assert_eq!(mss_index(Some(1220)), 1);
        assert_eq!(mss_index(Some(1400)), 1);
        assert_eq!(mss_index(Some(1440)), 2);
        assert_eq!(mss_index(Some(1459)), 2);
        assert_eq!(mss_index(Some(1460)), 3);
        assert_eq!(mss_index(Some(9000)), 3, "never above ours");
    }

    #[test]
    fn cookies_carry_the_mss_and_live_two_periods() {
        let jar = Jar::new(42);
        let t = tuple(5000);
        for mss in 0..4u8 {
            for start in [0, 5 * PERIOD_MS + 1, 6 * PERIOD_MS - 1] {
                let c = jar.make(start, &t, 1234, mss);
                assert_eq!(c & 3, u32::from(mss));
                assert_eq!(jar.check(start, &t, 1234, c), Some(mss));
                let next = (start / PERIOD_MS + 1) * PERIOD_MS;
                assert_eq!(jar.check(next, &t, 1234, c), Some(mss), "next period");
                assert_eq!(jar.check(next + PERIOD_MS - 1, &t, 1234, c), Some(mss));
                assert_eq!(jar.check(next + PERIOD_MS, &t, 1234, c), None, "t + 2");
                assert_eq!(jar.check(start, &t, 1235, c), None, "other ISN");
                assert_eq!(jar.check(start, &tuple(5001), 1234, c), None, "other tuple");
                assert_eq!(jar.check(start, &t, 1234, c ^ 1), None, "MSS is signed");
            }
        }
        // A cookie from before time began is not accepted at period 0.
        let c = jar.make(0, &t, 1, 0) ^ 4;
        assert_eq!(jar.check(0, &t, 1, c), None);
    }

    #[test]
    fn a_new_secret_keeps_cookies_in_flight() {
        let mut jar = Jar::new(1);
        let t = tuple(6000);
        let before = jar.make(11 * PERIOD_MS, &t, 9, 3);
        jar.set_secret(11 * PERIOD_MS + 5, 7);
        jar.set_secret(11 * PERIOD_MS + 6, 2);
        let same = jar.make(11 * PERIOD_MS + 7, &t, 9, 3);
        assert_eq!(same, before, "the period's cookies keep their secret");
        assert_eq!(jar.check(12 * PERIOD_MS, &t, 9, before), Some(3));
        let after = jar.make(12 * PERIOD_MS, &t, 9, 3);
        assert_eq!(
            after,
            Jar::new(2).make(12 * PERIOD_MS, &t, 9, 3),
            "the last secret set keys the next period"
        );
        assert_ne!(after, Jar::new(1).make(12 * PERIOD_MS, &t, 9, 3));
        jar.set_secret(12 * PERIOD_MS, 3);
        assert_eq!(jar.check(13 * PERIOD_MS, &t, 9, after), Some(3));
        assert_eq!(jar.check(13 * PERIOD_MS, &t, 9, before), None, "t + 2");
    }
}
