//! Child processes of `compare`: servers that run until stopped, and load generators that
//! run to completion. Every child gets its own process group (so a Ctrl-C on the
//! terminal reaches `compare` only, which then stops the children in order), its stderr
//! in a log file, a deadline, and SIGTERM then SIGKILL after a grace period on every
//! path out, `Drop` included.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Seconds a child gets between SIGTERM and SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(8);

/// The line of a log file that says why, for an error message: the first that starts
/// with `error` (clap's usage errors end with a hint line), else the last non-empty one.
pub(crate) fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let error = lines.clone().find(|l| l.starts_with("error"));
    error.or(lines.next_back()).unwrap_or("").to_owned()
}

/// `cmd` as one shell-like line, for the report.
pub(crate) fn command_line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", command_line(cmd)))
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; always reaps.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// How a server shows it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// It prints `ready` on stdout (`c10m run`, `c10m kernel`).
    Line,
    /// A socket of its network namespace listens on this TCP port (nginx).
    Listen(u16),
}

/// Whether `/proc/net/tcp` text has a socket in LISTEN state on local `port`.
pub(crate) fn listens(proc_net_tcp: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    proc_net_tcp.lines().skip(1).any(|l| {
        let mut w = l.split_whitespace();
        let (_sl, local, _remote, state) = (w.next(), w.next(), w.next(), w.next());
        local.is_some_and(|a| a.ends_with(&want)) && state == Some("0A")
    })
}

/// A server: runs until stopped.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    child: Child,
    lines: Receiver<String>,
    log: PathBuf,
    /// Its stdout after `ready`.
    tail: Vec<String>,
    /// Stopped and reaped already.
    stopped: bool,
}

impl Server {
    /// Starts `cmd`, logging stderr to `log`, and waits up to `timeout` for `ready`.
    pub(crate) fn start(
        name: &str,
        mut cmd: Command,
        log: &Path,
        ready: Ready,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<Server> {
        let mut child = spawn(&mut cmd, log)?;
        let out = child.stdout.take().context("child stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            name: name.to_owned(),
            child,
            lines: rx,
            log: log.to_owned(),
            tail: Vec::new(),
            stopped: false,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted while starting {name}");
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not become ready in {} s ({})",
                    timeout.as_secs(),
                    s.log_hint()
                );
            }
            if let Ready::Listen(port) = ready {
                let tcp = std::fs::read_to_string(format!("/proc/{}/net/tcp", s.pid()));
                if tcp.is_ok_and(|t| listens(&t, port)) {
                    return Ok(s);
                }
                if let Ok(Some(status)) = s.child.try_wait() {
                    bail!("{name} exited while starting ({status}): {}", s.log_hint());
                }
            }
            match s.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if ready == Ready::Line && l.trim() == "ready" => return Ok(s),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = s.child.wait().ok();
                    bail!(
                        "{name} exited while starting ({}): {}",
                        status.map_or("?".into(), |s| s.to_string()),
                        s.log_hint()
                    );
                }
            }
        }
    }

    fn log_hint(&self) -> String {
        let l = last_line(&self.log);
        if l.is_empty() {
            format!("see {}", self.log.display())
        } else {
            format!("{l}; see {}", self.log.display())
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it (SIGTERM, then SIGKILL after [`GRACE`]); returns what it printed on
    /// stdout after `ready` (the daemon's final counters), also kept in the log's sibling
    /// `NAME.out`.
    pub(crate) fn stop(mut self) -> Vec<String> {
        self.stopped = true;
        if let Some(s) = terminate(&mut self.child, GRACE)
            && !s.success()
        {
            eprintln!("c10m-bench compare: {} exited with {s}", self.name);
        }
        // The reader thread forwards the last lines once the pipe closes.
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.tail.push(l);
        }
        let _ = std::fs::write(self.log.with_extension("out"), self.tail.join("\n"));
        std::mem::take(&mut self.tail)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Some(s) = terminate(&mut self.child, GRACE)
            && !s.success()
        {
            eprintln!("c10m-bench compare: {} exited with {s}", self.name);
        }
    }
}

/// Runs `cmd` to completion (stderr to `log`) and returns its stdout. Calls `tick`
/// every 100 ms while it runs. Stops it at `limit` or when `stop` is set; a failure
/// is an error naming the reason and the log's last line.
pub(crate) fn run(
    mut cmd: Command,
    log: &Path,
    limit: Duration,
    stop: &AtomicBool,
    mut tick: impl FnMut(Duration),
) -> anyhow::Result<String> {
    let mut child = spawn(&mut cmd, log)?;
    let mut out = child.stdout.take().context("child stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => {
                terminate(&mut child, GRACE);
                return Err(e).context("waiting for a child");
            }
        }
        if stop.load(Ordering::Relaxed) {
            terminate(&mut child, GRACE);
            bail!("interrupted");
        }
        if start.elapsed() >= limit {
            terminate(&mut child, GRACE);
            bail!(
                "timed out after {:.0} s (last: {})",
                limit.as_secs_f64(),
                last_line(log)
            );
        }
        tick(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    if !status.success() {
        let why = last_line(log);
        bail!(
            "{status}: {}",
            if why.is_empty() { "no message" } else { &why }
        );
    }
    Ok(stdout)
}

/// The last line of `stdout` that parses as a JSON object of type `T`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(stdout: &str) -> anyhow::Result<T> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .context("no JSON object on stdout")?;
    serde_json::from_str(line).with_context(|| format!("unexpected JSON: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_state_on_a_port() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n\
           0: 020012C6:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n\
           1: 020012C6:0050 010013C6:0400 01 00000000:00000000 00:00000000 00000000     0\n";
        assert!(listens(tcp, 8080));
        assert!(!listens(tcp, 80), "port 80 is only established");
        assert!(!listens(tcp, 7));
    }

    #[test]
    fn the_error_line_wins_over_the_hint() {
        let dir = std::env::temp_dir().join(format!("c10m-proc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.log");
        std::fs::write(
            &log,
            "error: unexpected argument '--x'\n\nFor more information, try '--help'.\n",
        )
        .unwrap();
        assert_eq!(last_line(&log), "error: unexpected argument '--x'");
        std::fs::write(&log, "warn: a\nc10m-bench conns: no ARP answer\n\n").unwrap();
        assert_eq!(last_line(&log), "c10m-bench conns: no ARP answer");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
