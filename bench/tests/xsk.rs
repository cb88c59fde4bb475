//! `c10m-bench xsk --mode both` on the veth test bed: AF_XDP tx from c10m-gen, XDP +
//! AF_XDP rx-drop in c10m-dut. Privileged: as root it takes the test bed lock
//! (`/tmp/c10m-testbed.lock`, shared with the dataplane's tests), builds the bed and
//! deletes it afterwards, even on failure. Not root: fails under `CI=true`, else skips.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let ids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            ids.split_whitespace().nth(1).map(|u| u == "0")
        })
        .unwrap_or(false)
}

fn testbed(args: &[&str]) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed");
    Command::new(script)
        .args(args)
        .output()
        .expect("scripts/testbed")
}

/// The bed, up while this lives, with the lock held (`flock(1)` on the lock file).
struct Bed {
    lock: std::process::Child,
}

impl Bed {
    fn up() -> Bed {
        File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
        // flock(1) holds the lock for as long as its `cat` child waits on stdin.
        let mut lock = Command::new("flock")
            .args(["/tmp/c10m-testbed.lock", "sh", "-c", "echo locked; cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(lock.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let bed = Bed { lock };
        let _ = testbed(&["down"]);
        let up = testbed(&["up", "--queues", "1"]);
        assert!(
            up.status.success(),
            "{}",
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

#[test]
fn both_directions_on_the_test_bed() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "privileged test cannot run: CI must run the bench tests as root"
        );
        eprintln!("skipped: needs root");
        return;
    }
    let _bed = Bed::up();
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
