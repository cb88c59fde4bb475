//! `c10m-bench compare` on the veth test bed, with tiny settings: 2,000 held connections,
//! one short rps level, a short cps run, against the dataplane and the kernel.
//!
//! Privileged: skipped (with "skipped: needs root") when not root, failed under
//! `CI=true`. Holds the test bed lock `/tmp/c10m-testbed.lock` for its whole run and
//! takes the bed down even when an assertion fails. `compare` starts and stops the
//! servers itself; it needs the `c10m` binary next to `c10m-bench` (built on demand with
//! the same profile).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// The bed, up while this lives, with the lock held (released when the file closes).
struct Bed {
    _lock: File,
}

impl Bed {
    fn up() -> Bed {
        let lock = File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
        lock.lock().expect("locking the test bed");
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

/// Builds the `c10m` daemon of the same profile next to `c10m-bench` if it is missing.
fn daemon_binary() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_c10m-bench"));
    let dir = bench.parent().expect("the binary has a directory");
    if !dir.join("c10m").exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "c10m-dataplane", "--bin", "c10m"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().is_ok_and(|s| s.success()), "building c10m");
    }
}

/// Whether this `c10m-bench` has subcommand `name` yet.
fn has_subcommand(name: &str) -> bool {
    Command::new(env!("CARGO_BIN_EXE_c10m-bench"))
        .args([name, "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn compare_writes_a_report_with_both_servers_and_plots() {
    if !privileged() {
        return;
    }
    daemon_binary();
    let _bed = Bed::up();
    let out_dir = std::env::temp_dir().join(format!("c10m-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);

    let out = Command::new(env!("CARGO_BIN_EXE_c10m-bench"))
        .args([
            "compare",
            "--held",
            "2000",
            "--held-rate",
            "10000",
            "--hold",
            "1",
        ])
        .args(["--rps-conns", "10", "--rps-secs", "1", "--warmup", "0.5"])
        .args([
            "--cps-concurrency",
            "10",
            "--cps-secs",
            "1",
            "--max-conns",
            "8192",
        ])
        .arg("--out")
        .arg(&out_dir)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()
        .expect("running c10m-bench compare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "compare failed: {text}");
    let printed: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");

    let file = std::fs::read_to_string(out_dir.join("report.json")).expect("report.json");
    let r: serde_json::Value = serde_json::from_str(&file).expect("report.json is JSON");
    assert_eq!(r, printed, "--json prints report.json");
    for field in [
        "machine", "settings", "sysctls", "servers", "notes", "held", "rps", "cps", "goals",
        "plots",
    ] {
        assert!(!r[field].is_null(), "no {field} in {r}");
    }
    assert_eq!(r["interrupted"], false);
    assert!(
        r["machine"]["cores"].as_u64().unwrap() >= 1,
        "{}",
        r["machine"]
    );
    assert!(
        r["notes"].to_string().contains("RLIMIT_NOFILE"),
        "{}",
        r["notes"]
    );

    // Held connections: every one on both servers, with a memory figure.
    let held = r["held"].as_array().unwrap();
    for server in ["dataplane", "kernel"] {
        let h = held
            .iter()
            .find(|h| h["server"] == server)
            .unwrap_or_else(|| panic!("no held result for {server}: {held:?}"));
        assert!(h["error"].is_null(), "{server}: {h}");
        assert_eq!(h["requested"], 2000, "{server}: {h}");
        assert_eq!(h["held"], 2000, "{server}: {h}");
        assert_eq!(h["client"]["established"], 2000, "{server}: {h}");
        assert!(h["bytes_per_conn"].as_f64().unwrap() > 0.0, "{server}: {h}");
    }

    // RPS and CPS need the `rps` and `cps` subcommands. Until this binary has them,
    // compare must record each of those scenarios as failed, with the reason.
    for (kind, rate) in [("rps", "rps"), ("cps", "cps")] {
        let present = has_subcommand(kind);
        for server in ["dataplane", "kernel"] {
            let x = r[kind]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["server"] == server)
                .unwrap_or_else(|| panic!("no {kind} result for {server}"));
            if present {
                assert!(x["error"].is_null(), "{kind} {server}: {x}");
                assert!(
                    x["out"][rate].as_f64().unwrap() > 0.0,
                    "{kind} {server}: {x}"
                );
            } else {
                eprintln!("c10m-bench has no `{kind}` yet: checking it is recorded as failed");
                assert!(x["out"].is_null(), "{kind} {server}: {x}");
                assert!(x["error"].as_str().is_some_and(|e| !e.is_empty()), "{x}");
            }
        }
    }
    assert_eq!(r["goals"].as_array().unwrap().len(), 4);

    // The report and the plots.
    let md = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md");
    assert!(md.contains("| scenario | dataplane | kernel |"), "{md}");
    let plots = r["plots"].as_array().unwrap();
    assert_eq!(plots.len(), 3, "{plots:?}");
    for p in plots {
        let svg = std::fs::read_to_string(out_dir.join(p.as_str().unwrap())).expect("a plot");
        assert!(
            svg.starts_with("<svg"),
            "{p}: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{p}");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
