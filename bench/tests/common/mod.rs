//! The privileged harness of the bench tests: the shared test-bed harness of the
//! dataplane's tests (`harness`: root check, the bed under its lock, namespaces, child
//! processes), plus servers in c10m-dut and `c10m-bench` in c10m-gen.
#![allow(dead_code, unreachable_pub)]

#[path = "../../../dataplane/daemon/tests/common/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use harness::{Bed, Process, privileged};
// Only some test binaries use these.
#[allow(unused_imports)]
pub use harness::{in_netns, ns_run};

/// The `c10m` daemon binary of the same profile as `c10m-bench`, built if missing.
pub fn c10m_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_c10m-bench"));
    let dir = bench.parent().expect("the binary has a directory");
    let bin = dir.join("c10m");
    if !bin.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "c10m-daemon", "--bin", "c10m"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().is_ok_and(|s| s.success()), "building c10m");
    }
    bin
}

/// A `c10m` server in c10m-dut (`c10m run` or `c10m kernel`); killed on drop.
pub struct Server(Process);

impl Server {
    /// Starts `c10m ARGS…` (under `taskset -c CORES` if given) and waits for its `ready`
    /// line.
    pub fn start(args: &[&str], cores: Option<&str>) -> Server {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "c10m-dut"]);
        if let Some(c) = cores {
            cmd.args(["taskset", "-c", c]);
        }
        cmd.arg(c10m_binary()).args(args).env("RUST_LOG", "warn");
        let server = Server(Process::spawn(cmd, "c10m"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.0.lines.recv_timeout(left) {
                Ok(l) if l == "ready" => return server,
                Ok(_) => {}
                Err(_) => panic!("c10m {args:?} did not become ready"),
            }
        }
    }

    /// Its process id (`ip netns exec` and `taskset` exec it, so the daemon's own).
    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    /// SIGTERM, wait for the exit, and return its last JSON line (its final report).
    pub fn stop(self) -> serde_json::Value {
        self.0.stop_within(Duration::from_secs(15))
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
