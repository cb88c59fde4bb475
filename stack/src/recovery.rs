//! Two places where smoltcp 0.14's retransmission leaves a connection stuck, and what the
//! stack does about them. Both showed with a congestion controller on (CUBIC or Reno) in
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

use smoltcp::time::Duration;

use crate::defense::tick;

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
}
