//! The control thread: one epoll loop (mio) over every management socket, never on a
//! dataplane core.
//!
//! * A Unix socket (mode 0600; none by default, `/run/c10m/c10m.sock` in `c10m run`) speaking line-delimited
//!   JSON ([`proto`]); `c10m ctl` is its client.
//! * Optionally a localhost HTTP listener: `GET /metrics` (Prometheus text),
//!   `GET /stats` (JSON) and `GET /health` (200 while serving, 503 otherwise: the
//!   [`state`] a routing daemon announces by), one request per connection ([`http`]).
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
pub(crate) mod state;
#[cfg(test)]
mod tests;
mod workers;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, UnixListener};
use serde_json::Value;

use crate::error::{ManagementError, StartError};

pub(crate) use crate::msg::{Command, Fanout, Reply};
pub(crate) use clients::serve;
pub use state::{DEFAULT_ON_STATE_TIMEOUT, OnState, State};
pub(crate) use workers::{Workers, services_json};

/// The management socket of the `c10m` daemon when none is given (`c10m run --mgmt`,
/// `c10m ctl --mgmt`). A library user's [`Settings`] have no socket unless it names one,
/// so that two embedded services (or one and a `c10m run`) never collide on it.
pub const DEFAULT_SOCKET: &str = "/run/c10m/c10m.sock";
/// Longest request line (and HTTP request head).
pub(crate) const MAX_LINE: usize = 4096;
/// Most answer bytes that may wait for a client.
pub(crate) const MAX_OUTPUT: usize = 4 << 20;

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
    /// The XDP program's counters, as JSON (`None`: none to read).
    fn xdp(&self) -> Option<Value> {
        None
    }
    /// The log filter in force.
    fn log_level(&self) -> String;
    /// Replaces the log filter.
    fn set_log_level(&mut self, level: &str) -> Result<(), String>;
    /// Starts a shutdown (drain, then close after `grace` or the configured grace);
    /// returns the grace in force.
    fn shutdown(&mut self, grace: Option<Duration>) -> Duration;
    /// The serving state (`GET /health`).
    fn state(&self) -> State;
    /// Moves to `state` (running the `--on-state` hook on a change); returns the one
    /// before.
    fn set_state(&mut self, state: State) -> State;
}

/// Where and how the control loop listens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Unix socket path (`None`, the default: no socket; the `c10m` binary uses
    /// [`DEFAULT_SOCKET`]).
    pub socket: Option<PathBuf>,
    /// The HTTP metrics address (must be a loopback address).
    pub metrics: Option<SocketAddr>,
    /// A client silent this long (or with a partial request this long) is dropped.
    pub idle_timeout: Duration,
    /// Most clients at once; more are turned away.
    pub max_clients: usize,
    /// The command run on each change of the serving state (`--on-state`).
    pub on_state: Option<OnState>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: None,
            metrics: None,
            idle_timeout: Duration::from_secs(30),
            max_clients: 1024,
            on_state: None,
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
pub(crate) fn bind(settings: &Settings) -> Result<Listeners, ManagementError> {
    let unix = match &settings.socket {
        None => None,
        Some(path) => Some((bind_unix(path)?, path.clone())),
    };
    let http = match settings.metrics {
        None => None,
        Some(addr) if !addr.ip().is_loopback() => return Err(ManagementError::NotLoopback(addr)),
        Some(addr) => Some(
            TcpListener::bind(addr).map_err(|source| ManagementError::Metrics { addr, source })?,
        ),
    };
    Ok(Listeners { unix, http })
}

fn bind_unix(path: &Path) -> Result<UnixListener, ManagementError> {
    let failed = |what: &'static str| {
        move |source| ManagementError::Socket {
            path: path.to_owned(),
            what,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|source| ManagementError::Directory {
            path: path.to_owned(),
            dir: dir.to_owned(),
            source,
        })?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if path.exists() {
        // A socket left by a daemon that died goes; a live daemon's stays.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ManagementError::Taken(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(failed(""))?;
    }
    let listener = UnixListener::bind(path).map_err(failed(""))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(failed("setting mode 0600: "))?;
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
            crate::sys::avoid_cores(&avoid, "the control thread");
            if let Err(e) = serve(listeners, &settings, &mut *dp, &stop) {
                tracing::error!("the control loop failed: {e}");
            }
        })
}

/// The management of one run, from binding its sockets to joining its threads: what
/// the daemon does with `Options::management`.
#[derive(Debug)]
pub(crate) struct Run {
    settings: Settings,
    /// The bound sockets, until the control thread takes them.
    listeners: Option<Listeners>,
    lifecycle: Arc<state::Lifecycle>,
    /// The `--on-state` hook's thread.
    hook: Option<JoinHandle<()>>,
    /// The control thread, once started.
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The workers' cores, which the control and hook threads keep off.
    avoid: Vec<usize>,
}

impl Run {
    /// Binds the sockets and starts the hook's thread, in `starting`: before the workers
    /// start, so that a taken socket stops the start-up. The control and hook threads keep
    /// off the workers' cores, `avoid`.
    pub(crate) fn bind(settings: &Settings, avoid: Vec<usize>) -> Result<Run, StartError> {
        let settings = settings.clone();
        let listeners = bind(&settings)?;
        let (lifecycle, hook) = state::Lifecycle::new(settings.on_state.clone(), avoid.clone())
            .map_err(StartError::system("starting the --on-state thread"))?;
        Ok(Run {
            settings,
            listeners: Some(listeners),
            lifecycle: Arc::new(lifecycle),
            hook,
            thread: None,
            stop: Arc::new(AtomicBool::new(false)),
            avoid,
        })
    }

    /// The serving state, for the [`Workers`].
    pub(crate) fn lifecycle(&self) -> Arc<state::Lifecycle> {
        self.lifecycle.clone()
    }

    /// Starts the control thread over the running workers, then moves to `serving`.
    pub(crate) fn serve(&mut self, dp: Workers) -> Result<(), StartError> {
        if let Some(listeners) = self.listeners.take() {
            let thread = spawn(
                listeners,
                self.settings.clone(),
                Box::new(dp),
                self.stop.clone(),
                self.avoid.clone(),
            )
            .map_err(StartError::system("starting the control thread"))?;
            self.thread = Some(thread);
        }
        self.lifecycle.set(State::Serving);
        Ok(())
    }

    /// The daemon stops: `stopping` for `/health` and the hook.
    pub(crate) fn stopping(&self) {
        self.lifecycle.set(State::Stopping);
    }

    /// Once the workers are gone: stops the control thread, then lets the hook's thread
    /// run the changes queued (`stopping` last) and end.
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
        // The hook's thread ends once the last handle goes.
        drop(self.lifecycle);
        if let Some(hook) = self.hook {
            let _ = hook.join();
        }
    }
}
