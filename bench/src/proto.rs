//! The two protocols `rps` and `cps` speak: HTTP/1.1 (`GET /`, responses framed by their
//! status line and `Content-Length`, RFC 9112 §6) against the `http` service, and fixed-size
//! requests against `echo`, whose responses are the same bytes back (checked).
//!
//! A [`Responses`] reader is fed the connection's received bytes in whatever pieces the
//! stack hands over and counts complete responses; a response split across pieces is
//! carried over (its head copied, at most [`MAX_HEAD`] bytes; a body is only skipped).

use std::net::SocketAddrV4;

/// Which service the target runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Proto {
    /// `GET / HTTP/1.1` with keep-alive; a response is a status line, headers and a
    /// `Content-Length` body.
    Http,
    /// `--req-size` bytes; the response is the same bytes.
    Echo,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Http => "http",
            Proto::Echo => "echo",
        })
    }
}

/// Largest response head (status line and headers) accepted.
pub(crate) const MAX_HEAD: usize = 8192;

/// The bytes of one request.
pub(crate) fn request(proto: Proto, target: SocketAddrV4, size: usize) -> Vec<u8> {
    match proto {
        Proto::Http => format!("GET / HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes(),
        // A pattern that shifts by request, so a misplaced echo does not match.
        Proto::Echo => (0..size).map(|i| b'a' + (i % 26) as u8).collect(),
    }
}

/// A response the reader refuses: the connection's stream cannot be followed any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Garbled(pub(crate) String);

impl std::fmt::Display for Garbled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Responses completed by one [`Responses::feed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Done {
    /// Good ones (HTTP 2xx, or an echo byte for byte).
    pub(crate) ok: u32,
    /// Complete but not good (HTTP status other than 2xx).
    pub(crate) bad: u32,
}

/// Reads one connection's responses. See the [module docs](self).
#[derive(Debug)]
pub(crate) enum Responses {
    /// HTTP: a head being read (`partial`), or a body being skipped (`body` bytes left).
    Http {
        partial: Vec<u8>,
        body: usize,
        status_ok: bool,
    },
    /// Echo: bytes of the current request received so far.
    Echo { got: usize },
}

impl Responses {
    pub(crate) fn new(proto: Proto) -> Responses {
        match proto {
            Proto::Http => Responses::Http {
                partial: Vec::new(),
                body: 0,
                status_ok: true,
            },
            Proto::Echo => Responses::Echo { got: 0 },
        }
    }

    /// Takes received bytes; `req` is the request (the expected echo).
    pub(crate) fn feed(&mut self, data: &[u8], req: &[u8]) -> Result<Done, Garbled> {
        match self {
            Responses::Echo { got } => {
                let mut done = Done::default();
                for &b in data {
                    if b != req[*got] {
                        return Err(Garbled(format!(
                            "echo byte {} is {b:#04x}, sent {:#04x}",
                            *got, req[*got]
                        )));
                    }
                    *got += 1;
                    if *got == req.len() {
                        *got = 0;
                        done.ok += 1;
                    }
                }
                Ok(done)
            }
            Responses::Http {
                partial,
                body,
                status_ok,
            } => {
                let mut done = Done::default();
                let mut rest = data;
                loop {
                    if *body > 0 {
                        let n = (*body).min(rest.len());
                        *body -= n;
                        rest = &rest[n..];
                        if *body > 0 {
                            return Ok(done);
                        }
                        count(&mut done, *status_ok);
                    }
                    if rest.is_empty() {
                        return Ok(done);
                    }
                    // A head: parsed in place, or in `partial` when split across pieces.
                    let (head, len, ok) = if partial.is_empty() {
                        match parse_head(rest)? {
                            Some(h) => (h.0, h.1, h.2),
                            None => {
                                partial.extend_from_slice(rest);
                                return Ok(done);
                            }
                        }
                    } else {
                        let had = partial.len();
                        partial.extend_from_slice(rest);
                        match parse_head(partial)? {
                            Some((head, len, ok)) => {
                                partial.clear();
                                // `head` counts bytes of `partial`; the rest of `rest`
                                // follows it.
                                (head - had, len, ok)
                            }
                            None => {
                                if partial.len() > MAX_HEAD {
                                    return Err(Garbled(format!(
                                        "a response head over {MAX_HEAD} bytes"
                                    )));
                                }
                                return Ok(done);
                            }
                        }
                    };
                    rest = &rest[head..];
                    *status_ok = ok;
                    *body = len;
                    if len == 0 {
                        count(&mut done, ok);
                    }
                }
            }
        }
    }

    /// Whether a response is partly read.
    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> bool {
        match self {
            Responses::Http { partial, body, .. } => !partial.is_empty() || *body > 0,
            Responses::Echo { got } => *got > 0,
        }
    }
}

fn count(done: &mut Done, ok: bool) {
    if ok {
        done.ok += 1;
    } else {
        done.bad += 1;
    }
}

/// A complete head at the front of `b`: (its length, the body length, 2xx?); `None` if
/// it is not complete yet.
fn parse_head(b: &[u8]) -> Result<Option<(usize, usize, bool)>, Garbled> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if b.len() > MAX_HEAD => {
            return Err(Garbled(format!("a response head over {MAX_HEAD} bytes")));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Garbled(format!("an unreadable response: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let mut len = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            if len.is_none() {
                return Err(Garbled("a bad Content-Length".into()));
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Garbled("Transfer-Encoding is not supported".into()));
        }
    }
    // 1xx, 204 and 304 have no body (RFC 9112 §6.3); anything else needs a length here.
    let len = match (code, len) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some(n)) => n,
        (_, None) => return Err(Garbled(format!("a {code} response without Content-Length"))),
    };
    Ok(Some((head, len, (200..300).contains(&code))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nServer: t\r\n\r\nHello, World!";

    fn target() -> SocketAddrV4 {
        "198.18.0.10:80".parse().unwrap()
    }

    #[test]
    fn http_requests_name_the_host() {
        let r = request(Proto::Http, target(), 0);
        assert_eq!(r, b"GET / HTTP/1.1\r\nHost: 198.18.0.10:80\r\n\r\n");
    }

    #[test]
    fn pipelined_http_responses_count_in_any_split() {
        let stream: Vec<u8> = [
            OK,
            OK,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            OK,
        ]
        .concat();
        for cut in 1..stream.len() {
            for cut2 in cut..stream.len() {
                let mut r = Responses::new(Proto::Http);
                let mut total = Done::default();
                for piece in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    let d = r.feed(piece, b"").unwrap();
                    total.ok += d.ok;
                    total.bad += d.bad;
                }
                assert_eq!(total, Done { ok: 3, bad: 1 }, "cut at {cut}, {cut2}");
                assert!(!r.in_progress());
            }
        }
    }

    #[test]
    fn garbage_and_unframed_responses_are_refused() {
        let mut r = Responses::new(Proto::Http);
        assert!(r.feed(b"SSH-2.0-x\r\n\r\n", b"").is_err());
        let mut r = Responses::new(Proto::Http);
        assert!(r.feed(b"HTTP/1.1 200 OK\r\n\r\n", b"").is_err());
        let mut r = Responses::new(Proto::Http);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(r.feed(chunked, b"").is_err());
        let mut r = Responses::new(Proto::Http);
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'x'; MAX_HEAD]].concat();
        assert!(r.feed(&long, b"").is_err());
    }

    #[test]
    fn echoes_count_per_request_and_are_checked() {
        let req = request(Proto::Echo, target(), 10);
        let mut r = Responses::new(Proto::Echo);
        let twice = [req.as_slice(), &req].concat();
        assert_eq!(r.feed(&twice[..7], &req).unwrap().ok, 0);
        assert_eq!(r.feed(&twice[7..15], &req).unwrap().ok, 1);
        assert!(r.in_progress());
        assert_eq!(r.feed(&twice[15..], &req).unwrap().ok, 1);
        assert!(r.feed(b"zz", &req).is_err());
    }
}
