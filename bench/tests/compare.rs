//! `c10m-bench compare` on the veth test bed, with tiny settings: 2,000 held connections,
//! one short rps level, a short cps run, against the dataplane and the kernel (and rps and
//! cps against the reflector, the ceiling).
//!
//! Privileged: skipped (with "skipped: needs root") when not root, failed under
//! `CI=true`. Holds the test bed lock `/tmp/c10m-testbed.lock` for its whole run and
//! takes the bed down even when an assertion fails. `compare` starts and stops the
//! servers itself; it needs the `c10m` binary next to `c10m-bench` (built on demand with
//! the same profile).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Bed, c10m_binary, privileged};

#[test]
fn compare_writes_a_report_with_both_servers_and_plots() {
    if !privileged() {
        return;
    }
    c10m_binary();
    let Some(_bed) = Bed::up(1) else { return };
    let (out_dir, printed) = compare(
        "c10m-compare-test",
        &[
            "--held",
            "2000",
            "--held-rate",
            "10000",
            "--hold",
            "1",
            "--rps-conns",
            "10",
            "--rps-secs",
            "1",
            "--warmup",
            "0.5",
            "--cps-concurrency",
            "10",
            "--cps-secs",
            "1",
            "--max-conns",
            "8192",
        ],
    );

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

    // RPS and CPS: a rate from every server (the reflector, the ceiling, too), latencies
    // in order, no errors.
    for (kind, rate) in [("rps", "rps"), ("cps", "cps")] {
        for server in ["dataplane", "kernel", "reflector"] {
            let x = r[kind]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["server"] == server)
                .unwrap_or_else(|| panic!("no {kind} result for {server}"));
            assert!(x["error"].is_null(), "{kind} {server}: {x}");
            let out = &x["out"];
            assert!(out[rate].as_f64().unwrap() > 0.0, "{kind} {server}: {x}");
            let (p50, p99) = (out["p50_us"].as_f64(), out["p99_us"].as_f64());
            assert!(p50 > Some(0.0) && p50 <= p99, "{kind} {server}: {x}");
            if kind == "rps" {
                assert_eq!(out["errors"].as_f64(), Some(0.0), "{kind} {server}: {x}");
            }
            // CPU use over the measured window: both cores in percent, the server's
            // core busy, the server process's own CPU time, and the efficiency figure.
            let cpu = &x["cpu"];
            for core in ["server_core", "generator_core"] {
                for f in ["busy", "user", "system", "softirq"] {
                    let v = cpu[core][f].as_f64();
                    assert!(
                        v.is_some_and(|v| (0.0..=100.0).contains(&v)),
                        "{kind} {server}: {core}.{f} in {cpu}"
                    );
                }
            }
            assert!(
                cpu["server_core"]["busy"].as_f64().unwrap() > 0.0,
                "{kind} {server}: the server core did no work? {cpu}"
            );
            assert!(
                cpu["server_process_cpu_secs"].as_f64().unwrap() >= 0.0,
                "{kind} {server}: {cpu}"
            );
            assert_eq!(cpu["window"], "measured", "{kind} {server}: {cpu}");
            assert!(
                cpu["server_work"].as_f64().is_some_and(|v| v > 0.0),
                "{kind} {server}: server_work in {cpu}"
            );
            assert!(
                x["per_server_work_second"]
                    .as_f64()
                    .is_some_and(|v| v > 0.0),
                "{kind} {server}: {x}"
            );
            let idle = cpu["generator_idle"].as_f64();
            assert!(
                idle.is_some_and(|v| (0.0..=100.0).contains(&v)),
                "{kind} {server}: generator_idle in {cpu}"
            );
            assert!(
                x["per_core_second"].as_f64().unwrap() >= out[rate].as_f64().unwrap(),
                "{kind} {server}: per busy second of a core is at least the rate: {x}"
            );
        }
    }
    assert_eq!(r["goals"].as_array().unwrap().len(), 6);
    // The ceiling's goals are judged: the dataplane and the reflector both ran.
    let goals = r["goals"].as_array().unwrap();
    let cps_goal = goals
        .iter()
        .find(|g| g["name"] == "CPS ≥ 0.6× the reflector")
        .expect("the reflector's CPS goal");
    assert!(cps_goal["met"].is_boolean(), "{cps_goal}");

    // The report and the plots.
    let md = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md");
    assert!(
        md.contains("| scenario | dataplane | kernel | dataplane / kernel | reflector | dataplane / reflector |"),
        "{md}"
    );
    assert!(md.contains("## CPU use"), "{md}");
    assert!(md.contains("requests per server-core second"), "{md}");
    assert!(
        r["notes"].to_string().contains("What bounds each run"),
        "{}",
        r["notes"]
    );
    let plots = r["plots"].as_array().unwrap();
    assert_eq!(plots.len(), 8, "{plots:?}");
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

/// `compare --scenarios push` at 20,000 subscribers: on the dataplane and on two kernel
/// processes sharing the port, every subscriber heartbeats at least twice and every PING
/// is answered (round trips measured), one publish reaches each exactly once, the
/// dataplane's kernel drops no frame, and the four push plots have lines.
#[test]
fn compare_push_runs_subscribers_heartbeats_and_one_publish_on_both_servers() {
    const N: u64 = 20_000;
    if !privileged() {
        return;
    }
    c10m_binary();
    let Some(_bed) = Bed::up(1) else { return };
    let n = N.to_string();
    let (out_dir, r) = compare(
        "c10m-compare-push",
        &[
            "--scenarios",
            "push",
            "--servers",
            "dataplane,kernel",
            "--push-conns",
            &n,
            "--push-kernel-conns",
            &n,
            "--push-rate",
            "20000",
            "--push-kernel-rate",
            "5000",
            "--push-heartbeat-interval",
            "1",
            "--push-hold",
            "3",
            "--push-publish-after",
            "0.5",
        ],
    );
    let runs = r["push"].as_array().expect("push results");
    for (server, processes) in [("dataplane", 1), ("kernel", 2)] {
        let p = runs
            .iter()
            .find(|p| p["server"] == server)
            .unwrap_or_else(|| panic!("no push result for {server}: {runs:?}"));
        assert!(p["error"].is_null(), "{server}: {p}");
        assert_eq!(p["processes"], processes, "{server}: {p}");
        assert_eq!(p["held"], N, "{server}: {p}");
        assert!(p["bytes_per_conn"].as_f64().unwrap() > 0.0, "{server}: {p}");
        assert!(p["samples"].as_array().unwrap().len() >= 3, "{server}: {p}");
        let c = &p["client"];
        assert_eq!(c["established"], N, "{server}: {c}");
        assert_eq!(c["subscribed"], N, "{server}: {c}");
        let sent = c["heartbeats_sent"].as_u64().unwrap();
        assert!(sent >= 2 * N, "{server}: {c}");
        assert_eq!(
            c["heartbeats_ok"], sent,
            "{server}: every PING answered: {c}"
        );
        assert!(
            c["heartbeat_rtt_samples"].as_u64().unwrap() >= N,
            "{server}: {c}"
        );
        let rtt = &c["heartbeat_rtt"];
        let (p50, p99) = (
            rtt["p50_us"].as_u64().unwrap(),
            rtt["p99_us"].as_u64().unwrap(),
        );
        assert!(p50 > 0 && p50 <= p99, "{server}: {rtt}");
        assert_eq!(c["published_to"], N, "{server}: {c}");
        assert_eq!(c["delivered"], N, "{server}: {c}");
        assert_eq!(c["duplicates"], 0, "{server}: {c}");
        assert_eq!(c["missed"], 0, "{server}: {c}");
        assert!(c["delivery_secs"].as_f64().unwrap() > 0.0, "{server}: {c}");
    }
    let dp = runs.iter().find(|p| p["server"] == "dataplane").unwrap();
    assert_eq!(dp["client"]["server_rx_dropped"], 0, "{dp}");
    assert_eq!(dp["client"]["server_publish_delivered"], N, "{dp}");
    let md = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md");
    assert!(
        md.contains("| push: heartbeats answered, % | 100.000 | 100.000 |"),
        "{md}"
    );
    for plot in [
        "push-connections.svg",
        "push-memory.svg",
        "push-heartbeat-rtt.svg",
        "push-fanout.svg",
    ] {
        assert!(r["plots"].to_string().contains(plot), "{}", r["plots"]);
        let svg = std::fs::read_to_string(out_dir.join(plot)).expect("a plot");
        assert!(
            svg.contains("<polyline") && !svg.contains("no measurements"),
            "{plot} has no line"
        );
        assert!(
            svg.contains("dataplane") && svg.contains("kernel"),
            "{plot}"
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// Runs `c10m-bench compare ARGS` with `--out` a fresh directory named after `name` and
/// `--json`: the directory and the JSON object it printed.
fn compare(name: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let out_dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_c10m-bench"))
        .arg("compare")
        .args(args)
        .arg("--out")
        .arg(&out_dir)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()
        .expect("running c10m-bench compare");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "compare failed: {text}");
    let printed = serde_json::from_str(text.trim()).expect("one JSON object");
    (out_dir, printed)
}
