//! `push`: an IM-style push gateway for long-lived connections, the C10M workload.
//!
//! A line protocol (lines end with `\n`, a `\r` before it is ignored):
//! - `SUB topic` and `UNSUB topic` (no reply);
//! - `PING` → `PONG` (the heartbeat);
//! - server-sent `MSG topic payload` for every [`Command::Publish`] to a topic the
//!   connection subscribed to;
//! - anything else → `ERR unknown command`.
//!
//! Connections silent for longer than the idle timeout (60 s by default) are closed by the
//! runtime's timing wheel. A subscriber's output is bounded by its transmit buffer: one
//! that does not read, so that a message or reply no longer fits, is reset rather than
//! allowed to grow memory.
//!
//! # Paced fan-out
//!
//! A publish does not write to every subscriber at once: a topic may have millions, and
//! a handler must return in microseconds so that the loop keeps reading frames (and
//! answering heartbeats). [`Push::start`] records the fan-out; each call of
//! [`Push::fan_out`] (the service's `on_poll`, once per loop iteration) reaches at most
//! [`Config::fanout_budget`] subscribers (a sixteenth of it while the loop says frames
//! are waiting to be read, [`Push::set_backlog`]: each message sent brings an ACK back,
//! and a fan-out that outran the loop's reading would fill its receive ring), resuming
//! after the last handle it reached (a
//! topic's subscribers are kept in handle order). A subscriber that joins while the
//! fan-out runs gets the message if its handle comes after the cursor; one that leaves
//! before its turn does not. When a fan-out ends its [`Outcome`] waits in
//! [`Push::take_finished`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use crate::{Conn, Conns, Error, Handle, Service};

/// Settings of the push service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Close connections silent for this long; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Longest command line, bytes; a longer one closes the connection.
    pub max_line: usize,
    /// Most topics one connection may subscribe to.
    pub max_topics: usize,
    /// Most subscribers a publish reaches per loop iteration (see the module docs).
    pub fanout_budget: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Some(Duration::from_secs(60)),
            max_line: 1024,
            max_topics: 64,
            fanout_budget: 256,
        }
    }
}

/// A control message for the push service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `MSG topic payload` to every subscriber of `topic`.
    Publish {
        /// The topic.
        topic: Arc<str>,
        /// The payload (one line: no `\n`).
        payload: Arc<[u8]>,
    },
}

impl Command {
    /// A publish command.
    pub fn publish(topic: &str, payload: &[u8]) -> Self {
        Command::Publish {
            topic: topic.into(),
            payload: payload.into(),
        }
    }
}

/// What the push service counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages queued to subscribers.
    pub delivered: u64,
    /// Subscribers reset because their output was full.
    pub dropped_slow: u64,
    /// Publish commands handled.
    pub published: u64,
    /// Heartbeats answered.
    pub pongs: u64,
}

/// How one publish went, once its fan-out ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The publish, numbered from 1 by [`Push::start`] (its [`Stats::published`] then).
    pub id: u64,
    /// Subscribers of the topic when the publish started.
    pub queued: u64,
    /// Subscribers whose transmit buffer took the message (TCP delivers it from there).
    pub delivered: u64,
    /// Subscribers reset because their output was full. `queued - delivered - dropped`
    /// left the topic before their turn.
    pub dropped: u64,
}

/// A publish whose fan-out is under way.
#[derive(Debug)]
struct Fanout {
    topic: Arc<str>,
    msg: Vec<u8>,
    /// The last subscriber reached; the fan-out resumes after it.
    after: Option<Handle>,
    outcome: Outcome,
}

/// Finished outcomes kept for [`Push::take_finished`]; older ones are forgotten.
const FINISHED: usize = 64;

/// A connection's state: its partial line and its topics.
#[derive(Debug, Default)]
pub struct State {
    line: Vec<u8>,
    topics: Vec<Arc<str>>,
}

/// The push service of one worker.
#[derive(Debug, Default)]
pub struct Push {
    cfg: Config,
    topics: BTreeMap<Arc<str>, BTreeSet<Handle>>,
    fanouts: VecDeque<Fanout>,
    finished: VecDeque<Outcome>,
    /// The handles of one step of a fan-out.
    step: Vec<Handle>,
    /// Whether the loop has frames waiting to be read.
    backlog: bool,
    /// Counters.
    pub stats: Stats,
}

enum Line {
    Sub(Arc<str>),
    Unsub(Arc<str>),
    Ping,
    Empty,
    Bad,
}

fn line(l: &[u8]) -> Line {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let topic = |t: &[u8]| match std::str::from_utf8(t) {
        Ok(t) if !t.is_empty() && !t.contains(' ') => Some(Arc::<str>::from(t)),
        _ => None,
    };
    if l.is_empty() {
        Line::Empty
    } else if l == b"PING" {
        Line::Ping
    } else if let Some(t) = l.strip_prefix(b"SUB ").and_then(topic) {
        Line::Sub(t)
    } else if let Some(t) = l.strip_prefix(b"UNSUB ").and_then(topic) {
        Line::Unsub(t)
    } else {
        Line::Bad
    }
}

/// Queues `bytes` whole, or resets the connection: a peer that does not read is dropped.
fn send_whole(conn: &mut Conn<'_>, bytes: &[u8], stats: &mut Stats) -> bool {
    if conn.send_whole(bytes) {
        return true;
    }
    stats.dropped_slow += 1;
    conn.abort();
    false
}

impl Push {
    /// A push service with these settings.
    pub fn new(cfg: Config) -> Self {
        Push {
            cfg,
            ..Push::default()
        }
    }

    /// Starts a publish: its fan-out runs in steps of [`fan_out`](Self::fan_out). Returns
    /// the publish's id (its [`Outcome::id`]).
    pub fn start(&mut self, cmd: &Command) -> u64 {
        let Command::Publish { topic, payload } = cmd;
        self.stats.published += 1;
        let mut msg = Vec::with_capacity(topic.len() + payload.len() + 6);
        msg.extend_from_slice(b"MSG ");
        msg.extend_from_slice(topic.as_bytes());
        msg.push(b' ');
        msg.extend_from_slice(payload);
        msg.push(b'\n');
        let queued = self.topics.get(topic).map_or(0, BTreeSet::len) as u64;
        self.fanouts.push_back(Fanout {
            topic: topic.clone(),
            msg,
            after: None,
            outcome: Outcome {
                id: self.stats.published,
                queued,
                ..Outcome::default()
            },
        });
        self.stats.published
    }

    /// One step of the fan-outs under way: at most [`Config::fanout_budget`] subscribers
    /// reached, oldest publish first. `visit` is called with each subscriber's handle and
    /// a function to run on its connection (so a service that embeds this one reaches its
    /// connections its own way). Returns how many subscribers it visited.
    pub fn fan_out(
        &mut self,
        mut visit: impl FnMut(Handle, &mut dyn FnMut(&mut Conn<'_>)),
    ) -> usize {
        let mut budget = self.cfg.fanout_budget;
        if self.backlog {
            budget /= 16;
        }
        let mut budget = budget.max(1);
        let mut visited = 0;
        while budget > 0
            && let Some(f) = self.fanouts.front_mut()
        {
            self.step.clear();
            if let Some(set) = self.topics.get(&f.topic) {
                let from = f.after.map_or(Bound::Unbounded, Bound::Excluded);
                self.step
                    .extend(set.range((from, Bound::Unbounded)).take(budget).copied());
            }
            let (msg, stats, out) = (&f.msg, &mut self.stats, &mut f.outcome);
            for &h in &self.step {
                visit(h, &mut |conn| {
                    if send_whole(conn, msg, stats) {
                        stats.delivered += 1;
                        out.delivered += 1;
                    } else {
                        out.dropped += 1;
                    }
                });
            }
            visited += self.step.len();
            budget -= self.step.len();
            f.after = self.step.last().copied().or(f.after);
            if budget > 0 {
                // The topic had fewer subscribers left than the budget: this one is done.
                let done = f.outcome;
                self.fanouts.pop_front();
                if self.finished.len() == FINISHED {
                    self.finished.pop_front();
                }
                self.finished.push_back(done);
            }
        }
        visited
    }

    /// The outcome of the oldest finished publish not taken yet (the last
    /// 64 are kept).
    pub fn take_finished(&mut self) -> Option<Outcome> {
        self.finished.pop_front()
    }

    /// Tells the service whether the loop that drives it has frames waiting to be read
    /// (it read as many as it reads in one iteration): fan-out steps are then a sixteenth
    /// of [`Config::fanout_budget`], so that reading catches up.
    pub fn set_backlog(&mut self, backlog: bool) {
        self.backlog = backlog;
    }

    /// Whether a fan-out is under way.
    pub fn fanning_out(&self) -> bool {
        !self.fanouts.is_empty()
    }

    /// Subscriptions across all topics.
    pub fn subscriptions(&self) -> usize {
        self.topics.values().map(BTreeSet::len).sum()
    }

    fn unsubscribe(&mut self, h: Handle, topic: &str) {
        if let Some(set) = self.topics.get_mut(topic) {
            set.remove(&h);
            if set.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    fn handle_line(&mut self, conn: &mut Conn<'_>, st: &mut State, l: Line) {
        let h = conn.handle();
        match l {
            Line::Sub(t) => {
                if st.topics.contains(&t) {
                    return;
                }
                if st.topics.len() >= self.cfg.max_topics {
                    send_whole(conn, b"ERR too many topics\n", &mut self.stats);
                    return;
                }
                self.topics.entry(t.clone()).or_default().insert(h);
                st.topics.push(t);
            }
            Line::Unsub(t) => {
                st.topics.retain(|x| *x != t);
                self.unsubscribe(h, &t);
            }
            Line::Ping => {
                if send_whole(conn, b"PONG\n", &mut self.stats) {
                    self.stats.pongs += 1;
                }
            }
            Line::Empty => {}
            Line::Bad => {
                send_whole(conn, b"ERR unknown command\n", &mut self.stats);
            }
        }
    }
}

impl Service for Push {
    type State = State;
    type Command = Command;

    fn on_accept(&mut self, _conn: &mut Conn<'_>) -> State {
        State::default()
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, st: &mut State) {
        let max = self.cfg.max_line;
        while !conn.is_closing() {
            let buf = &mut st.line;
            let got = conn.recv_with(|b| match b.iter().position(|&c| c == b'\n') {
                Some(i) if buf.is_empty() => (i + 1, Some(Some(line(&b[..i])))),
                Some(i) => {
                    buf.extend_from_slice(&b[..i]);
                    let l = line(buf);
                    buf.clear();
                    (i + 1, Some(Some(l)))
                }
                None if b.is_empty() => (0, None),
                None if buf.len() + b.len() > max => (b.len(), Some(None)),
                None => {
                    buf.extend_from_slice(b);
                    (b.len(), Some(Some(Line::Empty)))
                }
            });
            match got {
                Ok(None) => return,
                Ok(Some(Some(l))) => self.handle_line(conn, st, l),
                Ok(Some(None)) => return conn.close(), // line too long
                Err(Error::Finished) => return conn.close(),
                Err(_) => return,
            }
        }
    }

    fn on_closed(&mut self, handle: Handle, st: State) {
        for t in &st.topics {
            self.unsubscribe(handle, t);
        }
    }

    fn on_command(&mut self, cmd: &Command, conns: &mut Conns<'_, State>) {
        self.start(cmd);
        self.on_poll(conns);
    }

    fn on_poll(&mut self, conns: &mut Conns<'_, State>) {
        if self.fanning_out() {
            self.fan_out(|h, f| {
                conns.with(h, |conn, _| f(conn));
            });
        }
    }

    fn busy(&self) -> bool {
        self.fanning_out()
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.cfg.idle_timeout
    }
}
