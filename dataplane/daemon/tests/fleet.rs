//! The multi-host bed end to end (privileged): three dataplane hosts behind a BIRD router
//! with resilient ECMP, 30,000 connections, drain / undrain / `kill -9` of host 2, through
//! `scripts/demo-scaleout`, whose summary lines carry what this test asserts.

mod common;

use std::process::Command;
use std::time::Instant;

use common::bed_lock;
use serde_json::Value;

#[test]
fn three_hosts_drain_undrain_and_kill_without_breaking_the_others() {
    let Some(_lock) = bed_lock() else { return };
    let script = common::workspace_root().join("scripts/demo-scaleout");
    let t = Instant::now();
    let out = Command::new(&script)
        .args(["--hosts", "3", "--conns", "30000", "--mode", "resilient"])
        .env("C10M_TESTBED_LOCKED", "1")
        .env("C10M_SKIP_BUILD", "1")
        .env("C10M_BIN", env!("CARGO_BIN_EXE_c10m"))
        .output()
        .expect("running scripts/demo-scaleout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo-scaleout failed:\n{stderr}\n{stdout}"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let (detail, summary) = match &lines[..] {
        [.., d, s] => (d, s),
        _ => panic!("no summary lines:\n{stdout}\n{stderr}"),
    };
    eprintln!("{detail}\n{summary}\n({:?})", t.elapsed());

    assert_eq!(summary["hosts"], 3);
    assert_eq!(summary["service"], "198.18.100.10:7");
    assert_eq!(summary["connections"], 30000);
    assert_eq!(summary["resilient"], true);
    let per_host: Vec<u64> = summary["per_host"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_host.iter().sum::<u64>(), 30000, "{per_host:?}");
    for &n in &per_host {
        assert!(
            (8000..=12000).contains(&n),
            "spread beyond ±20%: {per_host:?}"
        );
    }
    // Drain: withdrawn within 5 s, nobody else broken, nothing new on host 2, and host
    // 2's own connections closed in order (FIN, not RST or silence).
    assert!(
        summary["withdraw_secs"].as_f64().unwrap() < 5.0,
        "{summary}"
    );
    assert_eq!(summary["broken_on_others"], 0, "{summary}");
    assert_eq!(summary["new_to_drained"], 0, "{summary}");
    assert_eq!(detail["closed_in_order"], per_host[1], "{detail}");
    // Undrain: host 2 takes new connections again.
    assert!(
        detail["new_after_undrain"].as_u64().unwrap() > 0,
        "{detail}"
    );
    // kill -9: withdrawn, and only host 2's own connections (those made after the
    // undrain) break.
    assert!(
        detail["kill_withdraw_secs"].as_f64().unwrap() < 5.0,
        "{detail}"
    );
    assert_eq!(
        detail["broken_on_kill"], detail["new_after_undrain"],
        "{detail}"
    );
}
