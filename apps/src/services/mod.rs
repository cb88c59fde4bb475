//! The built-in services, and [`Builtin`], which runs several of them on one runtime
//! (each on its own port), as `c10m kernel --service NAME:PORT` and
//! `c10m run --service NAME:PORT` do.

pub mod echo;
pub mod http;
pub mod push;

use std::fmt;
use std::str::FromStr;

pub use echo::Echo;
pub use http::Http;
pub use push::Push;

use crate::{Conn, Conns, Handle, Service};

/// A built-in service, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Echo`].
    Echo,
    /// [`Http`].
    Http,
    /// [`Push`].
    Push,
}

impl Kind {
    /// Every built-in service.
    pub const ALL: [Kind; 3] = [Kind::Echo, Kind::Http, Kind::Push];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Http => "http",
            Kind::Push => "push",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `NAME:PORT` argument that names no built-in service or no port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid service {0:?}: expected NAME:PORT with NAME one of echo, http, push and PORT in 1..=65535 (0 on the kernel backend picks a free port)"
)]
pub struct ParseError(String);

impl FromStr for Kind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ParseError(s.to_string()))
    }
}

/// A service and the port it listens on: `NAME:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The service.
    pub kind: Kind,
    /// The TCP port.
    pub port: u16,
}

impl FromStr for Spec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(s.to_string());
        let (name, port) = s.split_once(':').ok_or_else(bad)?;
        Ok(Spec {
            kind: name.parse().map_err(|_| bad())?,
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

/// The settings of every built-in service, with their defaults: `echo` closes
/// connections idle for 300 s; `http` waits 30 s for a request head and 75 s on an idle
/// keep-alive connection; `push` closes subscribers silent for 60 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// The echo service's.
    pub echo: echo::Config,
    /// The http service's.
    pub http: http::Config,
    /// The push service's.
    pub push: push::Config,
}

/// The built-in services of one worker, dispatched by the port a connection came in on.
#[derive(Debug)]
pub struct Builtin {
    ports: Vec<(u16, Kind)>,
    /// The echo service.
    pub echo: Echo,
    /// The http service.
    pub http: Http,
    /// The push service.
    pub push: Push,
}

/// A connection's state in [`Builtin`].
#[derive(Debug)]
pub enum State {
    /// An echo connection.
    Echo,
    /// An http connection.
    Http(http::State),
    /// A push connection.
    Push(push::State),
}

impl Builtin {
    /// Services on ports: `ports` maps each listening port to its service.
    pub fn new(ports: Vec<(u16, Kind)>, settings: &Settings) -> Self {
        Builtin {
            ports,
            echo: Echo::new(settings.echo),
            http: Http::new(settings.http),
            push: Push::new(settings.push),
        }
    }
}

impl Service for Builtin {
    type State = State;
    type Command = push::Command;

    fn on_accept(&mut self, conn: &mut Conn<'_>) -> State {
        let port = conn.local_port();
        // Each service's own idle timeout, per connection (this service has none).
        match self.ports.iter().find(|(p, _)| *p == port).map(|p| p.1) {
            Some(Kind::Http) => {
                conn.set_idle_timeout(self.http.idle_timeout());
                State::Http(self.http.on_accept(conn))
            }
            Some(Kind::Push) => {
                conn.set_idle_timeout(self.push.idle_timeout());
                State::Push(self.push.on_accept(conn))
            }
            _ => {
                conn.set_idle_timeout(self.echo.idle_timeout());
                self.echo.on_accept(conn);
                State::Echo
            }
        }
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, state: &mut State) {
        match state {
            State::Echo => self.echo.on_readable(conn, &mut ()),
            State::Http(s) => self.http.on_readable(conn, s),
            State::Push(s) => self.push.on_readable(conn, s),
        }
    }

    fn on_writable(&mut self, conn: &mut Conn<'_>, state: &mut State) {
        match state {
            State::Echo => self.echo.on_writable(conn, &mut ()),
            State::Http(s) => self.http.on_writable(conn, s),
            State::Push(s) => self.push.on_writable(conn, s),
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_>, state: &mut State) {
        match state {
            State::Echo => self.echo.on_timer(conn, &mut ()),
            State::Http(s) => self.http.on_timer(conn, s),
            State::Push(s) => self.push.on_timer(conn, s),
        }
    }

    fn on_closed(&mut self, handle: Handle, state: State) {
        if let State::Push(s) = state {
            self.push.on_closed(handle, s);
        }
    }

    fn on_command(&mut self, cmd: &push::Command, conns: &mut Conns<'_, State>) {
        self.push.start(cmd);
        self.on_poll(conns);
    }

    fn on_poll(&mut self, conns: &mut Conns<'_, State>) {
        if !self.push.fanning_out() {
            return;
        }
        // The push service's subscribers are exactly the connections in `Push` state, so
        // its handles only ever reach those.
        self.push.fan_out(|h, f| {
            conns.with(h, |conn, st| {
                if let State::Push(_) = st {
                    f(conn);
                }
            });
        });
    }

    fn busy(&self) -> bool {
        self.push.fanning_out()
    }
}
