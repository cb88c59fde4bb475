//! The daemon on the veth test bed, end to end: ARP and ping, TCP echo at 1,000
//! concurrent connections, kernel traffic alongside, two queues, SYN cookies from the
//! XDP program, `kill -9`, UMEM accounting, start-up errors. Privileged: see `common`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Bed, DUT_ADDR, DUT_NS, Daemon, GEN_NS, SERVICE, assert_clean, echo_clients, kernel_echo,
    ns_run, per_worker,
};

fn ping(ns: &str, to: &str) -> bool {
    let (ok, out) = ns_run(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", to]);
    if !ok {
        eprintln!("{out}");
    }
    ok
}

#[test]
fn arp_ping_and_kernel_traffic_alongside() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&[]);

    // (a) ARP and ICMP for the service address are answered by the dataplane.
    assert!(ping(GEN_NS, &SERVICE.to_string()), "ping to the dataplane");
    let (_, neigh) = ns_run(GEN_NS, &["ip", "neigh", "show", &SERVICE.to_string()]);
    assert!(
        neigh.contains("02:00:c6:12:00:02"),
        "ARP answered with dut0's MAC: {neigh}"
    );

    // (c) The kernel's own address keeps working: ping and TCP to a kernel listener.
    assert!(ping(GEN_NS, &DUT_ADDR.to_string()), "ping to the kernel");
    kernel_echo(DUT_ADDR.into(), b"hello");

    let report = daemon.stop();
    assert_clean(&report);
    let xdp = &report["xdp"];
    assert!(
        xdp["steered"].as_u64().unwrap() >= 4,
        "ARP + pings steered: {xdp}"
    );
    assert!(
        xdp["passed"].as_u64().unwrap() > 0,
        "kernel traffic passed: {xdp}"
    );
    assert_eq!(xdp["no_xsk"], 0);
}

#[test]
fn echo_at_1000_concurrent_connections() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&[]);
    let started = std::time::Instant::now();
    echo_clients(SocketAddr::from((SERVICE, 7)), 1000, 700);
    eprintln!("1000 connections x 700 B echoed in {:?}", started.elapsed());
    let report = daemon.stop();
    assert_clean(&report);
    let t = &report["totals"];
    assert!(t["accepted"].as_u64().unwrap() >= 1000, "{t}");
    let echo = &report["workers"][0]["echo"];
    assert_eq!(echo["bytes"], 1000 * 700, "{echo}");
    assert!(
        echo["closed"].as_u64().unwrap() >= 1000,
        "every connection closed: {echo}"
    );
}

#[test]
fn two_queues_share_the_connections() {
    let Some(_bed) = Bed::up(2) else { return };
    let daemon = Daemon::start(&["--queues", "2", "--cores", "0,1"]);
    echo_clients(SocketAddr::from((SERVICE, 7)), 1000, 300);
    let report = daemon.stop();
    assert_clean(&report);
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let accepted = per_worker(&report, "stack", "accepted");
    eprintln!("accepted per worker: {accepted:?}");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "both workers got connections: {accepted:?}"
    );
    assert!(accepted.iter().sum::<u64>() >= 1000);
}

#[test]
fn syn_cookies_always_are_answered_by_the_xdp_program_on_every_queue() {
    let Some(_bed) = Bed::up(2) else { return };
    let daemon = Daemon::start(&["--queues", "2", "--cores", "0,1", "--syn-cookies", "always"]);
    echo_clients(SocketAddr::from((SERVICE, 7)), 200, 300);
    let report = daemon.stop();
    assert_clean(&report);
    // Every SYN got its SYN-ACK from XDP, with the keys of its queue's worker: the stack
    // sent no cookie itself, yet every connection was born from one.
    let xdp = &report["xdp"];
    assert!(xdp["cookies"].as_u64().unwrap() >= 200, "{xdp}");
    let workers = report["workers"].as_array().unwrap();
    let stack = |w: &serde_json::Value, k: &str| w["stack"][k].as_u64().unwrap();
    let born: Vec<u64> = workers
        .iter()
        .map(|w| stack(w, "cookies_accepted"))
        .collect();
    eprintln!("cookie-born connections per worker: {born:?}; {xdp}");
    assert!(
        born.iter().all(|&n| n > 0),
        "both queues' keys work: {born:?}"
    );
    assert!(born.iter().sum::<u64>() >= 200);
    for w in workers {
        assert_eq!(stack(w, "cookies_sent"), 0, "{}", w["stack"]);
        assert_eq!(stack(w, "cookies_invalid"), 0, "{}", w["stack"]);
        assert_eq!(
            stack(w, "syns"),
            0,
            "no SYN reached the stack: {}",
            w["stack"]
        );
    }
}

#[test]
fn kill_9_leaves_no_xdp_program() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&[]);
    let show = || ns_run(DUT_NS, &["ip", "-d", "link", "show", "dev", "dut0"]).1;
    assert!(
        show().contains("prog/xdp"),
        "attached while running: {}",
        show()
    );
    daemon.kill9();
    // The kernel releases the bpf_link when the last descriptor goes; allow a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while show().contains("prog/xdp") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !show().contains("prog/xdp"),
        "program left behind: {}",
        show()
    );
    // And a new daemon can attach again.
    let again = Daemon::start(&[]);
    assert_clean(&again.stop());
}

/// Start-up errors: one line on stderr that says what to do, non-zero exit.
fn start_error(extra: &[&str], iface: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
        .args([
            "--iface",
            iface,
            "--addr",
            "198.18.0.10/24",
            "--service",
            "echo:7",
        ])
        .args(extra)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn start_up_errors_are_one_line() {
    let Some(_bed) = Bed::up(1) else { return };
    let e = start_error(&[], "nosuch0");
    assert!(e.contains("no interface named nosuch0"), "{e}");
    let e = start_error(&["--queues", "2"], "dut0");
    assert!(
        e.contains("has 1 rx queue") && e.contains("ethtool -L"),
        "{e}"
    );
    let e = start_error(&["--service", "smtp:25"], "dut0");
    assert!(e.contains("valid services are echo, http, push"), "{e}");
    let e = start_error(&["--zero-copy", "on"], "dut0");
    assert!(e.contains("zero-copy"), "{e}");
}
