//! The SYN-flood acceptance test: the dataplane keeps serving while `c10m-bench flood`
//! sends random-source SYNs at it for 10 s.
//!
//! It runs the `flood` scenario of `c10m-bench compare` against the dataplane alone
//! (`--scenarios flood --servers dataplane --flood-conns 1000 --flood-rate 150000`), so
//! the test and the recorded comparison measure the same way: `c10m run … --service
//! echo:7` with SYN cookies `auto` on core 1, the flood generator (niced) and the
//! kernel clients on core 0 in c10m-gen, a baseline load of malformed frames at the
//! same rate for the "before" round trips (the scenario's module docs,
//! `bench/src/compare/flood.rs`, say why).
//!
//! # Why 150,000 SYNs/s and not the generator's top rate
//!
//! On this bed a receiver's work runs on the sender's core (veth), so the generator's
//! top rate depends on the server: against the kernel baseline (`c10m kernel`,
//! syncookies on) it reaches 130,000–180,000 SYNs/s, because the kernel answers each SYN
//! in softirq on the generator's own core; against the dataplane, whose XDP program
//! answers a SYN for less, it reaches 650,000–940,000, more than dut0's veth queue
//! (256 frames, drained on that same core) takes. A fifth of the frames are then lost
//! before any program sees them, legitimate ones alike: the bed's link is saturated,
//! which no defence on the server can undo (`bench/RESULTS.md` has that run too: the
//! echo connection keeps 4%, and about half the 1,000 connections fit in the window
//! because lost SYNs wait out the client's 1 s RTO). 150,000 SYNs/s is the top rate
//! the generator reaches against Linux here, so the test floods the dataplane at least
//! as hard as the reference flood hits the kernel.
//!
//! It requires:
//!
//! - ≥ 99% of 1,000 new connections, opened one after another by a kernel client
//!   during the flood, to succeed (connect, write, read the echo, close; 3 s each),
//!   all 1,000 attempted before the flood ends;
//! - the established echo connection to keep ≥ 80% of its round trips per second;
//! - the daemon's RSS to grow < 5%;
//! - no RST to answer a flood SYN (counted by the generator, which takes every reply
//!   to the spoofed 198.19.0.0/16 sources);
//! - 1 s after the flood, 20 new connections to succeed at once (1 s each);
//! - and, so that the test cannot pass by not flooding: the flood and the baseline
//!   load at 90% of the rate or more, and SYN cookies sent for most flood SYNs.
//!
//! Every measured number is printed before the checks, so a run shows its margins.
//! Privileged: fails under `CI=true` when not root, skips otherwise; holds the test bed
//! lock for its whole run. About 25 s.

mod common;

use std::cmp::Ordering;
use std::process::Command;

use common::{Bed, privileged};
use serde_json::Value;

const LEGIT: u64 = 1000;
/// SYNs per second (see the module docs).
const RATE: u64 = 150_000;
const AFTER: u64 = 20;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// `x < min`, or `x` is not a number (a figure missing from the report).
fn below(x: f64, min: f64) -> bool {
    !matches!(
        x.partial_cmp(&min),
        Some(Ordering::Greater | Ordering::Equal)
    )
}

#[test]
fn the_dataplane_keeps_serving_through_a_syn_flood() {
    if !privileged() {
        return;
    }
    let Some(_bed) = Bed::up(1) else { return };
    common::c10m_binary();
    let out = std::env::temp_dir().join(format!("c10m-flood-test-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_c10m-bench"))
        .args(["compare", "--scenarios", "flood", "--servers", "dataplane"])
        .args(["--flood-secs", "10", "--flood-conns", &LEGIT.to_string()])
        .args(["--flood-rate", &RATE.to_string()])
        .args(["--held", "1000", "--json", "--out"])
        .arg(&out)
        .output()
        .expect("running c10m-bench compare");
    let _ = std::fs::remove_dir_all(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "c10m-bench compare failed ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    let f = &report["flood"][0];
    eprintln!(
        "{}",
        serde_json::to_string_pretty(f).expect("the flood record")
    );
    assert_eq!(f["server"], "dataplane", "the record is the dataplane's");
    assert!(f["error"].is_null(), "the scenario failed: {}", f["error"]);

    let (g, decoy) = (&f["generator"], &f["decoy"]);
    let (during, after) = (&f["during"], &f["after"]);
    let kept = num(&f["rtt_during"]) / num(&f["rtt_before"]);
    let growth = num(&f["rss_after"]) / num(&f["rss_before"]) - 1.0;
    eprintln!(
        "flood {:.0} SYNs/s (baseline load {:.0}/s); new connections {} ok of {} attempted (want \
         {LEGIT}, ≥ 99%), slowest {} ms; echo kept {:.0}% (want ≥ 80%); RSS {:+.2}% (want \
         < 5%); RSTs to spoofed sources {}; cookies {}; after: {} of {AFTER}",
        num(&g["rate_achieved"]),
        num(&decoy["rate_achieved"]),
        during["ok"],
        during["attempted"],
        during["slowest_ms"],
        100.0 * kept,
        100.0 * growth,
        g["replies"]["rst"],
        f["cookies_sent"],
        after["ok"],
    );

    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let mut failed = Vec::new();
    for (what, rate) in [
        ("flood", &g["rate_achieved"]),
        ("baseline load", &decoy["rate_achieved"]),
    ] {
        if below(num(rate), 0.9 * RATE as f64) {
            failed.push(format!("the {what} sent only {rate} frames/s of {RATE}"));
        }
    }
    // Most flood SYNs get a cookie from the XDP program (the stack sends a few
    // thousand at the start, until its half-open budget is full).
    if count(&f["cookies_sent"]) < count(&g["sent"]) * 9 / 10 {
        failed.push(format!(
            "{} cookies for {} flood SYNs",
            f["cookies_sent"], g["sent"]
        ));
    }
    if count(&during["attempted"]) < LEGIT || count(&during["ok"]) * 100 < LEGIT * 99 {
        failed.push(format!(
            "{} of {LEGIT} new connections succeeded during the flood ({} attempted)",
            during["ok"], during["attempted"]
        ));
    }
    if below(kept, 0.8) {
        failed.push(format!(
            "the echo connection kept {:.0}% of its round trips",
            100.0 * kept
        ));
    }
    if growth.is_nan() || growth >= 0.05 {
        failed.push(format!("the daemon's RSS grew {:.1}%", 100.0 * growth));
    }
    if g["replies"]["rst"].as_u64() != Some(0) {
        failed.push(format!("{} RSTs answered flood SYNs", g["replies"]["rst"]));
    }
    if count(&after["ok"]) < AFTER {
        failed.push(format!(
            "1 s after the flood only {} of {AFTER} new connections succeeded",
            after["ok"]
        ));
    }
    assert!(failed.is_empty(), "{}", failed.join("; "));
}
