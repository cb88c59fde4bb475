//! `c10m-bench xsk --mode both` on the veth test bed: AF_XDP tx from c10m-gen, XDP +
//! AF_XDP rx-drop in c10m-dut. Privileged: as root it takes the test bed lock
//! (`/tmp/c10m-testbed.lock`, shared with the dataplane's tests), builds the bed and
//! deletes it afterwards, even on failure. Not root: fails under `CI=true`, else skips.

mod common;

use std::process::Command;

use common::{Bed, privileged};

#[test]
fn both_directions_on_the_test_bed() {
    if !privileged() {
        return;
    }
    let Some(_bed) = Bed::up(1) else { return };
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "c10m-dut",
            env!("CARGO_BIN_EXE_c10m-bench"),
        ])
        .args([
            "xsk", "--iface", "dut0", "--mode", "both", "--secs", "1", "--json",
        ])
        .output()
        .expect("running c10m-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "c10m-bench xsk failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    eprintln!("{r}");
    let (tx, rx) = (r["tx_pps"].as_f64().unwrap(), r["rx_pps"].as_f64().unwrap());
    let (sent, got) = (
        r["tx_packets"].as_u64().unwrap(),
        r["rx_packets"].as_u64().unwrap(),
    );
    assert!(tx > 0.0 && rx > 0.0, "{r}");
    // Frames still in the tx ring at the deadline are sent, not counted: one ring's worth.
    assert!(
        got > 0 && got <= sent + 4096,
        "received more than was sent: {r}"
    );
    // The rx rate is timed over its own window (first to last frame): allow 10%.
    assert!(rx <= tx * 1.1, "rx rate above the tx rate: {r}");
    for field in [
        "mode",
        "iface",
        "frame_size",
        "secs",
        "xdp_mode",
        "zero_copy",
        "batch",
    ] {
        assert!(!r[field].is_null(), "{field} missing: {r}");
    }
}
