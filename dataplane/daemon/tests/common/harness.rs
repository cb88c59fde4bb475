//! The privileged test harness shared by the dataplane's tests and the apps crate's
//! dataplane test (`#[path]`-included there): the standard test bed (`scripts/testbed`),
//! entered namespaces, and child processes whose stdout is read line by line.
//!
//! The bed's names (c10m-gen, c10m-dut) are global, so every test holds an exclusive
//! `flock` on a lock file for its whole run: tests in this binary, other test binaries
//! and concurrent runs wait for each other. The bed is taken down in a `Drop` guard,
//! so it goes even when an assertion fails.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The dataplane's IPv6 service address on the bed (`--addr 2001:2::10/64`).
pub const SERVICE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
/// dut0's own IPv6 address, the dut's kernel's.
pub const DUT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
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
        "privileged test cannot run: CI must run the privileged tests as root"
    );
    eprintln!("skipped: needs root");
    false
}

/// `scripts/testbed` of the workspace (this file serves crates at several depths).
fn testbed_script() -> PathBuf {
    workspace_root().join("scripts/testbed")
}

/// The workspace's root: the nearest ancestor of the crate's directory with `scripts/`.
pub fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.ancestors()
        .find(|d| d.join("scripts/testbed").exists())
        .map_or(dir.clone(), PathBuf::from)
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

/// A child process with its stdout forwarded line by line; killed on drop.
pub struct Process {
    child: Child,
    /// The lines it printed, in order.
    pub lines: Receiver<String>,
}

impl Process {
    /// Starts `cmd` with stdout piped (stderr inherited).
    pub fn spawn(mut cmd: Command, what: &str) -> Process {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let lines = lines_of(child.stdout.take().unwrap());
        Process { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for an exit with status 0, then returns the last JSON line it
    /// printed (its report).
    pub fn report(&mut self, limit: Duration) -> serde_json::Value {
        let status = wait_timeout(&mut self.child, limit);
        assert!(
            status.is_some_and(|s| s.success()),
            "exit after {limit:?}: {status:?}"
        );
        // The reader thread ends at EOF: take everything it still has to hand over.
        let report = std::iter::from_fn(|| self.lines.recv_timeout(limit).ok())
            .filter(|l| l.starts_with('{'))
            .last()
            .expect("a JSON report on stdout");
        serde_json::from_str(&report).expect("the report is JSON")
    }

    /// SIGTERM, wait (10 s at most) for exit 0, and return the final report.
    pub fn stop(self) -> serde_json::Value {
        self.stop_within(Duration::from_secs(10))
    }

    /// [`stop`](Self::stop), waiting at most `limit`.
    pub fn stop_within(mut self, limit: Duration) -> serde_json::Value {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.report(limit)
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The test-bed lock alone, for a test whose script builds its own bed (the multi-host
/// bed of `scripts/demo-scaleout`); `None` (after [`privileged`]) if not root.
pub fn bed_lock() -> Option<File> {
    if !privileged() {
        return None;
    }
    let lock = File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
    // SAFETY: flock on a descriptor we own, which stays open as long as the returned file.
    let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "locking the test bed");
    Some(lock)
}
