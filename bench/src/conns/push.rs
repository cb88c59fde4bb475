//! `--proto push`: every connection a live subscriber of the push service.
//!
//! After its handshake connection `i` sends `SUB topic` (topic `i % K` of `--topics K`),
//! then `PING` every `--heartbeat-interval` seconds, its `k`-th one due at
//! `start + i / rate + (k + 1) × interval` (when its SYN went, plus whole intervals), so
//! the heartbeats spread over the interval as the connections did over the connect
//! phase. Each `PONG` is checked, each `MSG` compared byte for byte with what was
//! published to the connection's topic.
//!
//! Per connection the client keeps 16 bytes ([`Sub`]): the server's next sequence number
//! (what it acknowledges), when its last PING went, the PINGs sent, the PONGs and MSGs
//! received, and whether the server acknowledged the `SUB`. Its own sequence number follows from those (ISN + 1 +
//! the `SUB` line + 5 bytes a PING). The server's stream is taken a whole line at a
//! time: a segment that ends inside a line is acknowledged up to its last complete line,
//! so the server sends the rest again with the next.
//!
//! A PING (or `SUB`) without its answer after the timeout is sent again, with everything
//! after the last PONG (TCP receivers drop the bytes they had).
//!
//! The heartbeat's round trip is the time from a PING's first sending to its PONG (a
//! resent PING's includes the wait for its timeout, as the subscriber sees it), recorded
//! in a histogram for the PONG that answers a connection's last PING: one that answers
//! an earlier PING (several unanswered at once) has no sending time kept and is not
//! recorded.

use std::time::Instant;

use c10m_stack::TxQueue;

use super::wire::{Flags, Plan, Segment};
use crate::measure::Latency;

pub(super) const PING: &[u8] = b"PING\n";
const PONG: &[u8] = b"PONG";
/// Deliveries are counted in buckets of this many milliseconds since the publish.
pub(super) const BUCKET_MS: u64 = 100;

/// What the client keeps of one subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sub {
    srv_nxt: u32,
    /// When the last PING was sent, µs since the start (wrapping: 71 minutes).
    ping_at: u32,
    pings: u16,
    pongs: u16,
    msgs: u8,
    subscribed: bool,
}

/// What the push side counted.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) subscribed: u64,
    pub(super) heartbeats_sent: u64,
    pub(super) heartbeats_ok: u64,
    pub(super) heartbeats_resent: u64,
    pub(super) delivered: u64,
    pub(super) duplicates: u64,
    pub(super) bad_replies: u64,
    /// Deliveries per [`BUCKET_MS`] since the publish.
    pub(super) curve: Vec<u64>,
    pub(super) last_delivery: Option<Instant>,
    /// PING → PONG round trips, µs.
    pub(super) rtt: Latency,
}

/// The push side of the client.
pub(super) struct Push {
    /// `SUB topic\n` of each topic.
    subs: Vec<Vec<u8>>,
    /// The `MSG topic message` line (without `\n`) each topic should get.
    msgs: Vec<Vec<u8>>,
    conns: Vec<Sub>,
    start: Instant,
    /// Seconds between a connection's SYN times (1 / rate) and between its PINGs.
    spacing: f64,
    interval: f64,
    /// Heartbeat rounds under way: (round, next connection).
    rounds: Vec<(u32, u32)>,
    next_round: u32,
    /// When the publish went out.
    pub(super) published_at: Option<Instant>,
    pub(super) c: Counts,
}

/// Most PINGs sent per call of [`Push::heartbeat`], so the loop keeps receiving.
const PINGS_PER_CALL: u32 = 2048;

impl Push {
    pub(super) fn new(
        count: u32,
        topic: &str,
        topics: u32,
        message: &str,
        rate: u32,
        interval: f64,
        start: Instant,
    ) -> Push {
        let names: Vec<String> = if topics <= 1 {
            vec![topic.to_owned()]
        } else {
            (0..topics).map(|k| format!("{topic}{k}")).collect()
        };
        Push {
            subs: names.iter().map(|t| format!("SUB {t}\n").into()).collect(),
            msgs: names
                .iter()
                .map(|t| format!("MSG {t} {message}").into())
                .collect(),
            conns: vec![Sub::default(); count as usize],
            start,
            spacing: 1.0 / f64::from(rate.max(1)),
            interval,
            rounds: Vec::new(),
            next_round: 0,
            published_at: None,
            c: Counts::default(),
        }
    }

    /// The topic names, for the publish.
    pub(super) fn topics(&self) -> Vec<String> {
        self.subs
            .iter()
            .map(|s| String::from_utf8_lossy(&s[4..s.len() - 1]).into_owned())
            .collect()
    }

    fn sub_line(&self, i: u32) -> &[u8] {
        &self.subs[i as usize % self.subs.len()]
    }

    /// Bytes of our stream on connection `i` so far.
    fn sent(&self, i: u32) -> u32 {
        self.sub_line(i).len() as u32 + PING.len() as u32 * u32::from(self.conns[i as usize].pings)
    }

    /// Our next sequence number on connection `i`.
    pub(super) fn snd_nxt(&self, plan: &Plan, i: u32) -> u32 {
        plan.isn(i).wrapping_add(1).wrapping_add(self.sent(i))
    }

    /// Client bytes per connection.
    pub(super) fn bytes(&self) -> usize {
        self.conns.capacity() * std::mem::size_of::<Sub>()
    }

    /// A SYN-ACK for connection `i` (`srv`: the server's ISN + 1; `first`: not a
    /// repeat): ACK and `SUB`.
    pub(super) fn established(
        &mut self,
        plan: &Plan,
        tx: &mut impl TxQueue,
        i: u32,
        srv: u32,
        first: bool,
    ) -> bool {
        if first {
            self.conns[i as usize].srv_nxt = srv;
        }
        self.resend(plan, tx, i)
    }

    /// Sends everything after the last PONG again (the `SUB` too before the first).
    /// False if the queue was full.
    pub(super) fn resend(&mut self, plan: &Plan, tx: &mut impl TxQueue, i: u32) -> bool {
        let c = self.conns[i as usize];
        let sub = self.sub_line(i).len() as u32;
        let from = if c.pongs == 0 && !c.subscribed {
            0
        } else {
            sub + PING.len() as u32 * u32::from(c.pongs)
        };
        let mut data = Vec::with_capacity(64);
        if from == 0 {
            data.extend_from_slice(self.sub_line(i));
        }
        for _ in c.pongs..c.pings {
            data.extend_from_slice(PING);
        }
        let seq = plan.isn(i).wrapping_add(1).wrapping_add(from);
        plan.send(tx, i, seq, c.srv_nxt, Flags::Ack, &data)
    }

    /// Whether connection `i` still waits for the answer to its PING number `n` (0: the
    /// SUB's ACK) and `n` is its last: the timeout of its last PING resends for all of
    /// them, so the earlier ones' need not.
    pub(super) fn waiting_for(&self, i: u32, n: u16) -> bool {
        let c = self.conns[i as usize];
        let answered = if n == 0 { c.subscribed } else { c.pongs >= n };
        !answered && c.pings == n
    }

    /// A segment from the server on an established connection: counts what it acknowledges
    /// and carries, and acknowledges it. False if the queue was full.
    pub(super) fn on_segment(
        &mut self,
        plan: &Plan,
        tx: &mut impl TxQueue,
        s: &Segment<'_>,
        now: Instant,
    ) -> bool {
        let i = s.i;
        let sub = self.sub_line(i).len() as u32;
        let acked = s.ack.wrapping_sub(plan.isn(i).wrapping_add(1));
        let c = &mut self.conns[i as usize];
        if s.ack_flag && !c.subscribed && (sub..=sub + 65536).contains(&acked) {
            c.subscribed = true;
            self.c.subscribed += 1;
        }
        if s.data.is_empty() {
            return true;
        }
        // Skip bytes we had (a retransmission reaching past them is fine).
        let skip = c.srv_nxt.wrapping_sub(s.seq) as usize;
        if skip < s.data.len() {
            let data = &s.data[skip..];
            let whole = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            for line in data[..whole]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                self.line(i, line, now);
            }
            let c = &mut self.conns[i as usize];
            c.srv_nxt = c.srv_nxt.wrapping_add(whole as u32);
        }
        let (seq, ack) = (self.snd_nxt(plan, i), self.conns[i as usize].srv_nxt);
        plan.send(tx, i, seq, ack, Flags::Ack, &[])
    }

    fn line(&mut self, i: u32, line: &[u8], now: Instant) {
        let topic = i as usize % self.msgs.len();
        let c = &mut self.conns[i as usize];
        if line == PONG && c.pongs < c.pings {
            c.pongs += 1;
            self.c.heartbeats_ok += 1;
            if c.pongs == c.pings {
                let rtt = micros(self.start, now).wrapping_sub(c.ping_at);
                self.c.rtt.record(u64::from(rtt));
            }
        } else if line == self.msgs[topic] {
            c.msgs = c.msgs.saturating_add(1);
            if c.msgs > 1 {
                self.c.duplicates += 1;
                return;
            }
            self.c.delivered += 1;
            self.c.last_delivery = Some(now);
            if let Some(at) = self.published_at {
                let b = (now.saturating_duration_since(at).as_millis() as u64 / BUCKET_MS) as usize;
                if self.c.curve.len() <= b {
                    self.c.curve.resize(b + 1, 0);
                }
                self.c.curve[b] += 1;
            }
        } else {
            self.c.bad_replies += 1;
        }
    }

    /// Sends the PINGs due by `now` (at most [`PINGS_PER_CALL`]) on the connections
    /// `live` says are open; adds each connection pinged, and its PING's number (from 1),
    /// to `pinged`, for their timeouts.
    pub(super) fn heartbeat(
        &mut self,
        plan: &Plan,
        tx: &mut impl TxQueue,
        now: Instant,
        live: impl Fn(u32) -> bool,
        pinged: &mut Vec<(u32, u16)>,
    ) {
        let t = now.saturating_duration_since(self.start).as_secs_f64();
        if t >= f64::from(self.next_round + 1) * self.interval {
            self.rounds.push((self.next_round, 0));
            self.next_round += 1;
        }
        let mut budget = PINGS_PER_CALL;
        let mut rounds = std::mem::take(&mut self.rounds);
        let now_us = micros(self.start, now);
        self.ping_rounds(
            &mut rounds,
            plan,
            tx,
            (t, now_us),
            &live,
            pinged,
            &mut budget,
        );
        rounds.retain(|&(_, next)| next < plan.count);
        self.rounds = rounds;
    }

    #[allow(clippy::too_many_arguments)]
    fn ping_rounds(
        &mut self,
        rounds: &mut [(u32, u32)],
        plan: &Plan,
        tx: &mut impl TxQueue,
        (t, now_us): (f64, u32),
        live: &impl Fn(u32) -> bool,
        pinged: &mut Vec<(u32, u16)>,
        budget: &mut u32,
    ) {
        for (k, next) in rounds {
            let due_before = t - f64::from(*k + 1) * self.interval;
            while *next < plan.count && *budget > 0 && f64::from(*next) * self.spacing <= due_before
            {
                let i = *next;
                if live(i) {
                    let c = self.conns[i as usize];
                    if c.pings == u16::MAX {
                        *next += 1;
                        continue;
                    }
                    let seq = self.snd_nxt(plan, i);
                    if !plan.send(tx, i, seq, c.srv_nxt, Flags::Ack, PING) {
                        return;
                    }
                    let c = &mut self.conns[i as usize];
                    c.pings += 1;
                    c.ping_at = now_us;
                    self.c.heartbeats_sent += 1;
                    pinged.push((i, c.pings));
                    *budget -= 1;
                }
                *next += 1;
            }
        }
    }

    /// Subscribers that acknowledged their `SUB` and got no MSG.
    pub(super) fn missed(&self) -> u64 {
        self.conns
            .iter()
            .filter(|c| c.subscribed && c.msgs == 0)
            .count() as u64
    }

    /// How long the last delivery came after the publish.
    pub(super) fn delivery_secs(&self) -> f64 {
        match (self.published_at, self.c.last_delivery) {
            (Some(p), Some(l)) => l.saturating_duration_since(p).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// µs from `start` to `now`, wrapping at 2^32 (71 minutes): differences of two stay
/// right for round trips below that.
fn micros(start: Instant, now: Instant) -> u32 {
    now.saturating_duration_since(start).as_micros() as u32
}
