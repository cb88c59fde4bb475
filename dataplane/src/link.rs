//! The daemon's side of the control path: the rings and counters that join the control
//! thread to each worker, and the binary's hooks (log level, SIGHUP reload).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::msg::{Command, Reply};
use crate::ring;
use crate::stats::Published;
use crate::worker;

/// Commands that may wait for one worker.
const COMMAND_RING: usize = 64;
/// Replies that may wait for the control thread.
const REPLY_RING: usize = 64;

/// An error of a [`Hooks`] callback, in one line: the caller's own type, boxed.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Reads and changes the process's log filter (the binary owns the subscriber).
pub trait LogLevel: Send + Sync {
    /// The filter in force, e.g. `info` or `c10m=debug,warn`.
    fn get(&self) -> String;
    /// Replaces the filter; an error says what is wrong with `filter`.
    fn set(&self, filter: &str) -> Result<(), HookError>;
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
    pub on_hangup: Option<Box<dyn FnMut() -> Result<Reload, HookError> + Send>>,
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
#[cfg_attr(
    not(feature = "management"),
    expect(
        dead_code,
        reason = "no control thread reads them without `management`"
    )
)]
pub(crate) struct Ends {
    pub(crate) commands: ring::Producer<Command>,
    pub(crate) replies: ring::Consumer<Reply>,
    pub(crate) stats: Arc<Published>,
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
