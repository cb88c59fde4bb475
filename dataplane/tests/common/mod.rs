//! The privileged test harness: the standard test bed (`scripts/testbed`), entered
//! namespaces, and the `c10m` daemon as a child process.
//!
//! The bed's names (c10m-gen, c10m-dut) are global, so every test holds an exclusive
//! `flock` on a lock file for its whole run: tests in this binary, other test binaries
//! and concurrent runs wait for each other. The bed is taken down in a `Drop` guard,
//! so it goes even when an assertion fails.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const GEN_NS: &str = "c10m-gen";
pub const DUT_NS: &str = "c10m-dut";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// True if privileged tests can run. Under `CI=true` not being root fails the test.
pub fn privileged() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run: CI must run the dataplane tests as root"
    );
    eprintln!("skipped: needs root");
    false
}

fn testbed_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed")
}

fn testbed(args: &[&str]) -> Result<String, String> {
    let out = Command::new(testbed_script())
        .args(args)
        .output()
        .map_err(|e| format!("scripts/testbed: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "scripts/testbed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The test bed, up with `queues` queues while this lives (and the lock held).
pub struct Bed {
    _lock: File,
}

impl Bed {
    /// Takes the lock and builds a fresh bed; `None` (after [`privileged`]) if not root.
    pub fn up(queues: u32) -> Option<Bed> {
        if !privileged() {
            return None;
        }
        let lock = File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
        // SAFETY: flock on a descriptor we own, which stays open as long as the guard.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "locking the test bed");
        let bed = Bed { _lock: lock };
        // Down first: a bed left by someone else may have another queue count.
        let _ = testbed(&["down"]);
        testbed(&["up", "--queues", &queues.to_string()]).unwrap();
        Some(bed)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Err(e) = testbed(&["down"]) {
            eprintln!("{e}");
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns` (sockets it opens live there).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("netns file");
            // SAFETY: setns with a valid namespace descriptor; it changes only the calling
            // thread's network namespace, which is this scoped thread's alone.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs a command in a namespace; true if it exits 0.
pub fn ns_run(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The daemon, started in c10m-dut; killed on drop.
pub struct Daemon {
    child: Child,
    lines: Receiver<String>,
}

impl Daemon {
    /// Starts `c10m run` with the standard options plus `extra`, and waits for `ready`.
    pub fn start(extra: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(extra);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match d.lines.recv_timeout(left) {
                Ok(line) if line == "ready" => return d,
                Ok(_) => {}
                Err(_) => {
                    let status = d.child.try_wait();
                    panic!("the daemon did not become ready (status {status:?})");
                }
            }
        }
    }

    /// Starts `c10m run` without waiting.
    pub fn spawn(extra: &[&str]) -> Daemon {
        let mut child = Command::new("ip")
            .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
            .args([
                "--iface",
                "dut0",
                "--addr",
                "198.18.0.10/24",
                "--service",
                "echo:7",
            ])
            .args(["--max-conns", "4096"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting c10m");
        let lines = lines_of(child.stdout.take().unwrap());
        Daemon { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, wait for exit 0, and return the final report.
    pub fn stop(mut self) -> serde_json::Value {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "daemon exit: {status:?}"
        );
        let report = self
            .lines
            .try_iter()
            .filter(|l| l.starts_with('{'))
            .last()
            .expect("a JSON report on stdout");
        serde_json::from_str(&report).expect("the report is JSON")
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` for at most `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks what every report must show: no bad checksums and every UMEM frame back.
/// Forwards each line a child prints to the returned channel, from a thread of its own.
pub fn lines_of(stdout: std::process::ChildStdout) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Runs `c10m ctl --mgmt SOCK ARGS…`: whether it succeeded, and its stdout then stderr.
pub fn ctl(sock: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_c10m"))
        .args(["ctl", "--mgmt", sock])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn assert_clean(report: &serde_json::Value) {
    let t = &report["totals"];
    assert_eq!(t["bad_checksums"], 0, "bad checksums: {t}");
    assert!(t["frames_total"].as_u64().unwrap() > 0);
    assert_eq!(
        t["frames_free"], t["frames_total"],
        "UMEM frames leaked: {t}"
    );
    for w in report["workers"].as_array().unwrap() {
        assert_eq!(w["frames"]["held_at_close"], 0, "frames held at close: {w}");
        assert_eq!(w["port"]["rx_bad_desc"], 0);
        assert_eq!(w["port"]["tx_bad_completion"], 0);
    }
}
