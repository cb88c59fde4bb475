//! `c10m-bench stack`, the in-memory scenario of the stack issue, run as a user runs it:
//! the JSON fields it promises, each with a value that means something.

use std::process::Command;

use serde_json::Value;

#[test]
fn stack_benchmark_prints_its_json_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_c10m-bench"))
        .args([
            "stack", "--conns", "20000", "--rx-buf", "256", "--tx-buf", "256",
        ])
        .args(["--exchanges", "30000", "--json"])
        .output()
        .expect("run c10m-bench");
    assert!(
        out.status.success(),
        "c10m-bench stack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let num = |k: &str| {
        report[k]
            .as_f64()
            .unwrap_or_else(|| panic!("field {k} missing in {report}"))
    };
    assert_eq!(num("conns"), 20_000.0);
    assert_eq!(num("established"), 20_000.0, "every connection established");
    // Every connection exchanged a request and a response before the timed rounds.
    assert!(num("exchanged") >= 20_000.0);
    // Slot (488 B) + buffers (512 B) + table, timers and queues: about 1 KiB; the process
    // holds both stacks, so RSS grows by about twice that.
    let bytes = num("bytes_per_conn");
    assert!((992.0..1100.0).contains(&bytes), "bytes_per_conn {bytes}");
    let rss = num("rss_bytes_per_conn");
    assert!(
        (bytes..3.0 * bytes).contains(&rss),
        "rss_bytes_per_conn {rss}"
    );
    for k in [
        "ns_per_segment",
        "ns_per_segment_1k",
        "ns_per_segment_sequential",
        "handshakes_per_sec",
    ] {
        let v = num(k);
        assert!(v.is_finite() && v > 0.0, "{k} = {v}");
    }
    // The server's and the client's own shares: each less than both together (by the
    // wall clock, which also holds the requests' sends and the test's bookkeeping), and
    // the server's ratio what its fields say.
    for (side, both) in [
        ("server_ns_per_segment", "ns_per_segment"),
        ("server_ns_per_segment_1k", "ns_per_segment_1k"),
        ("client_ns_per_segment", "ns_per_segment"),
        ("client_ns_per_segment_1k", "ns_per_segment_1k"),
    ] {
        let (v, all) = (num(side), num(both));
        assert!(v.is_finite() && v > 0.0, "{side} = {v}");
        assert!(
            v < 2.0 * all,
            "{side} {v} vs {both} {all}: per segment of one side"
        );
    }
    let server_ratio = num("server_segment_ratio");
    let expect = num("server_ns_per_segment") / num("server_ns_per_segment_1k");
    assert!(
        (server_ratio - expect).abs() < 1e-9,
        "server_segment_ratio {server_ratio}"
    );
    let ratio = num("segment_ratio");
    let expect = num("ns_per_segment") / num("ns_per_segment_1k");
    assert!((ratio - expect).abs() < 1e-9, "segment_ratio {ratio}");
    let total = report["memory"]["total"].as_f64().expect("memory.total");
    assert!(
        (total - bytes * 20_000.0).abs() < 1.0,
        "memory.total {total}"
    );
}
