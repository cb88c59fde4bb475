//! IPv6 beside IPv4 on the veth test bed (a build with `--features ipv6`): the dataplane
//! serves 2001:2::10 beside 198.18.0.10; the generator's kernel pings it (`ping -6`) and
//! echoes through it, while the dut's kernel keeps its own IPv6 address (ping and TCP);
//! 1,000 IPv6 connections shared by two queues; IPv6 connections born from SYN cookies
//! the XDP program made; the host's own IPv6 address refused. The IPv6 twins of the
//! http, push and publish tests (`curl -6` among them) sit beside their IPv4 ones in
//! `services.rs` and `publish.rs`. Needs root and the test bed lock (see `common`).
#![cfg(feature = "ipv6")]

mod common;

use std::net::SocketAddr;

use common::{
    Bed, DUT_ADDR6, DUT_NS, Daemon, GEN_NS, SERVICE, SERVICE6, assert_clean, echo_clients,
    kernel_echo, ns_run, per_worker,
};

fn ping6(to: &str) -> (bool, String) {
    ns_run(
        GEN_NS,
        &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", to],
    )
}

#[test]
fn ping6_echo_and_the_kernels_own_ipv6_beside_ipv4() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--addr", "2001:2::10/64"]);

    let (ok, out) = ping6(&SERVICE6.to_string());
    assert!(ok, "ping -6 to the dataplane: {out}");
    let (_, neigh) = ns_run(
        GEN_NS,
        &["ip", "-6", "neigh", "show", &SERVICE6.to_string()],
    );
    assert!(
        neigh.contains("02:00:c6:12:00:02"),
        "neighbour solicitation answered with dut0's MAC: {neigh}"
    );
    // The dut's kernel keeps its own IPv6 address: ping and TCP to a kernel listener.
    let (ok, out) = ping6(&DUT_ADDR6.to_string());
    assert!(ok, "ping -6 to the kernel: {out}");
    kernel_echo(DUT_ADDR6.into(), b"hello over IPv6");

    echo_clients(SocketAddr::from((SERVICE6, 7)), 50, 3000);
    echo_clients(SocketAddr::from((SERVICE, 7)), 50, 3000);

    let report = daemon.stop();
    assert_clean(&report);
    let echo = &report["workers"][0]["echo"];
    assert_eq!(echo["bytes"], 100 * 3000, "{echo}");
}

#[test]
fn two_queues_share_1000_ipv6_connections() {
    let Some(_bed) = Bed::up(2) else { return };
    let daemon = Daemon::start(&["--addr", "2001:2::10/64", "--queues", "2", "--cores", "0,1"]);
    echo_clients(SocketAddr::from((SERVICE6, 7)), 1000, 300);
    let report = daemon.stop();
    assert_clean(&report);
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let accepted = per_worker(&report, "stack", "accepted");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "both workers got IPv6 connections: {accepted:?}"
    );
    assert_eq!(accepted.iter().sum::<u64>(), 1000, "{accepted:?}");
    let bytes: u64 = per_worker(&report, "echo", "bytes").iter().sum();
    assert_eq!(bytes, 1000 * 300);
}

#[test]
fn syn_cookies_always_are_made_by_the_xdp_program_for_ipv6() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--addr", "2001:2::10/64", "--syn-cookies", "always"]);
    echo_clients(SocketAddr::from((SERVICE6, 7)), 100, 2000);
    let report = daemon.stop();
    assert_clean(&report);
    // Every SYN got its SYN-ACK from the XDP program, with the worker's keys and the
    // stack's IPv6 cookie format: the stack saw no SYN, yet every connection was born
    // from a cookie and echoed byte for byte (`echo_clients`).
    let xdp = &report["xdp"];
    assert!(xdp["cookies"].as_u64().unwrap() >= 100, "{xdp}");
    let stack = &report["workers"][0]["stack"];
    assert_eq!(stack["cookies_accepted"], 100, "{stack}");
    assert_eq!(stack["cookies_sent"], 0, "{stack}");
    assert_eq!(stack["cookies_invalid"], 0, "{stack}");
    assert_eq!(stack["syns"], 0, "no SYN reached the stack: {stack}");
    assert_eq!(report["workers"][0]["echo"]["bytes"], 100 * 2000);
}

#[test]
fn the_hosts_own_ipv6_address_is_refused() {
    let Some(_bed) = Bed::up(1) else { return };
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
        .args(["--iface", "dut0", "--addr", "198.18.0.10/24"])
        .args(["--addr", "2001:2::2/64", "--service", "echo:7"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "c10m: 2001:2::2 is already an address of this host (dut0): the dataplane needs an \
         address of its own — pick another in 2001:2::/64, or remove it with \
         'ip addr del 2001:2::2/64 dev dut0'"
    );
}
