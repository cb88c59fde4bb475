//! Operator mistakes and what the daemon does about them, on the veth test bed: the
//! host's own address or an address without prefix refused at start-up, the interface
//! deleted or set down while running (exit 3 within 2 s), and VLAN traffic left to the
//! kernel. Privileged: see `common`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bed, DUT_NS, Daemon, GEN_NS, in_netns, lines_of, ns_run, wait_timeout};

const TIMEOUT: Duration = Duration::from_secs(10);

/// `c10m run` in c10m-dut with `args`: it must fail; returns its exit code and its
/// stderr, which must be one line.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!out.status.success(), "started with {args:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn the_hosts_own_address_and_a_bare_address_are_refused() {
    let Some(_bed) = Bed::up(1) else { return };
    let run = |addr| ["--iface", "dut0", "--addr", addr, "--service", "echo:7"];

    // 198.18.0.2/24 is dut0's own address in c10m-dut.
    let (code, e) = refused(&run("198.18.0.2/24"));
    assert_eq!(code, 1);
    assert_eq!(
        e,
        "c10m: 198.18.0.2 is already an address of this host (dut0): the dataplane needs an \
         address of its own — pick another in 198.18.0.0/24, or remove it with \
         'ip addr del 198.18.0.2/24 dev dut0'"
    );
    // Anywhere in the namespace, not only on the interface.
    let (_, e) = refused(&run("127.0.0.1/8"));
    assert!(
        e.contains("127.0.0.1 is already an address of this host (lo)"),
        "{e}"
    );
    // The host's networking was left alone: the kernel still answers on 198.18.0.2.
    let (ok, out) = ns_run(GEN_NS, &["ping", "-c", "1", "-W", "2", "198.18.0.2"]);
    assert!(ok, "{out}");

    let (code, e) = refused(&run("198.18.0.10"));
    assert_eq!(code, 2, "a bad command line");
    assert!(
        e.contains(
            "198.18.0.10 has no prefix length: write it as ADDR/PREFIX, e.g. 198.18.0.10/24"
        ),
        "{e}"
    );
    let (_, e) = refused(&run("198.18.0.10/32"));
    assert!(
        e.contains("198.18.0.10/32") && e.contains("198.18.0.10/24"),
        "{e}"
    );

    // The configuration file says the same, naming its key.
    let path = std::env::temp_dir().join(format!("c10m-operator-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "iface = \"dut0\"\naddr = \"198.18.0.10\"\nservices = [\"echo:7\"]\n",
    )
    .unwrap();
    let (code, e) = refused(&["--config", path.to_str().unwrap()]);
    std::fs::write(
        &path,
        "iface = \"dut0\"\naddr = \"198.18.0.2/24\"\nservices = [\"echo:7\"]\n",
    )
    .unwrap();
    let (code2, e2) = refused(&["--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 1);
    assert!(
        e.contains("`addr`") && e.contains("198.18.0.10 has no prefix length"),
        "{e}"
    );
    assert_eq!(code2, 1);
    assert!(
        e2.contains("198.18.0.2 is already an address of this host (dut0)"),
        "{e2}"
    );
}

/// Starts the daemon, runs `break_it` in c10m-dut once it is ready, and checks that it
/// exits with status 3 within 2 s, its message as the one line on stderr and its
/// report on stdout.
fn exits_when(break_it: &[&str]) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
        .args(["--iface", "dut0", "--addr", "198.18.0.10/24"])
        .args(["--service", "echo:7", "--max-conns", "1024", "--mgmt", ""])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let ready = lines.recv_timeout(Duration::from_secs(15));
    assert_eq!(ready.as_deref(), Ok("ready"));
    // An open connection must not hold the exit back for the grace period.
    let conn = in_netns(GEN_NS, || {
        TcpStream::connect_timeout(&(common::SERVICE, 7).into(), TIMEOUT).unwrap()
    });

    let (ok, out) = ns_run(DUT_NS, break_it);
    assert!(ok, "{break_it:?}: {out}");
    let started = Instant::now();
    let status = wait_timeout(&mut child, Duration::from_secs(5));
    let took = started.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    drop(conn);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running 5 s after {break_it:?}; stderr: {err}");
    };
    eprintln!("{break_it:?}: exit {status} after {took:?}");
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        err.trim(),
        "c10m: interface dut0 went away (deleted or down): exiting; restart when it is back"
    );
    let report: Vec<String> = lines.try_iter().filter(|l| l.starts_with('{')).collect();
    assert_eq!(report.len(), 1, "the report on stdout: {report:?}");
    let report: serde_json::Value = serde_json::from_str(&report[0]).unwrap();
    assert_eq!(report["totals"]["accepted"], 1, "{report}");
}

#[test]
fn the_interface_deleted_while_running_ends_the_daemon() {
    let Some(_bed) = Bed::up(1) else { return };
    exits_when(&["ip", "link", "del", "dut0"]);
}

#[test]
fn the_interface_set_down_while_running_ends_the_daemon() {
    let Some(_bed) = Bed::up(1) else { return };
    exits_when(&["ip", "link", "set", "dut0", "down"]);
}

/// A VLAN (id 100) over the veth pair: gen0.100 198.18.1.1/24, dut0.100 198.18.1.2/24.
fn vlan_up() {
    for (ns, dev, link, addr) in [
        (GEN_NS, "gen0.100", "gen0", "198.18.1.1/24"),
        (DUT_NS, "dut0.100", "dut0", "198.18.1.2/24"),
    ] {
        for cmd in [
            &[
                "ip", "link", "add", "link", link, "name", dev, "type", "vlan", "id", "100",
            ][..],
            &["ip", "addr", "add", addr, "dev", dev],
            &["ip", "link", "set", dev, "up"],
        ] {
            let (ok, out) = ns_run(ns, cmd);
            assert!(ok, "{cmd:?} in {ns}: {out}");
        }
    }
}

#[test]
fn vlan_traffic_stays_with_the_kernel() {
    let Some(_bed) = Bed::up(1) else { return };
    vlan_up();
    let daemon = Daemon::start(&[]);

    // The host's VLAN interface works while the dataplane runs: ping and TCP.
    let (ok, out) = ns_run(
        GEN_NS,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.1.2"],
    );
    assert!(ok, "ping over the VLAN: {out}");
    let listener = in_netns(DUT_NS, || TcpListener::bind(("198.18.1.2", 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 11];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&buf).unwrap();
    });
    in_netns(GEN_NS, || {
        let to = ([198, 18, 1, 2], port).into();
        let mut c = TcpStream::connect_timeout(&to, TIMEOUT).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"tagged, ok?").unwrap();
        let mut buf = [0u8; 11];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"tagged, ok?");
    });
    server.join().unwrap();

    // Tagged frames for the service address go to the kernel (which has no such
    // address, so nobody answers), not to the stack.
    for cmd in [
        &["ip", "route", "add", "198.18.0.10/32", "dev", "gen0.100"][..],
        &[
            "ip",
            "neigh",
            "replace",
            "198.18.0.10",
            "lladdr",
            "02:00:c6:12:00:02",
            "dev",
            "gen0.100",
        ],
    ] {
        let (ok, out) = ns_run(GEN_NS, cmd);
        assert!(ok, "{cmd:?}: {out}");
    }
    let (ok, _) = ns_run(
        GEN_NS,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.18.0.10"],
    );
    assert!(!ok, "a tagged ping to the service address got an answer");

    let report = daemon.stop();
    common::assert_clean(&report);
    let xdp = &report["xdp"];
    // ARP, 3 pings, the TCP exchange, 3 pings to the service address: all tagged.
    assert!(xdp["vlan"].as_u64().unwrap() >= 10, "{xdp}");
    let stack = &report["workers"][0]["stack"];
    assert_eq!(
        stack["drops"]["ethertype"], 0,
        "the stack saw tagged frames: {stack}"
    );
}
