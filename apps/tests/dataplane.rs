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

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const SERVICE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const PORT: u16 = 7000;
const GEN_NS: &str = "c10m-gen";
const DUT_NS: &str = "c10m-dut";
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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `target/<profile>/examples/kv`: this test runs from `target/<profile>/deps/`.
fn example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples/kv");
    path.is_file().then_some(path)
}

fn testbed(args: &[&str]) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed");
    let out = Command::new(script)
        .args(args)
        .output()
        .map_err(|e| format!("scripts/testbed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/testbed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The test bed with one queue, up (and the lock held) while this lives.
struct Bed {
    _lock: File,
}

impl Bed {
    fn up() -> Bed {
        let lock = File::create("/tmp/c10m-testbed.lock").expect("creating the lock file");
        // SAFETY: flock on a descriptor we own, which stays open as long as the guard.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "locking the test bed");
        let bed = Bed { _lock: lock };
        // Down first: a bed left by someone else may have another queue count.
        let _ = testbed(&["down"]);
        testbed(&["up", "--queues", "1"]).unwrap();
        bed
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Err(e) = testbed(&["down"]) {
            eprintln!("{e}");
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns` (sockets it opens live there).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("netns file");
            // SAFETY: setns with a valid namespace descriptor; it changes only the calling
            // thread's network namespace, which is this scoped thread's alone.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The example on the dataplane in c10m-dut; killed on drop.
struct Kv {
    child: Child,
    lines: Receiver<String>,
}

impl Kv {
    fn start(exe: &Path) -> Kv {
        let port = PORT.to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", DUT_NS])
            .arg(exe)
            .args([&port, "--dataplane", "dut0", "--addr", "198.18.0.10/24"])
            .args(["--mgmt", SOCK])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the kv example");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let kv = Kv { child, lines };
        let first = kv.lines.recv_timeout(Duration::from_secs(15));
        let want = format!("kv on {SERVICE}:{PORT} (AF_XDP, dut0)");
        assert_eq!(
            first.as_deref(),
            Ok(want.as_str()),
            "the example's first line"
        );
        kv
    }

    /// SIGTERM, wait for exit 0, and return the final report.
    fn stop(mut self) -> serde_json::Value {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            assert!(Instant::now() < deadline, "kv did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "kv exit: {status:?}");
        let report = self
            .lines
            .recv_timeout(TIMEOUT)
            .expect("a JSON report on stdout");
        serde_json::from_str(&report).expect("the report is JSON")
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    if !is_root() {
        return cannot_run("needs root");
    }
    let Some(exe) = example() else {
        return cannot_run(
            "no examples/kv next to this test: run it through `cargo test`, which builds \
             the examples",
        );
    };
    let _bed = Bed::up();
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
