//! `http`: an HTTP/1.1 plaintext responder (RFC 9112) for benchmarks: every request gets
//! the same `200 OK` with a body of configurable size. Keep-alive, pipelining,
//! `Connection: close` and HEAD are honoured; requests are parsed with `httparse`.
//! Malformed requests get `400`, headers over the limit `431`, a `Content-Length` over the
//! limit `413` and `Transfer-Encoding` `501`; the connection is then closed.
//!
//! Requests are parsed in place in the receive buffer; only a request split by the end of
//! a read (or the buffer's wrap) is copied into a per-connection buffer, bounded by the
//! header limit.
//!
//! Slow and silent peers are closed, as nginx closes them: a request head must arrive
//! whole within [`Config::header_timeout`] (30 s; nginx's `client_header_timeout` is 60 s),
//! counted from the accept for the first request and from its first byte for later ones —
//! a client trickling a byte now and then cannot hold the connection — and a keep-alive
//! connection with no request under way is closed after [`Config::idle_timeout`] of silence
//! (75 s, nginx's `keepalive_timeout`).

use std::time::Duration;

use crate::{Conn, Error, Service};

/// Settings of the http service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Response body bytes (13 gives `Hello, World!`).
    pub body_size: usize,
    /// Largest request head (request line and headers), bytes.
    pub max_header: usize,
    /// Largest request body accepted (and discarded), bytes.
    pub max_body: u64,
    /// Close a connection whose request head is not complete this long after the accept
    /// (first request) or after its first byte (later ones); `None`: never.
    pub header_timeout: Option<Duration>,
    /// Close a connection from which nothing arrived for this long; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            body_size: 13,
            max_header: 8192,
            max_body: 1 << 20,
            header_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(75)),
        }
    }
}

/// The responses, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resp {
    Ok = 0,
    OkClose,
    Head,
    HeadClose,
    BadRequest,
    TooLarge,
    HeaderTooLarge,
    NotImplemented,
}

impl Resp {
    fn closes(self) -> bool {
        !matches!(self, Resp::Ok | Resp::Head)
    }
}

/// What the http service counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered with 200.
    pub requests: u64,
    /// Requests refused (4xx, 5xx).
    pub errors: u64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: u64,
}

/// A connection's parser state.
#[derive(Debug, Default)]
pub struct State {
    /// A request head split across reads.
    partial: Vec<u8>,
    /// Request body bytes still to discard.
    skip: u64,
    /// A response not yet fully queued: which, and how much is sent.
    out: Option<(Resp, usize)>,
    /// The header timeout is armed: a request head is awaited or under way.
    awaiting_head: bool,
}

/// The http service of one worker.
#[derive(Debug)]
pub struct Http {
    cfg: Config,
    responses: Vec<Vec<u8>>,
    /// Counters.
    pub stats: Stats,
}

/// What parsing found at the front of the input.
enum Parsed {
    Empty,
    Partial,
    Request { head: usize, resp: Resp, body: u64 },
    Refused(Resp),
}

fn parse(b: &[u8], cfg: &Config) -> Parsed {
    if b.is_empty() {
        return Parsed::Empty;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(b) {
        Ok(httparse::Status::Complete(n)) if n <= cfg.max_header => n,
        Ok(httparse::Status::Complete(_)) => return Parsed::Refused(Resp::HeaderTooLarge),
        Ok(httparse::Status::Partial) if b.len() > cfg.max_header => {
            return Parsed::Refused(Resp::HeaderTooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(Resp::HeaderTooLarge),
        Err(_) => return Parsed::Refused(Resp::BadRequest),
    };
    let mut close = req.version == Some(0);
    let mut body = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match n {
                Some(n) if n > cfg.max_body => return Parsed::Refused(Resp::TooLarge),
                Some(n) => body = n,
                None => return Parsed::Refused(Resp::BadRequest),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Refused(Resp::NotImplemented);
        }
    }
    let resp = match (req.method == Some("HEAD"), close) {
        (false, false) => Resp::Ok,
        (false, true) => Resp::OkClose,
        (true, false) => Resp::Head,
        (true, true) => Resp::HeadClose,
    };
    Parsed::Request { head, resp, body }
}

/// The `200 OK` this service answers a request with: a body of `body_size` bytes
/// (`Hello, World!` for 13, otherwise `abc…`), `Connection: close` if `close`, the head
/// alone for HEAD. Public so that a benchmark's stateless responder (`c10m-bench reflect`)
/// sends the very same bytes.
pub fn ok_response(body_size: usize, close: bool, head: bool) -> Vec<u8> {
    let body: Vec<u8> = if body_size == 13 {
        b"Hello, World!".to_vec()
    } else {
        (0..body_size).map(|i| b'a' + (i % 26) as u8).collect()
    };
    let c = if close { "Connection: close\r\n" } else { "" };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: c10m\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{c}\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        r.extend_from_slice(&body);
    }
    r
}

impl Http {
    /// An http service with these settings.
    pub fn new(cfg: Config) -> Self {
        let ok = |close: bool, head: bool| ok_response(cfg.body_size, close, head);
        let err = |status: &str| {
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .into_bytes()
        };
        Http {
            cfg,
            responses: vec![
                ok(false, false),
                ok(true, false),
                ok(false, true),
                ok(true, true),
                err("400 Bad Request"),
                err("413 Content Too Large"),
                err("431 Request Header Fields Too Large"),
                err("501 Not Implemented"),
            ],
            stats: Stats::default(),
        }
    }

    /// Queues what is left of the pending response; returns whether it is all queued.
    fn flush(&mut self, conn: &mut Conn<'_>, st: &mut State) -> bool {
        let Some((resp, sent)) = st.out else {
            return true;
        };
        let bytes = &self.responses[resp as usize][sent..];
        let n = match conn.send(bytes) {
            Ok(n) => n,
            Err(_) => {
                conn.abort();
                return false;
            }
        };
        if n < bytes.len() {
            st.out = Some((resp, sent + n));
            return false;
        }
        st.out = None;
        if resp.closes() {
            conn.close();
            return false;
        }
        true
    }

    fn respond(&mut self, conn: &mut Conn<'_>, st: &mut State, resp: Resp) -> bool {
        if matches!(
            resp,
            Resp::Ok | Resp::OkClose | Resp::Head | Resp::HeadClose
        ) {
            self.stats.requests += 1;
        } else {
            self.stats.errors += 1;
        }
        st.out = Some((resp, 0));
        self.flush(conn, st)
    }

    fn pump(&mut self, conn: &mut Conn<'_>, st: &mut State) {
        while self.flush(conn, st) {
            if st.skip > 0 {
                let skip = st.skip;
                match conn.recv_with(|b| {
                    let n = (b.len() as u64).min(skip) as usize;
                    (n, n)
                }) {
                    Ok(0) => return,
                    Ok(n) => st.skip -= n as u64,
                    Err(Error::Finished) => return conn.close(),
                    Err(_) => return,
                }
                continue;
            }
            let cfg = self.cfg;
            let parsed = if st.partial.is_empty() {
                conn.recv_with(|b| match parse(b, &cfg) {
                    Parsed::Request { head, resp, body } => {
                        (head, Parsed::Request { head, resp, body })
                    }
                    other => (0, other),
                })
            } else {
                Ok(parse(&st.partial, &cfg))
            };
            match parsed {
                Err(Error::Finished) => return conn.close(),
                Err(_) => return,
                Ok(Parsed::Empty) => return,
                Ok(Parsed::Request { head, resp, body }) => {
                    st.skip = body;
                    if !st.partial.is_empty() {
                        let k = (st.partial.len() - head).min(body as usize);
                        st.partial.drain(..head + k);
                        st.skip -= k as u64;
                    }
                    if !self.respond(conn, st, resp) {
                        return;
                    }
                }
                Ok(Parsed::Refused(resp)) => {
                    self.respond(conn, st, resp);
                    return;
                }
                Ok(Parsed::Partial) => {
                    // Move the fragment (or the next read) into the connection's buffer.
                    let limit = cfg.max_header + 1;
                    let partial = &mut st.partial;
                    let got = conn.recv_with(|b| {
                        let n = b.len().min(limit.saturating_sub(partial.len()));
                        partial.extend_from_slice(&b[..n]);
                        (n, n)
                    });
                    match got {
                        Ok(0) if st.partial.len() < limit => return,
                        Ok(_) => {}
                        Err(Error::Finished) => return conn.close(),
                        Err(_) => return,
                    }
                }
            }
        }
    }

    /// Arms the header timeout while a request head is under way (bytes of it kept in
    /// `partial`), disarms it when none is; an armed one keeps its start.
    fn watch_head(&self, conn: &mut Conn<'_>, st: &mut State) {
        let Some(limit) = self.cfg.header_timeout else {
            return;
        };
        let under_way = !st.partial.is_empty();
        if under_way && !st.awaiting_head {
            conn.set_timer(limit);
        } else if !under_way && st.awaiting_head {
            conn.cancel_timer();
        }
        st.awaiting_head = under_way;
    }
}

impl Service for Http {
    type State = State;
    type Command = ();

    fn on_accept(&mut self, conn: &mut Conn<'_>) -> State {
        // The first request's head is awaited from the start.
        if let Some(limit) = self.cfg.header_timeout {
            conn.set_timer(limit);
        }
        State {
            awaiting_head: self.cfg.header_timeout.is_some(),
            ..State::default()
        }
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, st: &mut State) {
        self.pump(conn, st);
        self.watch_head(conn, st);
    }

    fn on_writable(&mut self, conn: &mut Conn<'_>, st: &mut State) {
        self.pump(conn, st);
        self.watch_head(conn, st);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, st: &mut State) {
        if st.awaiting_head {
            self.stats.header_timeouts += 1;
            st.awaiting_head = false;
            conn.close();
        }
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.cfg.idle_timeout
    }
}
