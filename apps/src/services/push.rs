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

use std::collections::{BTreeMap, BTreeSet};
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Some(Duration::from_secs(60)),
            max_line: 1024,
            max_topics: 64,
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
    msg: Vec<u8>,
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
    if conn.send_room().is_ok_and(|r| r >= bytes.len()) && conn.send(bytes) == Ok(bytes.len()) {
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

    /// Runs a publish: `visit` is called with each subscriber's handle and a function to
    /// run on its connection (for services that embed this one).
    pub fn publish_with(
        &mut self,
        cmd: &Command,
        mut visit: impl FnMut(Handle, &mut dyn FnMut(&mut Conn<'_>)),
    ) {
        let Command::Publish { topic, payload } = cmd;
        self.stats.published += 1;
        self.msg.clear();
        self.msg.extend_from_slice(b"MSG ");
        self.msg.extend_from_slice(topic.as_bytes());
        self.msg.push(b' ');
        self.msg.extend_from_slice(payload);
        self.msg.push(b'\n');
        let Some(set) = self.topics.get(topic) else {
            return;
        };
        let (msg, stats) = (&self.msg, &mut self.stats);
        for &h in set {
            visit(h, &mut |conn| {
                if send_whole(conn, msg, stats) {
                    stats.delivered += 1;
                }
            });
        }
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
        self.publish_with(cmd, |h, f| {
            conns.with(h, |conn, _| f(conn));
        });
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.cfg.idle_timeout
    }
}
