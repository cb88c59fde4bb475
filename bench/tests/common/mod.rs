//! The privileged harness of the bench tests: the root check, the standard test bed
//! (`scripts/testbed`) under its lock, servers in c10m-dut and `c10m-bench` in c10m-gen.
//!
//! The bed's names are global, so every test holds the exclusive lock
//! `/tmp/c10m-testbed.lock` (shared with the dataplane's tests and anyone running the bed
//! by hand with `flock`) for its whole run, through a `flock(1)` child that keeps it while
//! its stdin is open. The bed is taken down in a `Drop` guard, even when an assertion
//! fails. No `unsafe`: signals go through `kill(1)`.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let ids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            ids.split_whitespace().nth(1).map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// True if privileged tests can run. Not root: fails under `CI=true`, else skips.
pub fn privileged() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run: CI must run the bench tests as root"
    );
    eprintln!("skipped: needs root");
    false
}

fn testbed(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed");
    Command::new(script)
        .args(args)
        .output()
        .expect("scripts/testbed")
}

/// The bed with one queue, up while this lives, with the lock held.
pub struct Bed {
    lock: Child,
}

impl Bed {
    pub fn up() -> Bed {
        std::fs::File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
        let mut lock = Command::new("flock")
            .args(["/tmp/c10m-testbed.lock", "sh", "-c", "echo locked; cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        BufReader::new(lock.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("reading flock's answer");
        assert_eq!(line.trim(), "locked");
        let bed = Bed { lock };
        // Down first: a bed left by someone else may have another queue count.
        let _ = testbed(&["down"]);
        let up = testbed(&["up", "--queues", "1"]);
        assert!(
            up.status.success(),
            "scripts/testbed up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        bed
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = testbed(&["down"]);
        drop(self.lock.stdin.take());
        let _ = self.lock.wait();
    }
}

/// The `c10m` daemon binary of the same profile as `c10m-bench`, built if missing.
pub fn c10m_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_c10m-bench"));
    let dir = bench.parent().expect("the binary has a directory");
    let bin = dir.join("c10m");
    if !bin.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "c10m-dataplane", "--bin", "c10m"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().is_ok_and(|s| s.success()), "building c10m");
    }
    bin
}

fn lines_of(out: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A `c10m` server in c10m-dut (`c10m run` or `c10m kernel`); killed on drop.
pub struct Server {
    child: Child,
    lines: Receiver<String>,
}

impl Server {
    /// Starts `c10m ARGS…` (under `taskset -c CORES` if given) and waits for its `ready`
    /// line.
    pub fn start(args: &[&str], cores: Option<&str>) -> Server {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "c10m-dut"]);
        if let Some(c) = cores {
            cmd.args(["taskset", "-c", c]);
        }
        let mut child = cmd
            .arg(c10m_binary())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting c10m");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let server = Server { child, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(l) if l == "ready" => return server,
                Ok(_) => {}
                Err(_) => panic!("c10m {args:?} did not become ready"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, wait for the exit, and return its last JSON line (its final report).
    pub fn stop(mut self) -> serde_json::Value {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "c10m exited with {status}");
                std::thread::sleep(Duration::from_millis(50));
                let last = self
                    .lines
                    .try_iter()
                    .filter(|l| l.starts_with('{'))
                    .last()
                    .expect("a JSON report on stdout");
                return serde_json::from_str(&last).expect("the report is JSON");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("c10m did not stop within 15 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `c10m-bench ARGS… --json` in c10m-gen on core 0 and returns its JSON object;
/// fails the test if it fails.
pub fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", "c10m-gen", "taskset", "-c", "0"])
        .arg(env!("CARGO_BIN_EXE_c10m-bench"))
        .args(args)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()
        .expect("running c10m-bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "c10m-bench {args:?} failed: {text}");
    eprintln!("{text}");
    serde_json::from_str(text.trim()).expect("one JSON object")
}
