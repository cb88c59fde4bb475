//! A custom service in about 70 lines: a line-oriented key-value store (`SET k v`,
//! `GET k`). The one `Kv` runs unchanged on the kernel backend (the default; no
//! privileges) and on the AF_XDP dataplane (`--dataplane`; root), built by the same
//! factory [`make`]; the simulation backend takes it too (`c10m_apps::Runtime`).
//!
//! ```text
//! cargo run -p c10m-apps --example kv -- [PORT] [--secs N]
//!     nc 127.0.0.1 PORT
//! cargo build --release -p c10m-apps --example kv
//! sudo target/release/examples/kv [PORT] --dataplane IFACE --addr CIDR [--mgmt SOCK] [--secs N]
//!     e.g. in the test bed: ip netns exec c10m-dut target/release/examples/kv 7000 \
//!          --dataplane dut0 --addr 198.18.0.10/24, then from c10m-gen: nc 198.18.0.10 7000
//! ```
//!
//! PORT defaults to 7000. On the dataplane the service address (CIDR) is the
//! dataplane's own, not configured in the kernel; it runs one worker (queue 0), so every
//! connection sees the same map, until SIGINT/SIGTERM or `--secs`, then prints the
//! dataplane's JSON report. `--mgmt SOCK` opens the management socket for `c10m ctl
//! --mgmt SOCK stats`.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use c10m_apps::{Conn, Error, Fanout, Service, kernel};

#[derive(Default)]
struct Kv {
    map: HashMap<String, String>,
}

impl Kv {
    fn answer(&mut self, line: &str) -> String {
        let mut words = line.trim_end().splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                self.map.insert(k.into(), v.into());
                "OK\n".into()
            }
            (Some("GET"), Some(k), None) => match self.map.get(k) {
                Some(v) => format!("{v}\n"),
                None => "NOT FOUND\n".into(),
            },
            _ => "ERR\n".into(),
        }
    }
}

/// A connection's state: the bytes of a partial line, and answers waiting for room.
#[derive(Default)]
struct Lines {
    input: Vec<u8>,
    output: Vec<u8>,
    eof: bool,
}

impl Service for Kv {
    type State = Lines;
    type Command = ();

    fn on_accept(&mut self, _conn: &mut Conn<'_>) -> Lines {
        Lines::default()
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, s: &mut Lines) {
        // Read (until nothing is left: edge-triggered) only while no answer waits for
        // room; then the peer's window holds it back.
        while s.output.is_empty() && !s.eof {
            let got = conn.recv_with(|b| {
                s.input.extend_from_slice(b);
                (b.len(), b.len())
            });
            let got = match got {
                Ok(n) => n,
                Err(Error::Finished) => {
                    s.eof = true;
                    0
                }
                Err(_) => return,
            };
            while let Some(end) = s.input.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = s.input.drain(..=end).collect();
                let answer = self.answer(&String::from_utf8_lossy(&line));
                s.output.extend_from_slice(answer.as_bytes());
            }
            if s.input.len() > 4096 {
                return conn.abort(); // no line is that long
            }
            flush(conn, s);
            if got == 0 {
                return;
            }
        }
    }

    fn on_writable(&mut self, conn: &mut Conn<'_>, s: &mut Lines) {
        flush(conn, s);
        self.on_readable(conn, s);
    }
}

/// Sends what fits of the waiting answers; closes after the last once the peer is done.
fn flush(conn: &mut Conn<'_>, s: &mut Lines) {
    if let Ok(n) = conn.send(&s.output) {
        s.output.drain(..n);
    }
    if s.eof && s.output.is_empty() {
        conn.close();
    }
}

/// Each worker's service, on either backend: `(worker, addresses listened on, fanout)`.
fn make(_worker: usize, _addrs: &[SocketAddr], _fanout: &Fanout<()>) -> Kv {
    Kv::default()
}

const USAGE: &str = "\
usage: kv [PORT] [--secs N]                                    kernel backend, 127.0.0.1
       kv [PORT] --dataplane IFACE --addr CIDR [--mgmt SOCK] [--secs N]   AF_XDP (root)
PORT defaults to 7000; --secs N stops after N seconds.";

/// The command line.
#[derive(Default)]
struct Args {
    port: Option<u16>,
    secs: Option<u64>,
    dataplane: Option<String>,
    addr: Option<String>,
    mgmt: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => a.secs = Some(value()?.parse().map_err(|_| "--secs: seconds")?),
            "--dataplane" => a.dataplane = Some(value()?),
            "--addr" => a.addr = Some(value()?),
            "--mgmt" => a.mgmt = Some(value()?),
            p if a.port.is_none() && !p.starts_with('-') => {
                a.port = Some(p.parse().map_err(|_| format!("bad port {p:?}"))?);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if a.dataplane.is_some() != a.addr.is_some() {
        return Err("--dataplane IFACE and --addr CIDR go together".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = match parse(&args) {
        Ok(a) if a.dataplane.is_some() => on_dataplane(&a),
        Ok(a) => on_kernel(&a),
        Err(e) => {
            eprintln!("kv: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn on_kernel(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], a.port.unwrap_or(7000)));
    let server = kernel::Server::start(&kernel::Config::default(), &[addr], make)?;
    println!("kv on {}", server.local_addrs()[0]);
    std::thread::sleep(Duration::from_secs(a.secs.unwrap_or(u64::MAX / 4)));
    server.stop()?;
    Ok(())
}

fn on_dataplane(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    use c10m_dataplane::{Hooks, Management, Options, parse_cidr, run_service};
    let opts = Options {
        iface: a.dataplane.clone().unwrap_or_default(),
        addr: parse_cidr(a.addr.as_deref().unwrap_or_default())?,
        ports: vec![a.port.unwrap_or(7000)],
        management: Management {
            socket: a.mgmt.as_ref().map(Into::into),
            ..Management::default()
        },
        ..Options::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(secs) = a.secs {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::SeqCst);
        });
    }
    let hooks = Hooks {
        signals: true,
        ..Hooks::default()
    };
    let report = run_service(&opts, stop, hooks, make, |_| {
        let at = SocketAddr::from((opts.addr.0, opts.ports[0]));
        println!("kv on {at} (AF_XDP, {})", opts.iface);
    })?;
    println!("{}", report.to_json());
    Ok(())
}
