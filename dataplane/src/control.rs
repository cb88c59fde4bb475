//! The control thread: one epoll loop (mio) over every management socket, never on a
//! dataplane core.
//!
//! * A Unix socket (default `/run/c10m/c10m.sock`, mode 0600) speaking line-delimited
//!   JSON ([`proto`]); `c10m ctl` is its client.
//! * Optionally a localhost HTTP listener: `GET /metrics` (Prometheus text) and
//!   `GET /stats` (JSON), one request per connection ([`http`]).
//!
//! The loop reaches the workers only through a [`Dataplane`]: their published counters
//! and their command/reply rings. So it runs without a dataplane in tests, and a
//! management client can never stall a worker: the loop never blocks on one, and the
//! workers never wait for the loop.
//!
//! Limits, so that a slow, idle or malformed client costs little and stalls nothing:
//! requests longer than [`MAX_LINE`] bytes are answered with an error and the client is
//! dropped; a client idle (or stuck in a partial request) for the idle timeout is
//! dropped; writes are non-blocking and a client that does not read its answers is
//! dropped once [`MAX_OUTPUT`] bytes wait; at most [`Settings::max_clients`] at once.

mod clients;
mod http;
pub(crate) mod proto;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mio::net::{TcpListener, UnixListener};
use serde_json::Value;

pub(crate) use clients::serve;

/// The default path of the management socket.
pub const DEFAULT_SOCKET: &str = "/run/c10m/c10m.sock";
/// Longest request line (and HTTP request head).
pub(crate) const MAX_LINE: usize = 4096;
/// Most answer bytes that may wait for a client.
pub(crate) const MAX_OUTPUT: usize = 4 << 20;

/// A command for a worker, through its command ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Stop accepting new connections; keep serving the others.
    Drain,
    /// Reply with up to `limit` connections (endpoints and states).
    Sample {
        /// Matches the reply to the request.
        id: u64,
        /// Most connections to list.
        limit: usize,
    },
    /// Send `MSG topic payload` to the push service's subscribers of `topic`.
    Publish {
        /// Matches the reply to the request.
        id: u64,
        /// The topic.
        topic: Arc<str>,
        /// The payload (one line).
        payload: Arc<[u8]>,
    },
}

/// One connection in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    pub(crate) remote: SocketAddrV4,
    pub(crate) local: SocketAddrV4,
    pub(crate) state: &'static str,
}

/// A worker's answer, through its reply ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The answer to [`Command::Sample`].
    Sample {
        id: u64,
        worker: usize,
        conns: Vec<ConnInfo>,
    },
    /// The answer to [`Command::Publish`]: how many subscribers got the message.
    Published {
        id: u64,
        worker: usize,
        delivered: u64,
    },
}

/// What the control loop needs from the workers and the daemon.
pub(crate) trait Dataplane {
    /// Number of workers.
    fn workers(&self) -> usize;
    /// Worker `w`'s published values, in [`crate::stats::visit`] order.
    fn values(&self, w: usize) -> Vec<u64>;
    /// Messages waiting in worker `w`'s command and reply rings.
    fn ring_depths(&self, w: usize) -> (usize, usize);
    /// Pushes a command to worker `w`; false if its ring is full (counted, not waited).
    fn send(&mut self, w: usize, cmd: Command) -> bool;
    /// The next reply from any worker.
    fn reply(&mut self) -> Option<Reply>;
    /// The services, as JSON.
    fn services(&self) -> Value;
    /// The log filter in force.
    fn log_level(&self) -> String;
    /// Replaces the log filter.
    fn set_log_level(&mut self, level: &str) -> Result<(), String>;
    /// Starts a shutdown (drain, then close after `grace` or the configured grace);
    /// returns the grace in force.
    fn shutdown(&mut self, grace: Option<Duration>) -> Duration;
}

/// Where and how the control loop listens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Unix socket path (`None`: no socket).
    pub socket: Option<PathBuf>,
    /// The HTTP metrics address (must be a loopback address).
    pub metrics: Option<SocketAddr>,
    /// A client silent this long (or with a partial request this long) is dropped.
    pub idle_timeout: Duration,
    /// Most clients at once; more are turned away.
    pub max_clients: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: Some(DEFAULT_SOCKET.into()),
            metrics: None,
            idle_timeout: Duration::from_secs(30),
            max_clients: 1024,
        }
    }
}

/// The bound sockets, made before the workers start so that errors stop the start-up.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) unix: Option<(UnixListener, PathBuf)>,
    pub(crate) http: Option<TcpListener>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the management sockets of `settings`.
pub(crate) fn bind(settings: &Settings) -> Result<Listeners, String> {
    let unix = match &settings.socket {
        None => None,
        Some(path) => Some((bind_unix(path)?, path.clone())),
    };
    let http = match settings.metrics {
        None => None,
        Some(addr) if !addr.ip().is_loopback() => {
            return Err(format!(
                "--metrics {addr}: the metrics listener serves localhost only: use 127.0.0.1:PORT"
            ));
        }
        Some(addr) => Some(
            TcpListener::bind(addr).map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?,
        ),
    };
    Ok(Listeners { unix, http })
}

fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("--mgmt {shown}: cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if path.exists() {
        // A socket left by a daemon that died goes; a live daemon's stays.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "--mgmt {shown}: another c10m daemon answers on this socket: stop it or \
                 give another --mgmt path"
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("--mgmt {shown}: {e}"))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("--mgmt {shown}: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("--mgmt {shown}: setting mode 0600: {e}"))?;
    Ok(listener)
}

/// Runs the control loop on its own thread until `stop` is set. The thread is kept off
/// the workers' cores (`avoid`).
pub(crate) fn spawn(
    listeners: Listeners,
    settings: Settings,
    mut dp: Box<dyn Dataplane + Send>,
    stop: Arc<AtomicBool>,
    avoid: Vec<usize>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("c10m-ctl".into())
        .spawn(move || {
            crate::sys::avoid_cores(&avoid);
            if let Err(e) = serve(listeners, &settings, &mut *dp, &stop) {
                tracing::error!("the control loop failed: {e}");
            }
        })
}
