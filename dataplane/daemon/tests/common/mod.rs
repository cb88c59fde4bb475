//! The dataplane's privileged test harness: the shared part (`harness`: the test bed,
//! namespaces, child processes) plus the `c10m` daemon, `c10m ctl`, the report checks and
//! a push client.
#![allow(dead_code, unreachable_pub)]

pub mod capture;
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

pub use harness::*;

/// The daemon, started in c10m-dut; killed on drop.
pub struct Daemon(Process);

impl Daemon {
    /// Starts `c10m run` with the standard options plus `extra`, and waits for `ready`.
    pub fn start(extra: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(extra);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match d.0.lines.recv_timeout(left) {
                Ok(line) if line == "ready" => return d,
                Ok(_) => {}
                Err(_) => {
                    let status = d.0.try_wait();
                    panic!("the daemon did not become ready (status {status:?})");
                }
            }
        }
    }

    /// Starts `c10m run` without waiting.
    pub fn spawn(extra: &[&str]) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
            .args([
                "--iface",
                "dut0",
                "--addr",
                "198.18.0.10/24",
                "--service",
                "echo:7",
            ])
            .args(["--max-conns", "4096"])
            .args(extra)
            .env("RUST_LOG", "warn");
        Daemon(Process::spawn(cmd, "c10m"))
    }

    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    /// SIGTERM, wait for exit 0, and return the final report.
    pub fn stop(self) -> serde_json::Value {
        self.0.stop()
    }

    /// [`stop`](Self::stop), waiting at most `limit`.
    pub fn stop_within(self, limit: Duration) -> serde_json::Value {
        self.0.stop_within(limit)
    }

    /// SIGKILL and reap.
    pub fn kill9(self) {
        self.0.kill9();
    }
}

/// A push client: a connection to the push service (port 5222 of a service address)
/// and a line reader over it.
pub struct PushClient {
    reader: BufReader<TcpStream>,
}

impl PushClient {
    /// Connects to `service` from the calling thread's namespace; each gets its own
    /// ephemeral port.
    pub fn connect(service: IpAddr) -> PushClient {
        let timeout = Duration::from_secs(10);
        let addr = SocketAddr::new(service, 5222);
        let s = TcpStream::connect_timeout(&addr, timeout).expect("connecting to push");
        s.set_read_timeout(Some(timeout)).unwrap();
        PushClient {
            reader: BufReader::new(s),
        }
    }

    /// The connection itself (for reading to the end).
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    pub fn local(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().unwrap()
    }

    pub fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("a line from push");
        l
    }

    /// PING → PONG: also proves every earlier line was handled, and that nothing else
    /// arrived before the PONG.
    pub fn ping(&mut self) {
        self.send("PING");
        assert_eq!(self.line(), "PONG\n", "subscriber {}", self.local());
    }
}

/// Runs `c10m ctl --mgmt SOCK ARGS…`: whether it succeeded, and its stdout then stderr.
pub fn ctl(sock: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_c10m"))
        .args(["ctl", "--mgmt", sock])
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// One counter of every worker in a daemon's stop report, `group.name` (e.g. `stack`,
/// `accepted`), in worker order.
pub fn per_worker(report: &serde_json::Value, group: &str, name: &str) -> Vec<u64> {
    report["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[group][name].as_u64().unwrap())
        .collect()
}

pub fn assert_clean(report: &serde_json::Value) {
    let t = &report["totals"];
    assert_eq!(t["bad_checksums"], 0, "bad checksums: {t}");
    assert!(t["frames_total"].as_u64().unwrap() > 0);
    assert_eq!(
        t["frames_free"], t["frames_total"],
        "UMEM frames leaked: {t}"
    );
    for w in report["workers"].as_array().unwrap() {
        assert_eq!(w["frames"]["held_at_close"], 0, "frames held at close: {w}");
        assert_eq!(w["port"]["rx_bad_desc"], 0);
        assert_eq!(w["port"]["tx_bad_completion"], 0);
    }
}

/// A TCP exchange with the dut's kernel while the dataplane runs: a listener of its own
/// on `addr` (an address of c10m-dut's kernel) echoes `msg` to a client in c10m-gen.
pub fn kernel_echo(addr: IpAddr, msg: &[u8]) {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let listener = in_netns(DUT_NS, || TcpListener::bind((addr, 0)).unwrap());
    let to = listener.local_addr().unwrap();
    let len = msg.len();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; len];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&buf).unwrap();
    });
    in_netns(GEN_NS, || {
        let mut c = TcpStream::connect_timeout(&to, TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting to the kernel's {to}: {e}"));
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(msg).unwrap();
        let mut buf = vec![0u8; len];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg, "the kernel's echo on {to}");
    });
    server.join().unwrap();
}

/// A payload that differs per connection.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8)
        .collect()
}

/// From c10m-gen: opens `n` connections to the echo service at `to`, all open at once;
/// sends each its payload, checks the echo byte for byte, half-closes and expects EOF.
pub fn echo_clients(to: SocketAddr, n: usize, len: usize) {
    const TIMEOUT: Duration = Duration::from_secs(10);
    in_netns(GEN_NS, || {
        let mut conns: Vec<TcpStream> = (0..n)
            .map(|i| {
                TcpStream::connect_timeout(&to, TIMEOUT)
                    .unwrap_or_else(|e| panic!("connection {i} of {n} to {to}: {e}"))
            })
            .collect();
        for (i, c) in conns.iter_mut().enumerate() {
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            c.write_all(&payload(i, len)).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let mut got = vec![0; len];
            c.read_exact(&mut got)
                .unwrap_or_else(|e| panic!("echo on connection {i} to {to}: {e}"));
            assert!(
                got == payload(i, len),
                "connection {i} to {to}: echo differs"
            );
            c.shutdown(Shutdown::Write).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let mut rest = [0u8; 16];
            let n = c
                .read(&mut rest)
                .unwrap_or_else(|e| panic!("EOF on {i}: {e}"));
            assert_eq!(n, 0, "connection {i}: bytes after the echo");
        }
    });
}
