//! The kv example (`examples/kv.rs`), a service of the user's, on the AF_XDP dataplane in
//! the test bed: the example binary runs in c10m-dut with `--dataplane dut0`, and kernel
//! TCP clients in c10m-gen get byte-exact answers — one connection after another, lines
//! pipelined and split across segments, a line that is too long reset — while the
//! management socket counts the connections and the final report shows every UMEM frame
//! back.
//!
//! Privileged: needs root, the veth test bed (`scripts/testbed`) and the example binary,
//! which `cargo test` builds next to this test (`target/<profile>/examples/kv`). It
//! skips with a message when one is missing, and fails instead under `CI=true`. Like the
//! dataplane crate's privileged tests, it holds an exclusive `flock` on
//! `/tmp/c10m-testbed.lock` for as long as it uses the bed.

#[path = "../../dataplane/tests/common/harness.rs"]
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
const TIMEOUT: Duration = Duration::from_secs(10);

/// Skips (or, under `CI=true`, fails) with `why`.
fn cannot_run(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run under CI: {why}"
    );
    eprintln!("skipped: {why}");
}

/// `target/<profile>/examples/kv`: this test runs from `target/<profile>/deps/`.
fn example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples/kv");
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
    let mut s = UnixStream::connect(SOCK).expect("the management socket");
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
    let Some(exe) = example() else {
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
