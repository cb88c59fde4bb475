//! The daemon's side of the control path: the rings and counters that join the control
//! thread to each worker, the [`Dataplane`] the control loop drives, and the binary's
//! hooks (log level, SIGHUP reload).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Options;
use crate::control::{Command, Dataplane, Reply};
use crate::ring;
use crate::stats::Published;
use crate::worker;

/// Commands that may wait for one worker.
const COMMAND_RING: usize = 64;
/// Replies that may wait for the control thread.
const REPLY_RING: usize = 64;

/// Reads and changes the process's log filter (the binary owns the subscriber).
pub trait LogLevel: Send + Sync {
    /// The filter in force, e.g. `info` or `c10m=debug,warn`.
    fn get(&self) -> String;
    /// Replaces the filter; an error says what is wrong with `filter`.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// What a SIGHUP reload found in the configuration.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// A new log filter.
    pub log_level: Option<String>,
    /// A new grace period.
    pub grace: Option<Duration>,
    /// Settings that changed but only take effect after a restart.
    pub restart: Vec<String>,
}

/// The binary's hooks into [`run_with`](crate::run_with).
#[derive(Default)]
pub struct Hooks {
    /// Install the SIGINT/SIGTERM/SIGHUP handlers.
    pub signals: bool,
    /// The log filter, for the `log-level` command and reloads.
    pub log: Option<Arc<dyn LogLevel>>,
    /// Called on SIGHUP: re-reads the configuration.
    pub on_hangup: Option<Box<dyn FnMut() -> Result<Reload, String> + Send>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("signals", &self.signals)
            .finish_non_exhaustive()
    }
}

/// The control thread's ends of one worker's rings.
#[derive(Debug)]
pub(crate) struct Ends {
    commands: ring::Producer<Command>,
    replies: ring::Consumer<Reply>,
    stats: Arc<Published>,
}

/// The rings and counters of worker `queue`: its end and the control thread's.
pub(crate) fn pair(queue: usize, grace_ms: Arc<AtomicU64>) -> (worker::Link, Ends) {
    let (cmd_tx, cmd_rx) = ring::new(COMMAND_RING);
    let (reply_tx, reply_rx) = ring::new(REPLY_RING);
    let stats = Arc::new(Published::default());
    let link = worker::Link {
        commands: cmd_rx,
        replies: reply_tx,
        stats: stats.clone(),
        grace_ms,
        queue,
    };
    let ends = Ends {
        commands: cmd_tx,
        replies: reply_rx,
        stats,
    };
    (link, ends)
}

/// The [`Dataplane`] of a running daemon.
pub(crate) struct Control {
    workers: Vec<Ends>,
    services: Value,
    log: Option<Arc<dyn LogLevel>>,
    stop: Arc<AtomicBool>,
    grace_ms: Arc<AtomicU64>,
    next_reply: usize,
}

impl Control {
    pub(crate) fn new(
        workers: Vec<Ends>,
        opts: &Options,
        listen: &[(String, u16)],
        log: Option<Arc<dyn LogLevel>>,
        stop: Arc<AtomicBool>,
        grace_ms: Arc<AtomicU64>,
    ) -> Control {
        let services = listen
            .iter()
            .map(
                |(name, port)| json!({"name": name, "addr": opts.addr.0.to_string(), "port": port}),
            )
            .collect();
        Control {
            workers,
            services,
            log,
            stop,
            grace_ms,
            next_reply: 0,
        }
    }
}

impl Dataplane for Control {
    fn workers(&self) -> usize {
        self.workers.len()
    }

    fn values(&self, w: usize) -> Vec<u64> {
        self.workers[w].stats.read()
    }

    fn ring_depths(&self, w: usize) -> (usize, usize) {
        let e = &self.workers[w];
        (e.commands.len(), e.replies.len())
    }

    fn send(&mut self, w: usize, cmd: Command) -> bool {
        self.workers[w].commands.push(cmd).is_ok()
    }

    fn reply(&mut self) -> Option<Reply> {
        let n = self.workers.len();
        for i in 0..n {
            let w = (self.next_reply + i) % n;
            if let Some(r) = self.workers[w].replies.pop() {
                self.next_reply = (w + 1) % n;
                return Some(r);
            }
        }
        None
    }

    fn services(&self) -> Value {
        self.services.clone()
    }

    fn log_level(&self) -> String {
        self.log
            .as_ref()
            .map_or_else(|| "unknown".into(), |l| l.get())
    }

    fn set_log_level(&mut self, level: &str) -> Result<(), String> {
        match &self.log {
            Some(l) => l.set(level),
            None => Err("this daemon cannot change its log level".into()),
        }
    }

    fn shutdown(&mut self, grace: Option<Duration>) -> Duration {
        if let Some(g) = grace {
            self.grace_ms.store(g.as_millis() as u64, Ordering::Relaxed);
        }
        tracing::info!("shutdown requested on the management socket");
        self.stop.store(true, Ordering::SeqCst);
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }
}

/// SIGHUP: re-reads the configuration, applies what can change at run time and logs
/// what needs a restart.
pub(crate) fn reload(hooks: &mut Hooks, grace_ms: &AtomicU64) {
    let Some(on_hangup) = hooks.on_hangup.as_mut() else {
        tracing::info!("SIGHUP: no configuration file to reload");
        return;
    };
    let r = match on_hangup() {
        Ok(r) => r,
        Err(e) => return tracing::error!("SIGHUP: configuration not reloaded: {e}"),
    };
    if let (Some(level), Some(log)) = (&r.log_level, &hooks.log) {
        match log.set(level) {
            Ok(()) => tracing::info!("SIGHUP: log level {level}"),
            Err(e) => tracing::error!("SIGHUP: log_level: {e}"),
        }
    }
    if let Some(g) = r.grace {
        grace_ms.store(g.as_millis() as u64, Ordering::Relaxed);
        tracing::info!("SIGHUP: grace {g:?}");
    }
    if !r.restart.is_empty() {
        tracing::warn!(
            "SIGHUP: changed but needs a restart: {}",
            r.restart.join(", ")
        );
    }
}
