//! The examples' services on the AF_XDP dataplane in the test bed: the example binary runs
//! in c10m-dut with `--dataplane dut0`, and kernel TCP clients in c10m-gen talk to it.
//!
//! - kv (`examples/kv.rs`): byte-exact answers — one connection after another, lines
//!   pipelined and split across segments, a line that is too long reset — while the
//!   management socket counts the connections and the final report shows every UMEM
//!   frame back.
//! - chat (`examples/chat.rs`), on two workers (two queues): members of a room on both
//!   workers (as the management socket's connection list shows) get every message byte
//!   for byte, non-members nothing, and a silent connection is closed when idle.
//!
//! Privileged: needs root, the veth test bed (`scripts/testbed`) and the example binaries,
//! which `cargo test` builds next to this test (`target/<profile>/examples/`). It
//! skips with a message when one is missing, and fails instead under `CI=true`. Like the
//! dataplane crate's privileged tests, it holds an exclusive `flock` on
//! `/tmp/c10m-testbed.lock` for as long as it uses the bed.

#[path = "../../dataplane/daemon/tests/common/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Bed, DUT_NS, GEN_NS, Process, SERVICE, in_netns, privileged};

const PORT: u16 = 7000;
const SOCK: &str = "/tmp/c10m-test-kv/kv.sock";
const CHAT_PORT: u16 = 7100;
const CHAT_SOCK: &str = "/tmp/c10m-test-chat/chat.sock";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Skips (or, under `CI=true`, fails) with `why`.
fn cannot_run(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run under CI: {why}"
    );
    eprintln!("skipped: {why}");
}

/// `target/<profile>/examples/NAME`: this test runs from `target/<profile>/deps/`.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// The example on the dataplane in c10m-dut; killed on drop.
struct Kv(Process);

impl Kv {
    fn start(exe: &Path) -> Kv {
        let port = PORT.to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", DUT_NS])
            .arg(exe)
            .args([&port, "--dataplane", "dut0", "--addr", "198.18.0.10/24"])
            .args(["--mgmt", SOCK]);
        let kv = Kv(Process::spawn(cmd, "the kv example"));
        let first = kv.0.lines.recv_timeout(Duration::from_secs(15));
        let want = format!("kv on {SERVICE}:{PORT} (AF_XDP, dut0)");
        assert_eq!(
            first.as_deref(),
            Ok(want.as_str()),
            "the example's first line"
        );
        kv
    }

    /// SIGTERM, wait for exit 0, and return the final report.
    fn stop(self) -> serde_json::Value {
        self.0.stop()
    }
}

/// A kv client: a connection and a line reader over it.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect() -> Client {
        let addr = SocketAddr::from((SERVICE, PORT));
        let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting to kv");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(s),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("a line from kv");
        l
    }

    /// Sends `line` and returns the answer.
    fn ask(&mut self, line: &str) -> String {
        self.write(format!("{line}\n").as_bytes());
        self.line()
    }
}

/// One request on the management socket.
fn mgmt(request: &str) -> serde_json::Value {
    mgmt_at(SOCK, request)
}

/// One request on the management socket at `sock`.
fn mgmt_at(sock: &str, request: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).expect("the management socket");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("a JSON answer")
}

#[test]
fn the_kv_example_serves_kernel_clients_on_the_dataplane() {
    if !privileged() {
        return;
    }
    let Some(exe) = example("kv") else {
        return cannot_run(
            "no examples/kv next to this test: run it through `cargo test`, which builds \
             the examples",
        );
    };
    let Some(_bed) = Bed::up(1) else { return };
    let _ = std::fs::create_dir_all("/tmp/c10m-test-kv");
    let kv = Kv::start(&exe);

    in_netns(GEN_NS, || {
        let mut a = Client::connect();
        assert_eq!(a.ask("GET greeting"), "NOT FOUND\n");
        assert_eq!(a.ask("SET greeting hello, dataplane world"), "OK\n");
        assert_eq!(a.ask("GET greeting"), "hello, dataplane world\n");
        assert_eq!(a.ask("DEL greeting"), "ERR\n");
        assert_eq!(a.ask("GET"), "ERR\n");
        // Pipelined: three lines in one segment, three answers in order.
        a.write(b"SET n 1\nSET n 2\nGET n\n");
        assert_eq!([a.line(), a.line(), a.line()], ["OK\n", "OK\n", "2\n"]);
        // One line in three segments.
        for part in [&b"GE"[..], b"T gre", b"eting\n"] {
            a.write(part);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(a.line(), "hello, dataplane world\n");

        // A second connection sees the same map (one worker); the first one's close
        // is answered with a FIN.
        let mut b = Client::connect();
        assert_eq!(b.ask("GET n"), "2\n");
        a.reader
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(a.reader.read_to_end(&mut rest).unwrap(), 0, "EOF after FIN");

        // A line over 4096 bytes without a newline: the service resets the connection.
        b.write(&[b'x'; 6000]);
        let mut buf = [0u8; 64];
        let r = b.reader.get_mut().read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "a reset for an overlong line, got {r:?}"
        );
    });

    let services = mgmt(r#"{"cmd":"services"}"#);
    assert_eq!(services["services"][0]["name"], "kv", "{services}");
    assert_eq!(services["services"][0]["port"], PORT, "{services}");
    // Workers publish their counters about once a millisecond while they loop, and
    // after a sleep of up to 10 ms when idle: wait for the last close to show.
    let deadline = Instant::now() + TIMEOUT;
    let stats = loop {
        let stats = mgmt(r#"{"cmd":"stats"}"#);
        if stats["stats"]["totals"]["echo_closed"] == 2 || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let totals = &stats["stats"]["totals"];
    assert_eq!(
        totals["echo_accepted"], 2,
        "the runtime's counters: {stats}"
    );
    assert_eq!(totals["echo_closed"], 2, "the runtime's counters: {stats}");
    assert_eq!(totals["accepted"], 2, "the stack's counters: {stats}");

    let report = kv.stop();
    let t = &report["totals"];
    assert_eq!(t["accepted"], 2, "{report}");
    assert_eq!(t["bad_checksums"], 0, "{t}");
    assert!(t["frames_total"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(
        t["frames_free"], t["frames_total"],
        "UMEM frames leaked: {t}"
    );
    let w = &report["workers"][0];
    assert_eq!(w["echo"]["accepted"], 2, "{w}");
    assert_eq!(w["echo"]["closed"], 2, "{w}");
    assert_eq!(
        w["echo"]["bytes"], 0,
        "no built-in counters for a custom service"
    );
}

/// A chat client: a connection in c10m-gen.
struct Chat(TcpStream);

impl Chat {
    fn connect() -> Chat {
        let addr = SocketAddr::from((SERVICE, CHAT_PORT));
        let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting to chat");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Chat(s)
    }

    fn send(&mut self, line: &str) {
        self.0.write_all(line.as_bytes()).unwrap();
    }

    /// Reads exactly `want`'s length and compares.
    fn expect(&mut self, want: &str) {
        let mut got = vec![0; want.len()];
        self.0.read_exact(&mut got).expect(want);
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
}

/// Which worker holds each connection to the chat: client address → worker.
fn chat_workers() -> std::collections::BTreeMap<String, u64> {
    let v = mgmt_at(CHAT_SOCK, r#"{"cmd":"connections","limit":1000}"#);
    let sample = v["connections"]["sample"]
        .as_array()
        .expect("a sample")
        .clone();
    sample
        .iter()
        .map(|e| {
            (
                e["remote"].as_str().unwrap().to_owned(),
                e["worker"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_chat_example_broadcasts_across_dataplane_workers() {
    if !privileged() {
        return;
    }
    let Some(exe) = example("chat") else {
        return cannot_run(
            "no examples/chat next to this test: run it through `cargo test`, which builds \
             the examples",
        );
    };
    let Some(_bed) = Bed::up(2) else { return };
    let _ = std::fs::create_dir_all("/tmp/c10m-test-chat");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", DUT_NS])
        .arg(exe)
        .arg(CHAT_PORT.to_string())
        .args([
            "--dataplane",
            "dut0",
            "--addr",
            "198.18.0.10/24",
            "--workers",
            "2",
        ])
        .args(["--idle", "3", "--mgmt", CHAT_SOCK]);
    let chat = Process::spawn(cmd, "the chat example");
    let first = chat.lines.recv_timeout(Duration::from_secs(15));
    let want = format!("chat on {SERVICE}:{CHAT_PORT} (2 workers, AF_XDP, dut0)");
    assert_eq!(
        first.as_deref(),
        Ok(want.as_str()),
        "the example's first line"
    );

    in_netns(GEN_NS, || {
        // Sixteen members: the veth's per-flow queue choice puts them on both workers.
        let mut lobby: Vec<Chat> = (0..16).map(|_| Chat::connect()).collect();
        for m in &mut lobby {
            m.send("JOIN lobby\n");
            m.expect("OK\n");
        }
        let workers = chat_workers();
        let on: Vec<u64> = lobby
            .iter()
            .map(|m| workers[&m.0.local_addr().unwrap().to_string()])
            .collect();
        assert!(
            on.contains(&0) && on.contains(&1),
            "members on both workers: {on:?}"
        );

        let mut other = Chat::connect();
        other.send("JOIN other\n");
        other.expect("OK\n");
        other.send("SAY psst\n");
        other.expect("MSG other psst\n");
        // Each worker takes its commands in order: a member that gets the next message
        // would have had `psst` before it, had it been sent there.
        lobby[0].send("SAY hello from 0\n");
        for m in &mut lobby {
            m.expect("MSG lobby hello from 0\n");
        }
        lobby[15].send("SAY and from 15\n");
        for m in &mut lobby {
            m.expect("MSG lobby and from 15\n");
        }
        let mut lone = Chat::connect();
        lone.send("SAY anyone?\nNICK x\n");
        lone.expect("ERR not in a room\nERR unknown command\n");
        for m in &mut lobby {
            m.send("LEAVE\n");
            m.expect("OK\n"); // and nothing else came before it
        }

        // Idle: a connection that sends nothing is closed after 3 s, not before.
        let mut silent = Chat::connect();
        let start = Instant::now();
        let mut rest = Vec::new();
        assert_eq!(
            silent.0.read_to_end(&mut rest).unwrap(),
            0,
            "EOF: closed when idle"
        );
        let after = start.elapsed();
        assert!(
            after > Duration::from_millis(2500) && after < Duration::from_secs(6),
            "{after:?}"
        );
    });

    let report = chat.stop();
    let t = &report["totals"];
    assert_eq!(t["accepted"], 19, "{report}");
    assert_eq!(
        t["frames_free"], t["frames_total"],
        "UMEM frames leaked: {t}"
    );
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{report}");
}
