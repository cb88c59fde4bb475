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
//! guess (2^-27 for a full-sized data segment, see below); each guess costs the attacker
//! a packet that the stack counts
//! ([`Counters::cookies_invalid`](crate::Counters::cookies_invalid)).
//!
//! The client's ISN is a hash input, and the segment that brings the cookie back tells
//! it as `seq - 1` — when that segment is the handshake's ACK or the first data segment.
//! When both were lost or overtaken, the first to arrive is a later one: a full-sized
//! segment `k` segments on names the ISN as `seq - 1 - k * len`, and the stack tries
//! `k` up to 3 (Linux does not, and resets such clients); a shorter segment, or one
//! further on, fails the check and is answered like any segment for no connection.
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
//! # Cost
//!
//! Per connection: the 4-byte `Meta::seq_delta`. The timer node makes the record 8-aligned,
//! so it grows from 48 to 56 bytes (4 of them free) and the slot from 480 to 488: 8 bytes
//! per connection, and half the slots now span 9 cache lines rather than 8. Per segment
//! of an ordinary connection: one predictable branch in, one out (`delta == 0`). Per
//! segment of a cookie-born connection: a copy of the received frame into a scratch
//! buffer, and a 4-byte rewrite plus an incremental checksum update per transmitted frame.
//! Per cookie: one SipHash-1-3 of 17 bytes to make it, one to check it (up to four for a
//! full-sized data segment). A delta of 0 (1 in 2^32) needs no translation, which is what
//! 0 means.

use std::fmt;
use std::hash::Hasher;
use std::net::Ipv4Addr;
use std::str::FromStr;

use siphasher::sip::SipHasher13;
use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::config::mix;
use crate::counters::{Refusal, state_index};
use crate::device::{MAX_FRAME, Port, TxQueue, TxTally};
use crate::mem;
use crate::stack::{Stack, ms};
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

/// Our own MSS: what smoltcp announces for the stack's 1500-byte MTU.
const OUR_MSS: u16 = (MAX_FRAME - 14 - 20 - 20) as u16;

const ETH: usize = 14;
const IP: usize = 20;
/// A cookie SYN-ACK (and our synthesized SYN): Ethernet, IPv4, TCP with one MSS option.
const SYN_FRAME: usize = ETH + IP + 24;

/// The index into [`MSS_TABLE`] for a client that announced `client` (`None`: no option).
pub(crate) fn mss_index(client: Option<u16>) -> u8 {
    let cap = client.filter(|&m| m != 0).unwrap_or(536).min(OUR_MSS);
    MSS_TABLE.iter().rposition(|&m| m <= cap).unwrap_or(0) as u8
}

/// The cookie secret and the scratch buffer of cookie-born segments.
pub(crate) struct Jar {
    /// Keys the periods from `since` on.
    secret: u64,
    /// Keys the periods before `since` (the only one that matters: `since - 1`).
    previous: u64,
    since: u64,
    scratch: Vec<u8>,
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

    fn mac(&self, period: u64, t: &FourTuple, isn: u32, mss: u8) -> u32 {
        let secret = if period >= self.since {
            self.secret
        } else {
            self.previous
        };
        let mut h = SipHasher13::new_with_keys(
            mix(secret, period.wrapping_mul(2)),
            mix(secret, period.wrapping_mul(2) | 1),
        );
        h.write_u64(u64::from(t.remote_addr) << 32 | u64::from(t.local_addr));
        h.write_u64(
            u64::from(t.remote_port) << 48 | u64::from(t.local_port) << 32 | u64::from(isn),
        );
        h.write_u8(mss);
        h.finish() as u32
    }

    /// The cookie for a SYN with initial sequence number `isn` on `t`, at `now_ms`.
    pub(crate) fn make(&self, now_ms: u64, t: &FourTuple, isn: u32, mss: u8) -> u32 {
        let period = now_ms / PERIOD_MS;
        let mss = mss & 3;
        (self.mac(period, t, isn, mss) & !7) | ((period as u32 & 1) << 2) | u32::from(mss)
    }

    /// The client's ISN and the MSS index, if `cookie` (from `seg`'s acknowledgement
    /// number) is valid. The segment is normally the handshake's ACK or the first data
    /// segment after it (`seq - 1` is the ISN). When both were lost or overtaken, a
    /// full-sized segment `k` segments later names the ISN as `seq - 1 - k * len`:
    /// [`EARLY_SEGMENTS`] such guesses are tried, so that the connection is born (with the
    /// segment buffered out of order) rather than reset. Each guess is a chance for a
    /// forger too: 2^-29 per guess, 2^-27 for a forged full-sized segment.
    fn recover(&self, now_ms: u64, t: &FourTuple, seg: &Segment, cookie: u32) -> Option<(u32, u8)> {
        let first = seg.seq.wrapping_sub(1);
        if let Some(mss) = self.check(now_ms, t, first, cookie) {
            return Some((first, mss));
        }
        if seg.payload < usize::from(MSS_TABLE[0]) {
            return None;
        }
        (1..=EARLY_SEGMENTS).find_map(|k| {
            let isn = first.wrapping_sub(k * seg.payload as u32);
            self.check(now_ms, t, isn, cookie).map(|mss| (isn, mss))
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
        (self.mac(period, t, isn, mss) & !7 == cookie & !7).then_some(mss)
    }
}

/// What the cookie code reads of a received segment (already validated by `parse`).
#[derive(Debug, Clone, Copy)]
struct Segment {
    src_mac: EthernetAddress,
    seq: u32,
    ack: u32,
    window: u16,
    mss: Option<u16>,
    payload: usize,
}

impl Segment {
    fn read(frame: &[u8]) -> Option<Segment> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
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
struct Syn {
    /// Source and destination MAC.
    macs: (EthernetAddress, EthernetAddress),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: Option<u32>,
    window: u16,
    mss: u16,
}

impl Syn {
    /// Writes the frame ([`SYN_FRAME`] bytes) into `buf`, checksums filled.
    fn write(&self, buf: &mut [u8]) {
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
        let ip = Ipv4Repr {
            src_addr: self.src.0,
            dst_addr: self.dst.0,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: self.macs.0,
            dst_addr: self.macs.1,
            ethertype: EthernetProtocol::Ipv4,
        };
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        let (src, dst) = (IpAddress::Ipv4(self.src.0), IpAddress::Ipv4(self.dst.0));
        tcp.emit(&mut t, &src, &dst, &caps);
    }
}

/// Where the TCP header of an Ethernet/IPv4/TCP frame starts, if it is one.
fn tcp_at(frame: &[u8]) -> Option<usize> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(ETH + 9)? != 6 {
        return None;
    }
    let at = ETH + usize::from(frame.get(ETH)? & 0x0f) * 4;
    (frame.len() >= at + 20).then_some(at)
}

fn read_u32(frame: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
}

/// RFC 1624 eq. 3: the ones'-complement checksum `hc` after a 32-bit field changed from
/// `old` to `new`: HC' = ~(~HC + ~m + m'), word by word.
pub(crate) fn checksum_update(hc: u16, old: u32, new: u32) -> u16 {
    let mut sum = u32::from(!hc) + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Moves the sequence number of a transmitted TCP frame from smoltcp's space into the
/// peer's (`-delta`), fixing the TCP checksum incrementally. Other frames pass untouched.
pub(crate) fn shift_seq(frame: &mut [u8], delta: u32) {
    let Some(at) = tcp_at(frame) else {
        return;
    };
    let old = read_u32(frame, at + 4);
    let new = old.wrapping_sub(delta);
    frame[at + 4..at + 8].copy_from_slice(&new.to_be_bytes());
    let hc = u16::from_be_bytes([frame[at + 16], frame[at + 17]]);
    frame[at + 16..at + 18].copy_from_slice(&checksum_update(hc, old, new).to_be_bytes());
}

/// Moves the acknowledgement number of a received TCP frame from the peer's space into
/// smoltcp's (`+delta`). The checksum is not fixed: smoltcp does not verify it on receive
/// (`device::capabilities`); the stack did, before.
fn shift_ack(frame: &mut [u8], delta: u32) {
    let Some(at) = tcp_at(frame) else {
        return;
    };
    let new = read_u32(frame, at + 8).wrapping_add(delta);
    frame[at + 8..at + 12].copy_from_slice(&new.to_be_bytes());
}

/// Keeps the first frame transmitted into it: smoltcp's SYN-ACK during the bridge.
struct Capture<'a> {
    frame: &'a mut Vec<u8>,
}

impl TxQueue for Capture<'_> {
    fn has_room(&self) -> bool {
        true
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        if self.frame.is_empty() {
            self.frame.resize(len, 0);
            fill(self.frame)
        } else {
            fill(&mut vec![0; len])
        }
    }
}

impl Stack {
    /// Replaces the secret SYN cookies are keyed with (at first derived from
    /// [`Config::seed`](crate::Config::seed)). Feed it fresh randomness from the OS now
    /// and then (every few minutes): a cookie made before the change stays valid for the
    /// rest of its life.
    pub fn set_cookie_secret(&mut self, now: Instant, secret: u64) {
        self.cookies.set_secret(ms(now), secret);
    }

    /// Whether a SYN for listener `l` that `admit` refused for `why` gets a cookie.
    pub(crate) fn cookie_instead(&self, l: usize, why: Refusal) -> bool {
        let lst = &self.listeners[l];
        lst.opts.syn_cookies == SynCookies::Auto
            && match why {
                Refusal::HalfOpen => true,
                // Full of half-open connections, not of ones the application has yet to
                // accept (a cookie's ACK would find no room either).
                Refusal::Backlog => lst.queued < lst.opts.backlog,
                Refusal::Slots | Refusal::Buffers | Refusal::PerSource => false,
            }
    }

    /// Answers a SYN for listener `l` with a cookie SYN-ACK, keeping no state.
    pub(crate) fn send_cookie<T: TxQueue>(
        &mut self,
        now: Instant,
        l: usize,
        key: FourTuple,
        frame: &[u8],
        tx: &mut T,
    ) {
        let Some(syn) = Segment::read(frame) else {
            return;
        };
        if !tx.has_room() {
            return;
        }
        let mss = mss_index(syn.mss);
        let cookie = self.cookies.make(ms(now), &key, syn.seq, mss);
        let window = self.listeners[l].opts.socket.rx_buf.min(65535) as u16;
        let answer = Syn {
            macs: (self.mac, syn.src_mac),
            src: (Ipv4Addr::from(key.local_addr), key.local_port),
            dst: (Ipv4Addr::from(key.remote_addr), key.remote_port),
            seq: cookie,
            ack: Some(syn.seq.wrapping_add(1)),
            window,
            mss: OUR_MSS,
        };
        let tally = &mut self.tally;
        tx.transmit(SYN_FRAME, |buf| {
            answer.write(buf);
            tally.count(buf);
        });
        self.counters.cookies_sent += 1;
    }

    /// An ACK that matched no connection, for a port that may have a listener: if it
    /// returns a valid cookie, the connection is born (see the module docs) and the frame
    /// is consumed. Returns false, for the ordinary no-connection path, otherwise.
    pub(crate) fn ingress_cookie_ack<T: TxQueue>(
        &mut self,
        now: Instant,
        key: FourTuple,
        frame: &[u8],
        tx: &mut T,
    ) -> bool {
        let l = usize::from(self.ports[usize::from(key.local_port)]);
        let Some(lst) = l.checked_sub(1).and_then(|l| self.listeners.get(l)) else {
            return false;
        };
        if !lst.open || lst.opts.syn_cookies == SynCookies::Off {
            return false;
        }
        let Some(seg) = Segment::read(frame) else {
            return false;
        };
        let cookie = seg.ack.wrapping_sub(1);
        let Some((isn, mss)) = self.cookies.recover(ms(now), &key, &seg, cookie) else {
            self.counters.cookies_invalid += 1;
            return false;
        };
        // Past this point the client is real: whatever happens, it gets no RST.
        if lst.queued >= lst.opts.backlog {
            self.counters.refuse(Refusal::Backlog);
            return true;
        }
        let l = l - 1;
        if self.over_source_limit(l, key.remote_addr) {
            self.counters.refuse(Refusal::PerSource);
            return true;
        }
        let profile = self.listeners[l].profile;
        let local = Ipv4Addr::from(key.local_addr);
        let slot = match self.open_slot(key, profile, |s, _| {
            // A non-zero port (checked by `listen`) cannot fail to listen.
            let _ = s.listen((IpAddress::Ipv4(local), key.local_port));
        }) {
            Ok(slot) => slot,
            Err(why) => {
                self.counters.refuse(why);
                return true;
            }
        };
        // Counted like a passive open's, since `free_slot` uncounts every listener slot.
        self.count_source(l, key.remote_addr, true);
        let Some(isn_ours) = self.bridge(now, slot, &key, &seg, (isn, mss), tx) else {
            log::debug!("SYN cookie of {key:?}: smoltcp sent no SYN-ACK (neighbour unknown?)");
            self.free_slot(slot);
            return true;
        };
        let id = self.slab.id(slot);
        self.slab.slots[slot as usize].meta.seq_delta = isn_ours.wrapping_sub(cookie);
        self.ingress_slot(now, slot, frame, tx);
        if let Some(slot) = self.slab.check(id) {
            if self.slab.slots[slot as usize].meta.state == state_index(State::SynReceived) as u8 {
                // smoltcp did not take the ACK (it should always): do not leave a
                // half-open connection that no budget counts.
                self.free_slot(slot);
                return true;
            }
            self.counters.cookies_accepted += 1;
        }
        true
    }

    /// Brings the fresh listening socket in `slot` to SYN-RECEIVED with a SYN like the
    /// client's, and returns the initial sequence number smoltcp chose (read from the
    /// SYN-ACK it sends, which goes nowhere). The slot stays out of the half-open count.
    fn bridge<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        key: &FourTuple,
        seg: &Segment,
        (isn, mss): (u32, u8),
        tx: &mut T,
    ) -> Option<u32> {
        let i = slot as usize;
        let mut syn = [0u8; SYN_FRAME];
        Syn {
            macs: (seg.src_mac, self.mac),
            src: (Ipv4Addr::from(key.remote_addr), key.remote_port),
            dst: (Ipv4Addr::from(key.local_addr), key.local_port),
            seq: isn,
            ack: None,
            window: seg.window,
            mss: MSS_TABLE[usize::from(mss & 3)],
        }
        .write(&mut syn);
        let mut captured = std::mem::take(&mut self.cookies.scratch);
        captured.clear();
        let mut set = mem::one_slot(&mut self.slab.slots[i].storage);
        let mut tally = TxTally::default();
        let mut capture = Capture {
            frame: &mut captured,
        };
        let mut port = Port {
            rx: Some(&syn),
            tx: &mut capture,
            tally: &mut tally,
            caps: &self.caps,
            seq_delta: 0,
        };
        self.iface.poll_ingress_single(now, &mut port, &mut set);
        let state = set.get::<tcp::Socket>(SocketHandle::default()).state();
        if state == State::SynReceived {
            self.iface.poll_egress(now, &mut port, &mut set);
        }
        drop(set);
        let answer = tcp_at(&captured).and_then(|at| {
            // SYN|ACK from our port: smoltcp's answer to the SYN.
            let ok = captured[at + 13] & 0x12 == 0x12
                && captured[at..at + 2] == key.local_port.to_be_bytes();
            ok.then(|| read_u32(&captured, at + 4))
        });
        if answer.is_none() && captured.get(12..14) == Some(&[0x08, 0x06]) {
            // An ARP request for the next hop: the connection's frames need it.
            let frame = &captured;
            let tally = &mut self.tally;
            if tx.has_room() {
                tx.transmit(frame.len(), |buf| {
                    buf.copy_from_slice(frame);
                    tally.count(buf);
                });
            }
        }
        self.cookies.scratch = captured;
        let ours = answer?;
        let m = &mut self.slab.slots[i].meta;
        // RCV.NXT after the client's SYN, for RFC 5961's RST test (`defense`): the SYN
        // went to smoltcp here, not through the stack's ingress that follows it.
        m.rcv_nxt = (isn as u16).wrapping_add(1);
        self.counters.states[usize::from(m.state)] -= 1;
        m.state = state_index(State::SynReceived) as u8;
        self.counters.states[usize::from(m.state)] += 1;
        Some(ours)
    }

    /// A segment for a cookie-born connection: its acknowledgement number moves into
    /// smoltcp's space on a copy of the frame.
    pub(crate) fn ingress_cookie_born<T: TxQueue>(
        &mut self,
        now: Instant,
        slot: u32,
        frame: &[u8],
        tx: &mut T,
    ) {
        let delta = self.slab.slots[slot as usize].meta.seq_delta;
        let mut scratch = std::mem::take(&mut self.cookies.scratch);
        scratch.clear();
        scratch.extend_from_slice(frame);
        shift_ack(&mut scratch, delta);
        self.ingress_polled(now, slot, &scratch, tx);
        self.cookies.scratch = scratch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tuple(port: u16) -> FourTuple {
        FourTuple {
            remote_addr: u32::from(Ipv4Addr::new(198, 19, 0, 7)),
            local_addr: u32::from(Ipv4Addr::new(198, 18, 0, 10)),
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

    fn segment(seq: u32, payload: &[u8], ports: (u16, u16)) -> Vec<u8> {
        let mut buf = vec![0u8; ETH + IP + 20 + payload.len()];
        let tcp = TcpRepr {
            src_port: ports.0,
            dst_port: ports.1,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(77)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 19, 1, 2));
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_ethertype(EthernetProtocol::Ipv4);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &caps);
        buf
    }

    proptest! {
        #[test]
        fn incremental_checksum_matches_a_full_recompute(
            seq: u32,
            delta: u32,
            ports: (u16, u16),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut shifted = segment(seq, &payload, ports);
            shift_seq(&mut shifted, delta);
            let full = segment(seq.wrapping_sub(delta), &payload, ports);
            prop_assert_eq!(shifted, full);
        }

        #[test]
        fn checksum_update_is_rfc_1624(hc: u16, old: u32, new: u32) {
            // Adding the change to the sum and back gives the original (ones' complement).
            let there = checksum_update(hc, old, new);
            let back = checksum_update(there, new, old);
            // +0 and -0 are the same number in ones' complement.
            prop_assert!(back == hc || (back, hc) == (0, 0xffff) || (back, hc) == (0xffff, 0));
        }
    }

    #[test]
    fn only_tcp_frames_are_shifted() {
        let mut arp = [0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let before = arp;
        shift_seq(&mut arp, 5);
        assert_eq!(arp, before);
        let mut short = segment(1, b"", (1, 2));
        short.truncate(ETH + IP + 10);
        let before = short.clone();
        shift_seq(&mut short, 5);
        assert_eq!(short, before, "a truncated frame is left alone");
    }
}
