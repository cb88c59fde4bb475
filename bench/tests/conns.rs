//! `c10m-bench conns` on the veth test bed against the `c10m` daemon: 10,000
//! connections opened, held, confirmed by the server's management socket, and reset.
//!
//! Privileged: skipped (with "skipped: needs root") when not root, failed under
//! `CI=true`. Holds the test bed lock `/tmp/c10m-testbed.lock` for its whole run and
//! takes the bed down even when an assertion fails. The daemon binary is the `c10m`
//! next to `c10m-bench` in the target directory (built on demand with the same profile).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bed, Server, privileged};

const SOCK: &str = "/tmp/c10m-bench-conns-test/c10m.sock";

fn daemon(max_conns: u32) -> Server {
    let max = max_conns.to_string();
    Server::start(
        &[
            "run",
            "--iface",
            "dut0",
            "--addr",
            "198.18.0.10/24",
            "--gateway",
            "198.18.0.1",
            "--service",
            "echo:7",
            "--max-conns",
            &max,
            "--rx-buf",
            "256",
            "--tx-buf",
            "256",
            "--mgmt",
            SOCK,
        ],
        None,
    )
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
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = daemon(20_000);
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
    daemon.stop();
}
