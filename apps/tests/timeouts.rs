//! Slow and silent peers against the built-in services' default timeouts, on simulated
//! time: half-sent request heads, trickled heads, idle keep-alive and echo connections.
//! A timed-out connection must be closed by the service and its slot must come back.

mod common;

use std::time::Duration;

use c10m_apps::services::{Builtin, Echo, Http, Kind, Settings, echo, http};
use c10m_apps::sim::Simulation;
use c10m_stack::{ListenOptions, SocketOptions};
use common::{Clients, run};

fn listen_opts() -> ListenOptions {
    ListenOptions {
        socket: SocketOptions {
            rx_buf: 1024,
            tx_buf: 1024,
            ..SocketOptions::default()
        },
        backlog: 100_000,
        ..ListenOptions::default()
    }
}

const HALF_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";

#[test]
fn a_thousand_half_heads_are_closed_by_the_header_timeout_and_free_their_slots() {
    const N: usize = 1000;
    let mut sim = Simulation::new(Http::new(http::Config::default()), N + 64);
    sim.listen(80, listen_opts()).unwrap();
    let mut cl = Clients::default();
    let conns: Vec<_> = (0..N).map(|_| cl.open(&mut sim, 80, 1024)).collect();
    for &c in &conns {
        cl.queue(c, HALF_HEAD);
    }
    // Just before the 30 s limit: every connection still stands.
    run(&mut sim, &mut cl, 29_000, |_| false);
    assert_eq!(sim.server().connections(), N);
    assert!(cl.all(|p| p.connected && !p.eof && p.sent == HALF_HEAD.len()));
    assert_eq!(sim.runtime().service().stats.header_timeouts, 0);
    // Past it: each gets a FIN (the client closes back) and its slot is released.
    let done = run(&mut sim, &mut cl, 10_000, |c| c.all(|p| p.eof));
    assert!(done, "not every half head was closed");
    // The server closed first, so its side waits out TIME-WAIT (smoltcp: 10 s) before the
    // slot is free.
    run(&mut sim, &mut cl, 12_000, |_| false);
    assert_eq!(sim.runtime().service().stats.header_timeouts, N as u64);
    assert_eq!(sim.runtime().service().stats.requests, 0);
    assert_eq!(sim.runtime().stats().closed, N as u64);
    assert_eq!(sim.runtime().connections().count(), 0);
    assert_eq!(sim.server().connections(), 0, "slots back in the pool");
}

#[test]
fn a_trickled_head_is_closed_although_bytes_keep_arriving() {
    let mut sim = Simulation::new(Http::new(http::Config::default()), 64);
    sim.listen(80, listen_opts()).unwrap();
    let mut cl = Clients::default();
    let slow = cl.open(&mut sim, 80, 1024);
    let ok = cl.open(&mut sim, 80, 1024);
    // One byte every 5 s never finishes a head (slowloris); the idle timeout alone would
    // never fire. The other client completes a request at 20 s and stays.
    for (i, &b) in HALF_HEAD.iter().enumerate().take(8) {
        cl.queue(slow, &[b]);
        if i == 4 {
            cl.queue(ok, b"GET / HTTP/1.1\r\n\r\n");
        }
        run(&mut sim, &mut cl, 5_000, |_| false);
    }
    assert!(cl.peer(slow).eof, "the trickling client was not closed");
    assert!(
        !cl.peer(ok).eof,
        "a complete request must not be cut by the header timeout"
    );
    assert!(String::from_utf8_lossy(&cl.peer(ok).rx).starts_with("HTTP/1.1 200 OK"));
    assert_eq!(sim.runtime().service().stats.header_timeouts, 1);
}

#[test]
fn keep_alive_connections_close_after_the_idle_timeout_and_not_before() {
    let cfg = http::Config {
        header_timeout: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(75)),
        ..http::Config::default()
    };
    let mut sim = Simulation::new(Http::new(cfg), 64);
    sim.listen(80, listen_opts()).unwrap();
    let mut cl = Clients::default();
    let c = cl.open(&mut sim, 80, 1024);
    cl.queue(c, b"GET / HTTP/1.1\r\n\r\n");
    // 70 s after the request: the header timeout (30 s) does not apply between requests.
    run(&mut sim, &mut cl, 70_000, |_| false);
    assert!(!cl.peer(c).eof, "closed while keep-alive idle < 75 s");
    let done = run(&mut sim, &mut cl, 10_000, |cl| cl.peer(c).eof);
    assert!(done, "not closed after 75 s idle");
    assert_eq!(sim.runtime().stats().idle_closed, 1);
    assert_eq!(sim.runtime().service().stats.header_timeouts, 0);
}

#[test]
fn echo_closes_silent_connections_after_its_idle_timeout() {
    let cfg = echo::Config {
        idle_timeout: Some(Duration::from_secs(300)),
    };
    let mut sim = Simulation::new(Echo::new(cfg), 64);
    sim.listen(7, listen_opts()).unwrap();
    let mut cl = Clients::default();
    let silent = cl.open(&mut sim, 7, 1024);
    let talker = cl.open(&mut sim, 7, 1024);
    for _ in 0..7 {
        cl.queue(talker, b"hi");
        run(&mut sim, &mut cl, 50_000, |_| false);
    }
    assert!(
        cl.peer(silent).eof,
        "silent echo connection kept past 300 s"
    );
    assert!(!cl.peer(talker).eof);
    assert_eq!(cl.peer(talker).rx, b"hi".repeat(7));
    assert_eq!(sim.server().connections(), 1);
}

#[test]
fn builtin_applies_each_services_timeouts() {
    let mut settings = Settings::default();
    settings.echo.idle_timeout = Some(Duration::from_secs(10));
    settings.http.header_timeout = Some(Duration::from_secs(3));
    settings.http.idle_timeout = None;
    let svc = Builtin::new(vec![(7, Kind::Echo), (80, Kind::Http)], &settings);
    let mut sim = Simulation::new(svc, 64);
    sim.listen(7, listen_opts()).unwrap();
    sim.listen(80, listen_opts()).unwrap();
    let mut cl = Clients::default();
    let e = cl.open(&mut sim, 7, 1024);
    let h = cl.open(&mut sim, 80, 1024);
    let idle_http = cl.open(&mut sim, 80, 1024);
    cl.queue(h, HALF_HEAD);
    cl.queue(idle_http, b"GET / HTTP/1.1\r\n\r\n");
    run(&mut sim, &mut cl, 5_000, |_| false);
    assert!(cl.peer(h).eof, "http header timeout (3 s) through Builtin");
    assert!(!cl.peer(e).eof, "echo's 10 s not reached yet");
    run(&mut sim, &mut cl, 8_000, |_| false);
    assert!(cl.peer(e).eof, "echo idle timeout (10 s) through Builtin");
    assert!(!cl.peer(idle_http).eof, "http idle timeout is off");
}
