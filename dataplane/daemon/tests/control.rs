//! The control path on the veth test bed: `c10m ctl`, a /metrics scrape whose counters
//! move with traffic, 100 management clients (one of them slow) while the dataplane
//! serves, drain, a SIGHUP reload of the log level, and the SIGTERM lifecycle with 1,000
//! open connections. Privileged: see `common`.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Bed, DUT_NS, Daemon, GEN_NS, SERVICE, assert_clean, in_netns, ns_run};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
const SOCK: &str = "/tmp/c10m-test-ctl/c10m.sock";

fn ctl(args: &[&str]) -> (bool, String) {
    common::ctl(SOCK, args)
}

fn ask(req: &str) -> Value {
    let mut s = UnixStream::connect(SOCK).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// `n` echo round trips of `len` bytes, connections opened and closed one after another.
fn echo_round_trips(n: usize, len: usize) {
    in_netns(GEN_NS, || {
        for i in 0..n {
            let mut c = TcpStream::connect_timeout(&(SERVICE, 7).into(), TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            let data = vec![i as u8; len];
            c.write_all(&data).unwrap();
            let mut got = vec![0; len];
            c.read_exact(&mut got).unwrap();
            assert_eq!(got, data);
        }
    });
}

fn scrape(path: &str) -> String {
    in_netns(DUT_NS, || {
        let mut s = TcpStream::connect("127.0.0.1:9464").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.split_once("\r\n\r\n").unwrap().1.to_owned()
    })
}

/// The value of a sample in Prometheus text: `name{…labels…} value`.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| series.split('{').next() == Some(name) && series.contains(labels))
        .map(|(_, v)| v.parse().expect("a number"))
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{text}"))
}

#[test]
fn metrics_move_with_traffic_and_ctl_answers() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--mgmt", SOCK, "--metrics", "127.0.0.1:9464"]);
    let before = scrape("/metrics");
    // Every line parses as Prometheus text.
    for l in before
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, v) = l.rsplit_once(' ').unwrap();
        v.parse::<f64>().unwrap_or_else(|_| panic!("{l}"));
        assert!(l.starts_with("c10m_"), "{l}");
    }
    echo_round_trips(50, 200);
    std::thread::sleep(Duration::from_millis(200));
    let after = scrape("/metrics");
    let w0 = "worker=\"0\"";
    for name in [
        "c10m_accepted_total",
        "c10m_rx_frames_total",
        "c10m_echo_bytes_total",
    ] {
        let (a, b) = (sample(&before, name, w0), sample(&after, name, w0));
        assert!(b > a, "{name} did not move: {a} → {b}");
    }
    assert!(sample(&after, "c10m_accepted_total", w0) >= 50.0);
    let stats: Value = serde_json::from_str(&scrape("/stats")).unwrap();
    assert!(
        stats["totals"]["accepted"].as_u64().unwrap() >= 50,
        "{stats}"
    );

    // The client: tables by default, JSON with --json, errors that name the commands.
    let (ok, out) = ctl(&["stats"]);
    assert!(
        ok && out.contains("WORKER") && out.contains("total"),
        "{out}"
    );
    let (ok, out) = ctl(&["stats", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(ok && v["stats"]["totals"]["accepted"].as_u64().unwrap() >= 50);
    let (ok, out) = ctl(&["services"]);
    assert!(
        ok && out.contains("echo") && out.contains("198.18.0.10"),
        "{out}"
    );
    let (ok, out) = ctl(&["bogus"]);
    assert!(!ok && out.contains("valid commands are stats"), "{out}");

    // A connection held open shows in the sample.
    in_netns(GEN_NS, || {
        let mut c = TcpStream::connect_timeout(&(SERVICE, 7).into(), TIMEOUT).unwrap();
        c.write_all(b"x").unwrap();
        c.read_exact(&mut [0u8; 1]).unwrap();
        let local = c.local_addr().unwrap().to_string();
        let (ok, out) = ctl(&["connections", "--json"]);
        assert!(ok, "{out}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let sample = v["connections"]["sample"].as_array().unwrap();
        assert!(sample.iter().any(|s| s["remote"] == local.as_str()), "{v}");
        assert!(
            v["connections"]["by_state"]["established"]
                .as_u64()
                .unwrap()
                >= 1
        );
    });
    assert_clean(&daemon.stop());
}

#[test]
fn a_hundred_management_clients_do_not_stall_the_dataplane() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--mgmt", SOCK]);
    // The slow one: a byte a second.
    let slow = std::thread::spawn(|| {
        let mut s = UnixStream::connect(SOCK).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        for b in b"{\"cmd\":\"stats\"}\n".iter().take(5) {
            s.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..100 {
            s.spawn(|| {
                for _ in 0..20 {
                    assert_eq!(ask(r#"{"cmd":"stats"}"#)["ok"], true);
                }
            });
        }
        s.spawn(|| echo_round_trips(300, 500));
    });
    let took = started.elapsed();
    eprintln!("100 clients x 20 stats + 300 echo round trips: {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}: stalled by the slow client?"
    );
    assert!(!slow.is_finished());
    slow.join().unwrap();
    assert_clean(&daemon.stop());
}

#[test]
fn drain_stops_accepting_and_keeps_serving() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--mgmt", SOCK]);
    in_netns(GEN_NS, || {
        let addr = SocketAddr::from((SERVICE, 7));
        let mut held = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        held.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (ok, out) = ctl(&["drain"]);
        assert!(ok, "{out}");
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(3));
        assert!(
            refused.is_err(),
            "a new connection was accepted after drain"
        );
        held.write_all(b"still here").unwrap();
        let mut got = [0u8; 10];
        held.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here");
    });
    assert_clean(&daemon.stop());
}

#[test]
fn sighup_applies_the_files_new_log_level() {
    let Some(_bed) = Bed::up(1) else { return };
    let path = std::env::temp_dir().join(format!("c10m-hup-{}.toml", std::process::id()));
    std::fs::write(&path, "log_level = \"warn\"\n").unwrap();
    let daemon = Daemon::start(&["--mgmt", SOCK, "--config", path.to_str().unwrap()]);
    assert_eq!(ask(r#"{"cmd":"log-level"}"#)["log-level"], "warn");
    std::fs::write(&path, "log_level = \"error\"\n").unwrap();
    // SAFETY: kill(2) on the daemon's pid, a child the harness has not reaped.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    // The main thread looks for the signal every 20 ms.
    let deadline = Instant::now() + TIMEOUT;
    let mut level = Value::Null;
    while Instant::now() < deadline {
        level = ask(r#"{"cmd":"log-level"}"#)["log-level"].clone();
        if level == "error" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(level, "error", "the reload did not reach the log filter");
    assert_clean(&daemon.stop());
}

/// `n` echo connections to the service (from c10m-gen), each answered once.
fn echoed(n: usize) -> Vec<TcpStream> {
    let addr = SocketAddr::from((SERVICE, 7));
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    for c in &mut conns {
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"ping").unwrap();
        c.read_exact(&mut [0u8; 4]).unwrap();
    }
    conns
}

#[test]
fn sigterm_with_no_grace_resets_at_once() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--mgmt", SOCK, "--grace", "0"]);
    let pid = daemon.pid();
    let stopped = in_netns(GEN_NS, || {
        let conns = echoed(200);
        let stopped = Instant::now();
        // SAFETY: kill(2) on the daemon's pid, a child the harness has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for (i, mut c) in conns.into_iter().enumerate() {
            match c.read(&mut [0u8; 8]) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Ok(0) => panic!("connection {i} got a FIN: --grace 0 resets without one"),
                other => panic!("connection {i}: {other:?}"),
            }
        }
        stopped
    });
    let report = daemon.stop_within(Duration::from_secs(2));
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        stopped.elapsed()
    );
    assert_clean(&report);
}

#[test]
fn sigterm_with_1000_open_connections_closes_them_in_order() {
    let Some(_bed) = Bed::up(1) else { return };
    let daemon = Daemon::start(&["--mgmt", SOCK, "--grace", "5"]);
    let pid = daemon.pid();
    in_netns(GEN_NS, || {
        let conns = echoed(1000);
        // SAFETY: kill(2) on the daemon's pid, a child the harness has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for (i, mut c) in conns.into_iter().enumerate() {
            let mut buf = [0u8; 8];
            match c.read(&mut buf) {
                Ok(0) => {} // FIN: orderly
                Ok(n) => panic!("connection {i}: {n} unexpected bytes"),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    panic!("connection {i} was reset, not closed")
                }
                Err(e) => panic!("connection {i}: {e}"),
            }
            // Dropping `c` sends our FIN, which lets the daemon finish.
        }
    });
    let report = daemon.stop(); // exit 0 (asserted in `stop`)
    assert_clean(&report);
    let show = ns_run(DUT_NS, &["ip", "-d", "link", "show", "dev", "dut0"]).1;
    assert!(!show.contains("prog/xdp"), "program left behind: {show}");
    assert!(!std::path::Path::new(SOCK).exists(), "socket removed");
}
