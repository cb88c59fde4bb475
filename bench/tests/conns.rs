//! `c10m-bench conns` on the veth test bed against the `c10m` daemon: 10,000
//! connections opened, held, confirmed by the server's management socket, and reset.
//!
//! Privileged: skipped (with "skipped: needs root") when not root, failed under
//! `CI=true`. Holds the test bed lock `/tmp/c10m-testbed.lock` for its whole run and
//! takes the bed down even when an assertion fails. The daemon binary is the `c10m`
//! next to `c10m-bench` in the target directory (built on demand with the same profile).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SOCK: &str = "/tmp/c10m-bench-conns-test/c10m.sock";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let ids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            ids.split_whitespace().nth(1).map(|u| u == "0")
        })
        .unwrap_or(false)
}

fn privileged() -> bool {
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

fn testbed(args: &[&str]) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed");
    Command::new(script)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// The bed, up while this lives, with the lock held.
struct Bed {
    _lock: File,
}

impl Bed {
    fn up() -> Bed {
        let lock = File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
        // SAFETY: flock on a descriptor we own, open as long as the guard.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "locking the test bed");
        let bed = Bed { _lock: lock };
        let _ = testbed(&["down"]);
        assert!(testbed(&["up", "--queues", "1"]), "scripts/testbed up");
        bed
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        testbed(&["down"]);
    }
}

/// The `c10m` daemon binary of the same profile, built if missing.
fn daemon_binary() -> PathBuf {
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

struct Daemon(Child);

impl Daemon {
    fn start(max_conns: u32) -> Daemon {
        let mut child = Command::new("ip")
            .args(["netns", "exec", "c10m-dut"])
            .arg(daemon_binary())
            .args(["run", "--iface", "dut0", "--addr", "198.18.0.10/24"])
            .args(["--gateway", "198.18.0.1", "--service", "echo:7"])
            .args(["--max-conns", &max_conns.to_string()])
            .args(["--rx-buf", "256", "--tx-buf", "256", "--mgmt", SOCK])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting c10m");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let d = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l == "ready" => return d,
                Ok(_) => {}
                Err(_) => panic!("the daemon did not become ready"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's established connections, from its management socket.
fn server_established() -> u64 {
    let mut s = UnixStream::connect(SOCK).expect("the management socket");
    s.write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["stats"]["totals"]["connections"]["established"]
        .as_u64()
        .expect("connections.established")
}

#[test]
fn ten_thousand_connections_confirmed_by_the_server_and_reset() {
    if !privileged() {
        return;
    }
    let _bed = Bed::up();
    let _daemon = Daemon::start(20_000);
    assert_eq!(server_established(), 0);

    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "c10m-gen",
            env!("CARGO_BIN_EXE_c10m-bench"),
        ])
        .args(["conns", "--target", "198.18.0.10:7", "--count", "10000"])
        .args(["--rate", "20000", "--hold", "1", "--mgmt", SOCK, "--json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running c10m-bench conns");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "c10m-bench conns failed: {text}");
    eprintln!("{text}");
    let r: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(r["attempted"], 10_000, "{r}");
    assert_eq!(r["established"], 10_000, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["server_established"].as_u64().unwrap() >= 10_000, "{r}");
    assert!(r["server_bytes_per_conn"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["requests_ok"], r["requests"], "{r}");
    assert_eq!(r["bad_echo"], 0, "{r}");
    assert!(r["cps_per_sec"].as_array().is_some_and(|a| !a.is_empty()));

    // After the RSTs the server's count drops back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = server_established();
    while left > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = server_established();
    }
    assert_eq!(left, 0, "the server still holds connections after the RSTs");
}
