//! The event loop and its clients.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

use super::proto::{self, Outcome};
use super::{Command, Dataplane, Fanout, Listeners, MAX_LINE, MAX_OUTPUT, Reply, Settings, http};

const UNIX: Token = Token(0);
const HTTP: Token = Token(1);
/// Client tokens start here.
const FIRST: usize = 2;
/// How long a `connections` request waits for the workers.
const SAMPLE_WAIT: Duration = Duration::from_secs(1);
/// How long a publish may wait for the workers' fan-outs to end (they are paced through
/// the workers' loops: ten million subscribers take tens of seconds).
const PUBLISH_WAIT: Duration = Duration::from_secs(300);

trait Stream: Read + Write + Source + Send {}
impl<T: Read + Write + Source + Send> Stream for T {}

/// A `connections` request waiting for the workers' samples.
struct Pending {
    id: u64,
    /// Workers asked that have not answered yet.
    waiting: usize,
    /// Workers never asked because their command ring was full: they do not answer
    /// either, and the answer must say so (a publish did not reach their subscribers).
    unreached: usize,
    sample: Vec<Value>,
    limit: usize,
    deadline: Instant,
    /// A publish (not a sample): what the workers that answered did, and when it was
    /// sent.
    publish: Option<(Fanout, Instant)>,
}

impl Pending {
    /// Sends `cmd(id)` to every worker under a fresh id; a worker whose ring is full is
    /// not asked and counts as unreached.
    fn ask(
        dp: &mut dyn Dataplane,
        next_id: &mut u64,
        now: Instant,
        mut cmd: impl FnMut(u64) -> Command,
    ) -> Pending {
        let id = *next_id;
        *next_id += 1;
        let asked = (0..dp.workers()).filter(|&w| dp.send(w, cmd(id))).count();
        Pending {
            id,
            waiting: asked,
            unreached: dp.workers() - asked,
            sample: Vec::new(),
            limit: 0,
            deadline: now + SAMPLE_WAIT,
            publish: None,
        }
    }
}

struct Client {
    stream: Box<dyn Stream>,
    http: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Last time bytes came in or went out.
    active: Instant,
    /// Close once `output` is written.
    closing: bool,
    pending: Option<Pending>,
}

/// Runs the loop until `stop` is set.
pub(crate) fn serve(
    mut listeners: Listeners,
    settings: &Settings,
    dp: &mut dyn Dataplane,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    if let Some((l, _)) = &mut listeners.unix {
        poll.registry().register(l, UNIX, Interest::READABLE)?;
    }
    if let Some(l) = &mut listeners.http {
        poll.registry().register(l, HTTP, Interest::READABLE)?;
    }
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut next_id = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let waiting = clients.iter().flatten().any(|c| c.pending.is_some());
        let timeout = Duration::from_millis(if waiting { 5 } else { 50 });
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for ev in &events {
            match ev.token() {
                UNIX | HTTP => accept(
                    &mut poll,
                    &mut listeners,
                    ev.token(),
                    &mut clients,
                    settings,
                ),
                Token(t) => {
                    let i = t - FIRST;
                    let Some(Some(c)) = clients.get_mut(i) else {
                        continue;
                    };
                    if ev.is_readable() || ev.is_read_closed() {
                        c.read();
                    }
                }
            }
        }
        // Replies from the workers go to the client that asked.
        while let Some(reply) = dp.reply() {
            let id = match &reply {
                Reply::Sample { id, .. } | Reply::Published { id, .. } => *id,
            };
            let found = clients
                .iter_mut()
                .flatten()
                .find_map(|c| c.pending.as_mut().filter(|p| p.id == id));
            let Some(p) = found else { continue };
            if let Reply::Published { fanout, .. } = reply {
                p.waiting = p.waiting.saturating_sub(1);
                if let Some((sum, _)) = &mut p.publish {
                    *sum += fanout;
                }
                continue;
            }
            if let Reply::Sample { worker, conns, .. } = reply {
                p.waiting = p.waiting.saturating_sub(1);
                for c in conns
                    .into_iter()
                    .take(p.limit.saturating_sub(p.sample.len()))
                {
                    p.sample.push(json!({
                        "worker": worker, "remote": c.remote.to_string(),
                        "local": c.local.to_string(), "state": c.state,
                    }));
                }
            }
        }
        let now = Instant::now();
        for slot in clients.iter_mut() {
            let Some(c) = slot else { continue };
            c.work(dp, &mut next_id, now);
            let idle = now.duration_since(c.active) > settings.idle_timeout && c.pending.is_none();
            let flushed = c.flush(now);
            if (idle || !flushed || (c.closing && c.output.is_empty()))
                && let Some(mut c) = slot.take()
            {
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
    Ok(())
}

/// Takes every waiting connection of a listener.
fn accept(
    poll: &mut Poll,
    listeners: &mut Listeners,
    token: Token,
    clients: &mut Vec<Option<Client>>,
    settings: &Settings,
) {
    loop {
        let stream: Box<dyn Stream> = match (token, &listeners.unix, &listeners.http) {
            (UNIX, Some((l, _)), _) => match l.accept() {
                Ok((s, _)) => Box::new(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return tracing::warn!("management socket accept: {e}"),
            },
            (HTTP, _, Some(l)) => match l.accept() {
                Ok((s, _)) => Box::new(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return tracing::warn!("metrics accept: {e}"),
            },
            _ => return,
        };
        let live = clients.iter().flatten().count();
        if live >= settings.max_clients {
            // Turned away: dropping the stream closes it.
            tracing::warn!("{live} management clients: turning one away");
            continue;
        }
        let i = match clients.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                clients.push(None);
                clients.len() - 1
            }
        };
        let mut c = Client {
            stream,
            http: token == HTTP,
            input: Vec::new(),
            output: Vec::new(),
            active: Instant::now(),
            closing: false,
            pending: None,
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if poll
            .registry()
            .register(&mut c.stream, Token(FIRST + i), interest)
            .is_ok()
        {
            clients[i] = Some(c);
        }
    }
}

impl Client {
    /// Reads what the socket has (edge-triggered: until it would block).
    fn read(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            if self.closing {
                return;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    // EOF: answer what was asked, then close.
                    self.closing = true;
                    return;
                }
                Ok(n) => {
                    self.active = Instant::now();
                    self.input.extend_from_slice(&buf[..n]);
                    if self.input.len() > 2 * MAX_LINE {
                        // Lines are checked in `work`; do not buffer without bound.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.input.clear();
                    self.output.clear();
                    self.closing = true;
                    return;
                }
            }
        }
    }

    /// Answers complete requests; finishes a `connections` request whose workers all
    /// answered (or whose time is up).
    fn work(&mut self, dp: &mut dyn Dataplane, next_id: &mut u64, now: Instant) {
        if let Some(p) = &self.pending {
            if p.waiting > 0 && now < p.deadline {
                return;
            }
            let p = self.pending.take().unwrap_or_else(|| unreachable!());
            let missing = p.waiting + p.unreached;
            let answer = match p.publish {
                Some((fanout, sent)) => {
                    proto::publish_json(dp.workers(), fanout, missing, now.duration_since(sent))
                }
                None => proto::connections_json(dp, p.sample, missing),
            };
            self.respond(&answer);
        }
        if self.http {
            return self.work_http(dp);
        }
        while self.pending.is_none() && !self.output_full() {
            let Some(end) = self.input.iter().position(|&b| b == b'\n') else {
                if self.input.len() > MAX_LINE {
                    self.too_long();
                }
                return;
            };
            if end > MAX_LINE {
                return self.too_long();
            }
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match proto::handle(line, dp) {
                Outcome::Reply(v) => self.respond(&v),
                Outcome::Sample { limit } => {
                    let p = Pending::ask(dp, next_id, now, |id| Command::Sample { id, limit });
                    self.pending = Some(Pending { limit, ..p });
                }
                Outcome::Publish { topic, message } => {
                    let (topic, payload): (Arc<str>, Arc<[u8]>) =
                        (topic.into(), message.into_bytes().into());
                    let p = Pending::ask(dp, next_id, now, |id| Command::Publish {
                        id,
                        topic: topic.clone(),
                        payload: payload.clone(),
                    });
                    self.pending = Some(Pending {
                        publish: Some((Fanout::default(), now)),
                        deadline: now + PUBLISH_WAIT,
                        ..p
                    });
                }
            }
        }
    }

    fn work_http(&mut self, dp: &mut dyn Dataplane) {
        if self.closing && self.input.is_empty() {
            return;
        }
        match http::respond(&self.input, dp) {
            None if self.input.len() <= MAX_LINE => {}
            None => {
                self.output = http::response(413, "text/plain", "request too large\n");
                self.input.clear();
                self.closing = true;
            }
            Some(answer) => {
                self.output = answer;
                self.input.clear();
                self.closing = true;
            }
        }
    }

    fn too_long(&mut self) {
        self.respond(&proto::error(format!(
            "request longer than {MAX_LINE} bytes: closing the connection"
        )));
        self.input.clear();
        self.closing = true;
    }

    fn output_full(&self) -> bool {
        self.output.len() > MAX_OUTPUT
    }

    fn respond(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        self.output.extend_from_slice(&line);
    }

    /// Writes what the socket takes. False if the client must go: a write error, or
    /// answers piling up unread beyond [`MAX_OUTPUT`].
    fn flush(&mut self, now: Instant) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                    self.active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.output.len() <= 2 * MAX_OUTPUT
    }
}
