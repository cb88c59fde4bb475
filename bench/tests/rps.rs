//! `c10m-bench rps` and `cps` on the veth test bed, against the dataplane (198.18.0.10,
//! `c10m run`) and against dut0's kernel (198.18.0.2, `c10m kernel`): short runs of
//! pipelined HTTP, echo and connection churn, checked against the servers' own counts of
//! accepted connections.
//!
//! Privileged: skipped (with "skipped: needs root") when not root, failed under
//! `CI=true`. Holds the test bed lock for each test's whole run and takes the bed down
//! even when an assertion fails (see `common`). Servers run on core 1, the generator on
//! core 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bed, Server, bench, privileged};
use serde_json::Value;

fn u(r: &Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {r}"))
}

/// Latency fields present, non-zero and ordered.
fn check_latency(r: &Value) {
    let (p50, p99, p999, max) = (
        u(r, "p50_us"),
        u(r, "p99_us"),
        u(r, "p999_us"),
        u(r, "max_us"),
    );
    assert!(p50 > 0, "{r}");
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{r}");
    assert!(r["mean_us"].as_f64().is_some_and(|m| m > 0.0), "{r}");
}

/// rps over http and echo, then cps over http, against `ip`; returns the connections the
/// server must have accepted.
fn load(ip: &str) -> u64 {
    let http = bench(&[
        "rps",
        "--target",
        &format!("{ip}:80"),
        "--proto",
        "http",
        "--conns",
        "20",
        "--pipeline",
        "4",
        "--secs",
        "2",
        "--warmup",
        "0.5",
    ]);
    for field in ["target", "proto", "conns", "pipeline", "secs", "rps"] {
        assert!(!http[field].is_null(), "no {field} in {http}");
    }
    assert_eq!(http["target"], format!("{ip}:80"));
    assert_eq!(http["proto"], "http");
    assert_eq!(u(&http, "connected"), 20, "{http}");
    assert_eq!(u(&http, "errors"), 0, "{http}");
    // Tens of thousands per second on an idle machine; a floor that survives a busy one.
    assert!(u(&http, "requests") > 5_000, "{http}");
    assert!(http["rps"].as_f64().unwrap() > 2_500.0, "{http}");
    check_latency(&http);

    let echo = bench(&[
        "rps",
        "--target",
        &format!("{ip}:7"),
        "--proto",
        "echo",
        "--req-size",
        "100",
        "--conns",
        "10",
        "--pipeline",
        "2",
        "--secs",
        "2",
        "--warmup",
        "0.5",
    ]);
    assert_eq!(u(&echo, "connected"), 10, "{echo}");
    assert_eq!(u(&echo, "errors"), 0, "{echo}");
    assert!(u(&echo, "requests") > 5_000, "{echo}");
    check_latency(&echo);

    let cps = bench(&[
        "cps",
        "--target",
        &format!("{ip}:80"),
        "--concurrency",
        "20",
        "--secs",
        "2",
    ]);
    for field in ["target", "proto", "concurrency", "secs", "cps"] {
        assert!(!cps[field].is_null(), "no {field} in {cps}");
    }
    assert_eq!(u(&cps, "failed"), 0, "{cps}");
    assert_eq!(u(&cps, "attempted"), u(&cps, "completed"), "{cps}");
    assert!(u(&cps, "completed") > 1_000, "{cps}");
    check_latency(&cps);
    u(&http, "connected") + u(&echo, "connected") + u(&cps, "completed")
}

#[test]
fn rps_and_cps_against_the_dataplane() {
    if !privileged() {
        return;
    }
    let Some(_bed) = Bed::up(1) else { return };
    let server = Server::start(
        &[
            "run",
            "--iface",
            "dut0",
            "--addr",
            "198.18.0.10/24",
            "--service",
            "http:80",
            "--service",
            "echo:7",
            "--cores",
            "1",
        ],
        None,
    );
    let expected = load("198.18.0.10");

    // Ctrl-C stops a long run early, cleanly, with what was measured.
    let child = Command::new("ip")
        .args(["netns", "exec", "c10m-gen", "taskset", "-c", "0"])
        .arg(env!("CARGO_BIN_EXE_c10m-bench"))
        .args(["rps", "--target", "198.18.0.10:80", "--secs", "60"])
        .args(["--warmup", "0", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running c10m-bench");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("c10m-bench output");
    assert!(started.elapsed() < Duration::from_secs(5), "slow to stop");
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["interrupted"], true, "{r}");
    assert!(r["secs"].as_f64().unwrap() < 10.0, "{r}");
    assert!(u(&r, "requests") > 0, "{r}");

    let report = server.stop();
    let accepted = report["totals"]["accepted"].as_u64().expect("accepted");
    assert_eq!(accepted, expected + u(&r, "connected"), "{report}");
}

#[test]
fn rps_and_cps_against_the_kernel() {
    if !privileged() {
        return;
    }
    let Some(_bed) = Bed::up(1) else { return };
    let server = Server::start(
        &[
            "kernel",
            "--addr",
            "198.18.0.2",
            "--service",
            "http:80",
            "--service",
            "echo:7",
            "--workers",
            "1",
        ],
        Some("1"),
    );
    let expected = load("198.18.0.2");
    let report = server.stop();
    assert_eq!(u(&report, "accepted"), expected, "{report}");
}

/// Operator mistakes get one line that says what to do, and exit status 1.
#[test]
fn bad_input_is_one_line_not_a_panic() {
    let bin = env!("CARGO_BIN_EXE_c10m-bench");
    for (args, says) in [
        (
            &["rps", "--iface", "no-such0", "--target", "198.18.0.10:80"][..],
            "scripts/testbed up",
        ),
        (
            &["cps", "--iface", "no-such0", "--target", "198.18.0.10:80"][..],
            "scripts/testbed up",
        ),
        (&["rps", "--target", "10.0.0.1:80"][..], "198.18.0.0/15"),
        (&["cps", "--target", "198.19.0.1:80"][..], "not on-link"),
        (
            &["rps", "--target", "198.18.0.10:80", "--conns", "0"][..],
            "--conns",
        ),
    ] {
        let out = Command::new(bin).args(args).output().expect("c10m-bench");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
