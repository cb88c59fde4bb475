//! The daemon's serving state, for routing daemons and load balancers: `GET /health` on
//! the metrics listener answers from it, and `--on-state CMD` runs a command on each
//! change.
//!
//! States: `starting` (workers not all up) → `serving` ⇄ `draining` (`c10m ctl drain`,
//! `c10m ctl undrain`) → `stopping` (a signal or `c10m ctl shutdown`). Only `serving` is
//! healthy: a BGP speaker announces the service address while `/health` answers 200 and
//! withdraws it otherwise, so a draining host stops getting new flows from its router
//! while its own connections finish.
//!
//! The state is one atomic that the control thread and the daemon's main thread write
//! and anyone reads. The hook runs on a thread of its own, kept off the dataplane cores:
//! the command (through `/bin/sh -c`, with the state as `$1` and in `C10M_STATE`) may
//! block on a routing daemon, so nothing that serves traffic or the management socket
//! ever waits for it. Changes queue and run in order; a command still running after the
//! timeout is killed with its process group, logged, and the next change runs. Cost: a
//! change that comes while the previous command runs waits for it (at most the timeout).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The serving state `GET /health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Starting up: not every worker runs yet.
    Starting,
    /// Accepting and serving connections.
    Serving,
    /// Not accepting new connections; serving (and, with a close delay, then closing)
    /// the ones it has.
    Draining,
    /// Stopping: closing every connection within the grace period, then exiting.
    Stopping,
}

impl State {
    /// The state's name: `starting`, `serving`, `draining` or `stopping`.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Serving => "serving",
            State::Draining => "draining",
            State::Stopping => "stopping",
        }
    }

    /// Whether a routing daemon should send this host new connections.
    pub fn healthy(self) -> bool {
        self == State::Serving
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Serving,
            2 => State::Draining,
            3 => State::Stopping,
            _ => State::Starting,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            State::Starting => 0,
            State::Serving => 1,
            State::Draining => 2,
            State::Stopping => 3,
        }
    }
}

/// The `--on-state` hook: a shell command run with the new state as its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnState {
    /// The command, run as `/bin/sh -c 'CMD "$1"' c10m-on-state STATE`.
    pub command: String,
    /// A run still going after this is killed.
    pub timeout: Duration,
}

/// The default time an `--on-state` command may take.
pub const DEFAULT_ON_STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared serving state and the way to the hook.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: AtomicU8,
    hook: Option<mpsc::Sender<State>>,
}

impl Lifecycle {
    /// A lifecycle in `starting`; with a hook, also its thread (which ends once every
    /// `Lifecycle` handle is gone and the queued changes have run).
    pub(crate) fn new(
        hook: Option<OnState>,
        avoid: Vec<usize>,
    ) -> std::io::Result<(Lifecycle, Option<JoinHandle<()>>)> {
        let Some(hook) = hook else {
            return Ok((
                Lifecycle {
                    state: AtomicU8::new(0),
                    hook: None,
                },
                None,
            ));
        };
        let (tx, rx) = mpsc::channel::<State>();
        let thread = std::thread::Builder::new()
            .name("c10m-on-state".into())
            .spawn(move || {
                crate::sys::avoid_cores(&avoid, "the --on-state runner");
                for state in rx {
                    run_hook(&hook, state);
                }
            })?;
        Ok((
            Lifecycle {
                state: AtomicU8::new(0),
                hook: Some(tx),
            },
            Some(thread),
        ))
    }

    /// The state now.
    pub(crate) fn get(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// Moves to `state`; on a change the hook gets it. Returns the state before.
    pub(crate) fn set(&self, state: State) -> State {
        let old = State::from_u8(self.state.swap(state.to_u8(), Ordering::SeqCst));
        if old != state {
            tracing::info!("state: {} -> {}", old.name(), state.name());
            if let Some(tx) = &self.hook {
                let _ = tx.send(state);
            }
        }
        old
    }
}

/// Runs the hook once for `state`, within its timeout; the outcome is logged.
pub(crate) fn run_hook(hook: &OnState, state: State) -> HookOutcome {
    let outcome = match spawn(hook, state) {
        Err(e) => HookOutcome::Failed(e.to_string()),
        Ok(mut child) => wait(&mut child, hook.timeout),
    };
    match &outcome {
        HookOutcome::Exited(0) => tracing::info!("--on-state {}: done", state.name()),
        HookOutcome::Exited(code) => {
            tracing::warn!("--on-state {}: exit status {code}", state.name())
        }
        HookOutcome::TimedOut => tracing::warn!(
            "--on-state {}: still running after {:?}: killed",
            state.name(),
            hook.timeout
        ),
        HookOutcome::Failed(e) => {
            tracing::warn!("--on-state {}: could not run: {e}", state.name())
        }
    }
    outcome
}

/// How one run of the hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookOutcome {
    /// It exited with this status (-1: killed by a signal).
    Exited(i32),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// It could not be started.
    Failed(String),
}

fn spawn(hook: &OnState, state: State) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{} \"$1\"", hook.command))
        .arg("c10m-on-state")
        .arg(state.name())
        .env("C10M_STATE", state.name())
        .stdin(Stdio::null())
        // Its own process group, so a timeout kills what the shell started too.
        .process_group(0)
        .spawn()
}

fn wait(child: &mut Child, timeout: Duration) -> HookOutcome {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return HookOutcome::Exited(status.code().unwrap_or(-1)),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                crate::sys::kill_group(child.id());
                let _ = child.wait();
                return HookOutcome::TimedOut;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("c10m-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("log")
    }

    #[test]
    fn names_and_health() {
        let all = [
            State::Starting,
            State::Serving,
            State::Draining,
            State::Stopping,
        ];
        let names: Vec<_> = all.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["starting", "serving", "draining", "stopping"]);
        let healthy: Vec<_> = all.iter().map(|s| s.healthy()).collect();
        assert_eq!(healthy, [false, true, false, false]);
        for s in all {
            assert_eq!(State::from_u8(s.to_u8()), s);
        }
    }

    #[test]
    fn the_hook_gets_every_change_in_order_and_nothing_else() {
        let log = temp("order");
        let hook = OnState {
            command: format!("echo \"$C10M_STATE\" >> {}; echo", log.display()),
            timeout: Duration::from_secs(5),
        };
        // `echo "$1"` after the operator's command: the argument reaches the command.
        let (life, thread) = Lifecycle::new(Some(hook), vec![]).unwrap();
        assert_eq!(life.get(), State::Starting);
        life.set(State::Serving);
        life.set(State::Serving); // no change: no run
        life.set(State::Draining);
        life.set(State::Serving);
        assert_eq!(life.set(State::Stopping), State::Serving);
        drop(life);
        thread.unwrap().join().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["serving", "draining", "serving", "stopping"]
        );
    }

    #[test]
    fn the_state_is_the_commands_first_argument() {
        let log = temp("arg");
        let hook = OnState {
            command: format!("printf '%s|' >> {}", log.display()),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(run_hook(&hook, State::Draining), HookOutcome::Exited(0));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "draining|");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let log = temp("timeout");
        let hook = OnState {
            command: format!("(sleep 0.5; echo late > {}) & sleep 30; :", log.display()),
            timeout: Duration::from_millis(200),
        };
        let t = Instant::now();
        assert_eq!(run_hook(&hook, State::Stopping), HookOutcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(800));
        assert!(
            !log.exists(),
            "the hook's background child outlived the kill"
        );
    }

    #[test]
    fn a_failing_hook_is_reported_with_its_status() {
        let hook = OnState {
            command: "exit 3; :".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(run_hook(&hook, State::Serving), HookOutcome::Exited(3));
    }
}
