//! `echo`: sends every byte back (RFC 862), closing after the peer does. A connection
//! silent for [`Config::idle_timeout`] (300 s by default) is closed, so peers that connect
//! and never speak do not hold their slots forever.

use std::time::Duration;

use crate::{Conn, Error, Service};

/// Settings of the echo service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Close a connection from which nothing arrived for this long; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// Most bytes moved per read: the service's one scratch buffer.
const CHUNK: usize = 16 * 1024;

/// The echo service of one worker.
#[derive(Debug)]
pub struct Echo {
    cfg: Config,
    buf: Box<[u8]>,
    /// Bytes echoed.
    pub bytes: u64,
}

impl Default for Echo {
    fn default() -> Self {
        Echo::new(Config::default())
    }
}

impl Echo {
    /// An echo service with these settings.
    pub fn new(cfg: Config) -> Self {
        Echo {
            cfg,
            buf: vec![0; CHUNK].into_boxed_slice(),
            bytes: 0,
        }
    }

    /// Moves what fits from the receive side to the transmit side.
    fn pump(&mut self, conn: &mut Conn<'_>) {
        loop {
            let room = match conn.send_room() {
                Ok(r) => r.min(self.buf.len()),
                Err(_) => return,
            };
            if room == 0 {
                let _ = conn.send_with(1, |_| 0); // arms on_writable
                return;
            }
            match conn.recv(&mut self.buf[..room]) {
                Ok(0) => return,
                Ok(n) => {
                    self.bytes += n as u64;
                    if conn.send(&self.buf[..n]).is_err() {
                        return conn.abort();
                    }
                }
                Err(Error::Finished) => return conn.close(),
                Err(_) => return,
            }
        }
    }
}

impl Service for Echo {
    type State = ();
    type Command = ();

    fn on_accept(&mut self, _conn: &mut Conn<'_>) {}

    fn on_readable(&mut self, conn: &mut Conn<'_>, _state: &mut ()) {
        self.pump(conn);
    }

    fn on_writable(&mut self, conn: &mut Conn<'_>, _state: &mut ()) {
        self.pump(conn);
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.cfg.idle_timeout
    }
}
