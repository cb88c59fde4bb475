//! Places where smoltcp 0.14's retransmission leaves a connection stuck or slow, and what
//! the stack does about them. Both showed with a congestion controller on (CUBIC or Reno) in
//! `stack/tests/options.rs`'s `controlled_streams_survive_loss`: echo streams over a wire
//! losing 5% of frames, where the send timeout used to kill a connection in most runs.
//!
//! # Bare ACKs stranded behind RCV.NXT
//!
//! When smoltcp's retransmission timer fires it rewinds SND.NXT to SND.UNA
//! (`remote_last_seq = local_seq_no`, `socket/tcp.rs`, `Socket::dispatch`, "retransmitting
//! after rto") and sends the unacknowledged data again from there. Linux keeps SND.NXT
//! where it was; smoltcp does not, and every segment it sends until it catches up,
//! including its bare ACKs (`seq_number: self.remote_last_seq`, same function, and
//! `ack_reply`), carries a sequence number *behind* what the peer has already received
//! when the peer had received that data (the ACKs for it were what got lost). The peer
//! finds such a segment outside its receive window (RFC 9293 §3.10.7.4, smoltcp's
//! `Socket::process`, "zero-length segment not inside window") and drops it, its
//! acknowledgement included.
//!
//! Without a congestion controller the rewound sender resends its whole window at once and
//! is past the peer's RCV.NXT within one flight. With one, a timeout cuts the window to
//! one segment: the sender resends one segment of data the peer already has, and then
//! waits for an ACK. When both ends of a connection send (an echo, a proxy) and both time
//! out, each waits for an ACK that the other sends from behind the window, each drops the
//! other's, and the connection stalls until the send timeout kills it.
//!
//! The stack therefore moves a bare ACK (no payload, no SYN, FIN or RST) whose sequence
//! number is behind RCV.NXT by at most the receive buffer's size up to RCV.NXT, on a copy
//! of the frame, before smoltcp sees it: smoltcp then takes its acknowledgement. A peer
//! can be behind by no more than that: it rewinds to its SND.UNA, and what it had sent
//! beyond that fit in our window. A bare ACK's sequence number says nothing else (no data
//! sits at it), so the move loses nothing. Linux accepts such segments too: its window
//! test starts at RCV.WUP, the RCV.NXT it last advertised, not at RCV.NXT.
//!
//! Except one byte behind: a bare segment at RCV.NXT - 1 is a keep-alive or a window
//! probe (RFC 9293 §3.8.4; Linux sends both so, `tcp_xmit_probe_skb`), whose sender waits
//! for the ACK smoltcp sends in reply to a segment below its window (at most one a second,
//! smoltcp's challenge-ACK limit). Moved, it was taken as a duplicate ACK and never
//! answered, and Linux's keep-alive killed the connection (found by the dataplane's
//! conformance test against Linux). A rewound peer exactly one byte behind then has that
//! one ACK ignored, but our answer acknowledges what it had sent, which moves it on.
//!
//! RCV.NXT is known here by its low 16 bits (`Meta::rcv_nxt`). A segment *ahead* of
//! RCV.NXT, inside the window, must not be moved: so the distance behind must also be
//! below 2^16 minus the buffer size, which rules out every in-window segment. For
//! receive buffers up to 32 KiB this covers every rewound peer; above, the reach shrinks
//! (`2^16 - 1 - rx_buf`), and at 64 KiB and above nothing is moved, as before.
//!
//! What it costs: nothing on segments at RCV.NXT (a 16-bit compare); a frame copy for
//! the few that are moved ([`Counters::acks_realigned`](crate::Counters::acks_realigned)).
//! The sequence numbers a blind attacker's bare ACK may carry double (from a window's
//! worth to two), and it still needs an acceptable acknowledgement number (RFC 5961 §5,
//! which smoltcp checks). One thing it exposes more: smoltcp takes the window of every
//! acceptable segment (it has no SND.WL1/WL2 test, RFC 9293 §3.10.7.4), so a moved ACK
//! that was merely old can shrink the window the peer offered; the next section covers
//! the worst case, a window of zero.
//!
//! # Data queued and no timer
//!
//! smoltcp arms its zero-window probe only while processing a segment that finds the
//! peer's window zero *and* its own timer idle (same file, "starting zero-window-probe
//! timer"). When the zero window arrives while the retransmission timer runs (an old ACK,
//! reordered behind the window's reopening, is enough), the timer later fires, goes idle,
//! has nothing it may send, and nothing ever wakes the socket again: data queued, no
//! timer, and a peer that waits for us. Seen without a congestion controller too, less
//! often.
//!
//! The stack wakes a connection whose queued data has made no progress (see the send
//! timeout, `Meta::progress`) 1, 2, 4, 8, 16 and 32 s after its last progress and, if
//! smoltcp's timer is idle then, has it send a keep-alive segment (the challenge-ACK
//! mechanism, see `defense`): the peer answers with an ACK that carries its window, which
//! reopens the connection or, if still zero, arms smoltcp's own probe. When smoltcp's timer
//! is busy (a retransmission or a probe pending) nothing is sent. Counted in
//! [`Counters::window_probes`](crate::Counters::window_probes).
//!
//! # Duplicate ACKs whose window grew
//!
//! smoltcp resends the first unacknowledged segment at the third duplicate ACK (its fast
//! retransmit) and otherwise waits for its retransmission timeout, 1 s at least
//! (`RTTE_MIN_RTO`). It counts an ACK as a duplicate only if it also leaves the peer's
//! window unchanged (RFC 5681's definition; same file, `is_window_update`). Linux, as a
//! receiver, grows its window with each out-of-order segment it queues
//! (`tcp_data_queue_ofo` calls `tcp_grow_window`), so while a hole waits, every duplicate
//! ACK it sends carries a window a little larger than the one before: smoltcp takes each
//! as a window update, never counts three, and every loss waits the full second. Measured
//! on the test bed (`c10m-bench loss --toward client`, bench/RESULTS.md): 4 to 28
//! duplicate ACKs followed each lost segment, each with a different window, and each loss
//! was resent by the timeout, 1.00 s after the original.
//!
//! The stack therefore pins the window of duplicate ACKs: for a bare ACK that carries SACK
//! blocks (the peer holds data beyond a hole: a duplicate ACK in all but smoltcp's
//! window test), it remembers the acknowledgement number and window of the first such ACK
//! of a connection and gives later ones with the same acknowledgement number and a larger
//! window that first window instead, on a copy of the frame ([`Pins`]). smoltcp then
//! counts them. It counts the first only if its window is the one before (the stack does
//! not know that one), so at the third the stack hands smoltcp a copy as well: smoltcp
//! resends the hole at the third duplicate, as RFC 5681 says, either way (it resends at
//! exactly three; a count past three does nothing). The window smoltcp sees is at most
//! the peer's real one: a
//! receiver does not move its window's right edge left, and a smaller window passes
//! as it is (and becomes the pin). The larger window arrives with the next ACK that moves.
//! Peers that do not send SACK blocks are left as they were. Counted in
//! [`Counters::dup_acks_pinned`](crate::Counters::dup_acks_pinned) and
//! [`Counters::fast_retransmits_forced`](crate::Counters::fast_retransmits_forced).
//!
//! # Partial ACKs with holes left
//!
//! smoltcp resends one segment per fast retransmit, the first unacknowledged, and ignores
//! SACK blocks. When a flight lost two segments, the resent first one brings an ACK up to
//! the second hole (a partial ACK, RFC 6582); smoltcp takes it as new data acknowledged,
//! resets its count, and sends the second hole again only after three more duplicates —
//! which come only if the window lets it send three more segments past the hole (after
//! its congestion controller halved the window, often not) — or after its timeout.
//! Measured on the bed: of the 1 s stalls left once duplicate ACKs were pinned, one in
//! three was such a second hole.
//!
//! So when a bare ACK with SACK blocks acknowledges a number smoltcp has not seen as a
//! duplicate yet (the pin's is another) and its blocks cover more than two full segments
//! beyond it ([`LOST_AFTER`]: RFC 6675's rule for a segment lost, with a DupThresh of 3),
//! the stack hands smoltcp the segment and then [`DUP_THRESH`] copies of it: smoltcp
//! counts three duplicates and resends the hole at once, as NewReno and SACK recovery do.
//! Counted in [`Counters::fast_retransmits_forced`](crate::Counters::fast_retransmits_forced).
//! Its congestion controller takes each such resend as a loss (Reno halves its window
//! again, where RFC 6675 would halve it once per flight).
//!
//! What both cost: a scan of the TCP options of bare ACKs that have any beyond the
//! 20-byte header; for those with SACK blocks, a lookup in a table of the connections
//! with a pin, at most [`MAX_PINS`] (emptied when full; an entry goes with its
//! connection), and a frame copy. No byte per connection.
//!
//! What they cannot do: a lost segment with no segments behind it (the tail of a
//! transfer, a lone response) brings no duplicate ACKs, nor SACK blocks, and waits
//! smoltcp's timeout, 1 s at least; smoltcp offers no call to resend earlier nor to set
//! a shorter minimum, and a probe made of forged duplicate ACKs would need SND.UNA and
//! RCV.NXT per connection, which smoltcp keeps to itself (the stack follows 16 bits of
//! RCV.NXT only; 8 more bytes per connection would break its 1 KiB budget). A resent
//! segment lost again waits the timeout too. And holes are repaired one per round trip,
//! the first unacknowledged segment each time: smoltcp cannot be told which others the
//! SACK blocks show missing.

use std::collections::HashMap;

use smoltcp::time::Duration;

use crate::defense::tick;
use crate::seqshift::Sacked;

/// What the stack changes in a received segment before smoltcp sees it, on a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// How far to move a stranded bare ACK's sequence number forward (0: not at all).
    pub(crate) behind: u16,
    /// The raw window to give a duplicate ACK.
    pub(crate) window: Option<u16>,
    /// Copies of the segment to hand smoltcp after it, as duplicate ACKs.
    pub(crate) copies: u8,
}

impl Rewrite {
    /// Nothing to change.
    pub(crate) const NONE: Rewrite = Rewrite {
        behind: 0,
        window: None,
        copies: 0,
    };
}

/// SACKed bytes beyond the acknowledgement number that make the segment at it lost: more
/// than two full segments (RFC 6675's `IsLost` with a DupThresh of 3; 1460 bytes, the
/// largest Ethernet MSS, so that no smaller segments count for more).
pub(crate) const LOST_AFTER: u32 = 2 * 1460;

/// Duplicate ACKs that make smoltcp resend: it does so at exactly the third.
pub(crate) const DUP_THRESH: u8 = 3;

/// The most connections with a pinned window; a table that is full is emptied.
pub(crate) const MAX_PINS: usize = 4096;

/// The pinned windows, by connection slot (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Pins(HashMap<u32, Pin>);

#[derive(Debug, Clone, Copy)]
struct Pin {
    ack: u32,
    window: u16,
    /// Bare ACKs with SACK blocks seen for `ack`, the first included.
    dups: u8,
}

impl Pins {
    /// For a bare ACK of `slot` with SACK blocks (`sacked`): the window smoltcp must see
    /// instead, if any, and how many copies of the segment to give it after (see the
    /// module docs).
    pub(crate) fn pin(&mut self, slot: u32, sacked: Sacked) -> (Option<u16>, u8) {
        let Sacked { ack, window, bytes } = sacked;
        match self.0.get_mut(&slot) {
            Some(p) if p.ack == ack => {
                p.dups = p.dups.saturating_add(1);
                // The third: smoltcp counted the first only if it left the window as it
                // was, so one copy makes sure it reaches three (a count past three does
                // nothing).
                let copies = u8::from(p.dups == DUP_THRESH);
                if window > p.window {
                    (Some(p.window), copies)
                } else {
                    p.window = window;
                    (None, copies)
                }
            }
            pin => {
                // New to smoltcp: it resets its count. If the segment at `ack` is lost
                // already, the copies bring the count to its threshold at once.
                let lost = bytes > LOST_AFTER;
                let copies = if lost { DUP_THRESH } else { 0 };
                let new = Pin {
                    ack,
                    window,
                    dups: if lost { DUP_THRESH } else { 1 },
                };
                match pin {
                    Some(p) => *p = new,
                    None => {
                        if self.0.len() >= MAX_PINS {
                            self.0.clear();
                        }
                        self.0.insert(slot, new);
                    }
                }
                (None, copies)
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets `slot`'s pin (its connection is gone).
    pub(crate) fn remove(&mut self, slot: &u32) {
        self.0.remove(slot);
    }
}

/// The first wake-up of a connection whose queued data makes no progress, in ms after the
/// last progress; then twice as long each time.
pub(crate) const FIRST_PROBE_MS: u64 = 1000;

/// How long the last send progress (`progress`, in send-timeout ticks) is ago, in ms,
/// counted from the start of its tick.
pub(crate) fn since_progress(now_ms: u64, progress: u16) -> u64 {
    u64::from(tick(now_ms).wrapping_sub(progress)) << 8 | now_ms & 0xff
}

/// When a connection with queued data, last progress at tick `progress`, is next woken
/// to look for a stall (see the module docs), in ms.
pub(crate) fn stall_check_at(now_ms: u64, progress: u16) -> u64 {
    let since = since_progress(now_ms, progress);
    let due = (since / FIRST_PROBE_MS + 1).next_power_of_two() * FIRST_PROBE_MS;
    now_ms + (due - since)
}

/// How far behind RCV.NXT (mod 2^16) a bare ACK may be moved for a connection with
/// `rx_buf` bytes of receive buffer: a rewound peer is at most that far behind, and every
/// in-window segment is at least `2^16 - rx_buf` "behind" in 16 bits.
pub(crate) fn reach(rx_buf: usize) -> usize {
    rx_buf.min(usize::from(u16::MAX).saturating_sub(rx_buf))
}

/// The keep-alive interval wound up for a stall probe: after the probe smoltcp sends a
/// second one this long after, and then none (the interval is unwound by then), so a probe
/// survives one loss and leaves no keep-alive timer behind.
pub(crate) const PROBE_WINDUP: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_never_covers_a_segment_in_the_window() {
        assert_eq!(reach(256), 256);
        assert_eq!(reach(32 * 1024), 32 * 1024 - 1);
        assert_eq!(reach(48 * 1024), 16 * 1024 - 1);
        assert_eq!(
            reach(64 * 1024),
            0,
            "RCV.NXT's 16 bits cannot tell: nothing is moved"
        );
        assert_eq!(reach(1 << 20), 0);
        for rx in [256, 4096, 32 * 1024, 40_000, 65_535] {
            // A segment d bytes ahead (d < rx) reads as 2^16 - d behind: out of reach.
            assert!(reach(rx) < (1 << 16) - rx + 1, "{rx}");
        }
    }

    #[test]
    fn stalls_are_checked_1_2_4_8_seconds_after_progress() {
        let start = 1_000_000u64;
        let p = tick(start);
        let mut at = start;
        let mut checks = Vec::new();
        while checks.len() < 5 {
            at = stall_check_at(at, p);
            if since_progress(at, p) >= FIRST_PROBE_MS {
                checks.push(since_progress(at, p) / 1000);
            }
        }
        assert_eq!(checks, [1, 2, 4, 8, 16]);
    }

    #[test]
    fn a_pin_holds_the_first_window_for_one_acknowledgement_number() {
        let mut pins = Pins::default();
        let mut pin = |slot, ack, window, bytes| pins.pin(slot, Sacked { ack, window, bytes });
        // The first duplicate sets the pin; larger windows get it, equal ones need nothing;
        // the third has a copy.
        assert_eq!(pin(3, 1000, 100, 1448), (None, 0));
        assert_eq!(pin(3, 1000, 103, 2896), (Some(100), 0));
        assert_eq!(pin(3, 1000, 100, 4344), (None, 1));
        assert_eq!(pin(3, 1000, 106, 5792), (Some(100), 0));
        // A smaller window passes and becomes the pin.
        assert_eq!(pin(3, 1000, 90, 5792), (None, 0));
        assert_eq!(pin(3, 1000, 95, 7240), (Some(90), 0));
        // Another connection, or a new hole: a new pin; and copies to make smoltcp resend
        // at once when more than two segments lie SACKed beyond the new hole already.
        assert_eq!(pin(4, 1000, 120, 1448), (None, 0));
        assert_eq!(pin(3, 2448, 130, 2920), (None, 0));
        assert_eq!(pin(3, 2448, 131, 2920), (Some(130), 0));
        assert_eq!(pin(3, 3896, 140, 2921), (None, DUP_THRESH));
        assert_eq!(pin(3, 3896, 141, 4000), (Some(140), 0));
        assert_eq!(pin(3, 3896, 141, 5000), (Some(140), 0), "no second copy");
        pins.remove(&3);
        assert_eq!(
            pins.pin(
                3,
                Sacked {
                    ack: 3896,
                    window: 141,
                    bytes: 0
                }
            ),
            (None, 0)
        );
        // A full table is emptied rather than grown.
        for slot in 0..MAX_PINS as u32 * 2 {
            pins.pin(
                slot,
                Sacked {
                    ack: 1,
                    window: 1,
                    bytes: 0,
                },
            );
        }
        assert!(pins.0.len() <= MAX_PINS);
        assert!(!pins.is_empty());
    }
}
