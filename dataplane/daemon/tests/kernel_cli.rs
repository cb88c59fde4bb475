//! `c10m kernel`: the built-in services on Linux sockets over loopback, bounded, with
//! curl, an echo client and a push heartbeat; SIGTERM stops it with a report; a second
//! server on a port in use is refused unless `--reuseport`; SIGHUP is ignored; `--mgmt`
//! counts connections and publishes. No privileges needed.

mod common;

use common::Process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    process: Process,
    addrs: Vec<(String, SocketAddr)>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_c10m"));
        cmd.arg("kernel").args(args);
        let process = Process::spawn(cmd, "c10m kernel");
        let lines = &process.lines;
        let mut addrs = Vec::new();
        loop {
            let line = lines
                .recv_timeout(TIMEOUT)
                .expect("c10m kernel did not become ready");
            if line == "ready" {
                break;
            }
            let mut w = line.split_whitespace();
            if w.next() == Some("listening") {
                let name = w.next().unwrap().to_string();
                addrs.push((name, w.next().unwrap().parse().unwrap()));
            }
        }
        Server { process, addrs }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.addrs.iter().find(|a| a.0 == name).unwrap().1
    }

    /// Waits for exit 0 and returns the JSON line.
    fn wait(mut self, limit: Duration) -> serde_json::Value {
        self.process.report(limit)
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl (installed by scripts/bootstrap)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kernel_backend_serves_curl_echo_and_push_until_sigterm() {
    let server = Server::start(&[
        "--addr",
        "127.0.0.1",
        "--service",
        "http:0",
        "--service",
        "echo:0",
        "--service",
        "push:0",
        "--workers",
        "2",
        "--http-body",
        "100",
        "--duration",
        "60",
    ]);
    let url = format!("http://{}/", server.addr("http"));
    let out = curl(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}:%{size_download}:%{num_connects} ",
        &url,
        &url,
    ]);
    assert_eq!(
        out.trim(),
        "200:100:1 200:100:0",
        "status, body, keep-alive"
    );
    let head = curl(&["-I", &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut echo = TcpStream::connect_timeout(&server.addr("echo"), TIMEOUT).unwrap();
    echo.set_read_timeout(Some(TIMEOUT)).unwrap();
    echo.write_all(b"hello, kernel").unwrap();
    echo.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    echo.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello, kernel");

    let push = TcpStream::connect_timeout(&server.addr("push"), TIMEOUT).unwrap();
    push.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut push = BufReader::new(push);
    push.get_mut().write_all(b"SUB news\nPING\n").unwrap();
    let mut line = String::new();
    push.read_line(&mut line).unwrap();
    assert_eq!(line, "PONG\n");
    drop(push);

    // SIGHUP (a closed terminal) is ignored: nothing to reload, and the server serves on.
    // SAFETY: kill(2) with the pid of our own child and a valid signal number.
    assert_eq!(unsafe { libc::kill(server.process.pid(), libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    let mut echo = TcpStream::connect_timeout(&server.addr("echo"), TIMEOUT)
        .expect("c10m kernel still serving after SIGHUP");
    echo.set_read_timeout(Some(TIMEOUT)).unwrap();
    echo.write_all(b"after HUP").unwrap();
    echo.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    echo.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"after HUP");

    let report = server.process.stop();
    assert_eq!(
        report["accepted"], 5,
        "curl twice, echo twice, push: {report}"
    );
}

#[test]
fn kernel_backend_stops_after_its_duration_and_rejects_unknown_services() {
    let server = Server::start(&[
        "--addr",
        "127.0.0.1",
        "--service",
        "echo:0",
        "--duration",
        "0.3",
    ]);
    let report = server.wait(TIMEOUT);
    assert_eq!(report["accepted"], 0, "{report}");

    let out = Command::new(env!("CARGO_BIN_EXE_c10m"))
        .args(["kernel", "--addr", "127.0.0.1", "--service", "smtp:25"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("echo, http, push"), "{err}");
}

#[test]
fn a_port_in_use_is_refused_unless_shared_on_purpose() {
    let first = Server::start(&["--addr", "127.0.0.1", "--service", "echo:0"]);
    let addr = first.addr("echo");
    let service = format!("echo:{}", addr.port());
    let args = ["--addr", "127.0.0.1", "--service", &service];

    let out = Command::new(env!("CARGO_BIN_EXE_c10m"))
        .arg("kernel")
        .args(args)
        .args(["--duration", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("{addr} is already in use")) && err.contains("--reuseport"),
        "{err}"
    );
    // Any address on that port counts: 0.0.0.0 would take 127.0.0.1's clients too.
    let out = Command::new(env!("CARGO_BIN_EXE_c10m"))
        .args(["kernel", "--addr", "0.0.0.0", "--service", &service])
        .output()
        .unwrap();
    assert!(!out.status.success(), "0.0.0.0 on a port in use");

    // Shared on purpose: both serve, and the kernel spreads the clients over them.
    let mut args = args.to_vec();
    args.push("--reuseport");
    let second = Server::start(&args);
    assert_eq!(second.addr("echo"), addr);
    for _ in 0..16 {
        let mut c = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
    }
    let (a, b) = (first.process.stop(), second.process.stop());
    let (a, b) = (
        a["accepted"].as_u64().unwrap(),
        b["accepted"].as_u64().unwrap(),
    );
    assert_eq!(a + b, 16, "every client served once: {a} + {b}");
    assert!(a > 0 && b > 0, "SO_REUSEPORT spread them: {a} + {b}");
}

/// `--mgmt`: the socket counts the connections held and publishes to the push service's
/// subscribers (what `c10m-bench compare --scenarios push` drives the kernel with).
#[test]
fn the_management_socket_counts_connections_and_publishes() {
    use std::os::unix::net::UnixStream;
    let sock = std::env::temp_dir().join(format!("c10m-kernel-mgmt-{}.sock", std::process::id()));
    let sock_arg = sock.display().to_string();
    let server = Server::start(&[
        "--addr",
        "127.0.0.1",
        "--service",
        "push:0",
        "--mgmt",
        &sock_arg,
    ]);
    let ask = |req: &str| -> serde_json::Value {
        let mut s = UnixStream::connect(&sock).expect("the management socket");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        writeln!(s, "{req}").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).expect("one JSON line")
    };
    let mut subs: Vec<BufReader<TcpStream>> = (0..3)
        .map(|_| {
            let mut c = TcpStream::connect(server.addr("push")).unwrap();
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            c.write_all(b"SUB news\nPING\n").unwrap();
            BufReader::new(c)
        })
        .collect();
    for s in &mut subs {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        assert_eq!(line, "PONG\n", "subscribed first");
    }
    let v = ask(r#"{"cmd":"stats"}"#);
    assert_eq!(v["stats"]["totals"]["connections"]["established"], 3, "{v}");
    let v = ask(r#"{"cmd":"publish","topic":"news","message":"hello"}"#);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["publish"]["workers_reached"], 1, "{v}");
    for s in &mut subs {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        assert_eq!(line, "MSG news hello\n");
    }
    let v = ask(r#"{"cmd":"publish","topic":"two words","message":"x"}"#);
    assert_eq!(v["ok"], false, "{v}");
    drop(subs);
    let report = server.process.stop();
    assert_eq!(report["accepted"], 3, "{report}");
    assert!(!sock.exists(), "the socket is removed at the end");
}
