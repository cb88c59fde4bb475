//! Chat rooms over every worker: a service that writes to *other* connections, on any
//! worker, through the [`Fanout`] its factory is given. The one `Chat` runs unchanged on
//! the kernel backend (the default; no privileges), on the AF_XDP dataplane
//! (`--dataplane`; root) and on the simulation backend (`Simulation::from_factory`).
//!
//! ```text
//! cargo run -p c10m-apps --example chat -- [PORT] [--workers N] [--idle SECS] [--secs N]
//!     nc 127.0.0.1 PORT
//! cargo build --release -p c10m-apps --example chat
//! sudo target/release/examples/chat [PORT] --dataplane IFACE --addr CIDR [--mgmt SOCK] ...
//!     e.g. in the test bed: ip netns exec c10m-dut target/release/examples/chat 7100 \
//!          --dataplane dut0 --addr 198.18.0.10/24, then from c10m-gen: nc 198.18.0.10 7100
//! ```
//!
//! PORT defaults to 7100, `--workers` to 2 (on the dataplane: one per NIC queue, queues
//! 0..N, so the bed needs `scripts/testbed up --queues 2`), `--idle` to 300. It runs until SIGINT/SIGTERM or `--secs`, then prints a JSON
//! line: the kernel backend's summed counters, or the dataplane's report.
//!
//! # Protocol
//!
//! Lines of text ending in `\n` (white space at the end of a line, `\r` included, is
//! ignored); a connection is in at most one room.
//!
//! | the client sends | it gets back |
//! |---|---|
//! | `JOIN room` (a room is 1 to 64 bytes, no spaces) | `OK`, after leaving its room if it was in one |
//! | `SAY text` | nothing itself: every member of its room, on every worker, the sender included, gets `MSG room text` |
//! | `LEAVE` | `OK` |
//! | `SAY` or `LEAVE` outside a room | `ERR not in a room` |
//! | anything else | `ERR unknown command` |
//!
//! A connection from which nothing came for `--idle` seconds is closed (FIN). A line
//! longer than 4096 bytes resets the connection. Lines are never split: one that does
//! not fit in a member's transmit buffer is not sent to it (a member that does not read
//! loses messages, not its place in the stream).
//!
//! A `SAY` is published to every worker (the sender's own included); each worker's
//! `on_command` writes it to that worker's members of the room, through `Conns::with`.
//! So a message reaches whoever is in the room when their worker takes it: after the
//! lines that arrived with the `SAY` (`SAY hi` and `LEAVE` in one segment: the sender
//! does not see its own message).
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use c10m_apps::{Conn, Conns, Fanout, Handle, Service, kernel};

/// A line (`MSG room text`) for the members of a room, on every worker.
pub(crate) type Say = (Arc<str>, Arc<[u8]>);

/// One worker's service: its members of each room, and the way to every worker.
pub(crate) struct Chat {
    rooms: HashMap<Arc<str>, Vec<Handle>>,
    fanout: Fanout<Say>,
    idle: Duration,
}

/// A connection's room, and the bytes of a partial line.
#[derive(Default)]
pub(crate) struct Member {
    room: Option<Arc<str>>,
    input: Vec<u8>,
}

impl Chat {
    /// Takes `h` out of its room (if any); the answer to `LEAVE`.
    fn leave(&mut self, h: Handle, m: &mut Member) -> &'static str {
        let room = m.room.take().unwrap_or_default();
        let members = self.rooms.entry(room.clone()).or_default();
        members.retain(|&x| x != h);
        if members.is_empty() {
            self.rooms.remove(&room);
        }
        "OK\n"
    }

    /// Acts on one line; returns the answer to the sender.
    fn line(&mut self, h: Handle, m: &mut Member, line: &str) -> &'static str {
        match (line.split_once(' ').unwrap_or((line, "")), &m.room) {
            (("JOIN", room), _) if (1..=64).contains(&room.len()) && !room.contains(' ') => {
                self.leave(h, m);
                let room = m.room.insert(room.into());
                self.rooms.entry(room.clone()).or_default().push(h);
                "OK\n"
            }
            (("SAY", text), Some(room)) => {
                let line = format!("MSG {room} {text}\n").into_bytes();
                self.fanout.publish((room.clone(), line.into()));
                ""
            }
            (("LEAVE", ""), Some(_)) => self.leave(h, m),
            (("SAY" | "LEAVE", _), None) => "ERR not in a room\n",
            _ => "ERR unknown command\n",
        }
    }
}

impl Service for Chat {
    type State = Member;
    type Command = Say;

    fn on_accept(&mut self, conn: &mut Conn<'_>) -> Member {
        conn.set_idle_timeout(Some(self.idle));
        Member::default()
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, m: &mut Member) {
        loop {
            // `write` appends to the Vec and says how much: 0 when all was read.
            match conn.recv_with(|b| (b.len(), m.input.write(b))) {
                Ok(Ok(0)) => return,           // edge-triggered: more comes with the next event
                Err(_) => return conn.close(), // the peer is done
                _ => {}
            }
            while let Some(end) = m.input.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = m.input.drain(..=end).collect();
                let line = String::from_utf8_lossy(line.trim_ascii_end());
                conn.send_whole(self.line(conn.handle(), m, &line).as_bytes());
            }
            if m.input.len() > 4096 {
                return conn.abort(); // no line is that long
            }
        }
    }

    fn on_closed(&mut self, handle: Handle, mut m: Member) {
        self.leave(handle, &mut m);
    }

    fn on_command(&mut self, (room, line): &Say, conns: &mut Conns<'_, Member>) {
        for &h in self.rooms.get(room).into_iter().flatten() {
            conns.with(h, |conn, _| conn.send_whole(line));
        }
    }
}

/// Each worker's service, on any backend: `(worker, addresses listened on, fanout)`.
pub(crate) fn make(idle: Duration) -> impl Fn(usize, &[SocketAddr], &Fanout<Say>) -> Chat + Clone {
    move |_worker, _addrs, fanout| Chat {
        rooms: HashMap::new(),
        fanout: fanout.clone(),
        idle,
    }
}

const USAGE: &str = "\
usage: chat [PORT] [--workers N] [--idle SECS] [--secs N]          kernel backend, 127.0.0.1
       chat [PORT] --dataplane IFACE --addr CIDR [--mgmt SOCK] [--workers N] [--idle SECS]
            [--secs N]                                          AF_XDP (root)
PORT defaults to 7100, --workers to 2, --idle to 300 s; --secs N stops after N seconds;
--mgmt SOCK opens the dataplane's management socket (`c10m ctl --mgmt SOCK stats`).";

/// The command line.
#[derive(Default)]
struct Args {
    port: Option<u16>,
    workers: Option<usize>,
    idle: Option<f64>,
    secs: Option<f64>,
    dataplane: Option<String>,
    addr: Option<String>,
    mgmt: Option<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let secs = |v: String| match v.parse::<f64>() {
            Ok(s) if s > 0.0 && s < 1e9 => Ok(s),
            _ => Err(format!("{arg}: seconds, e.g. 1.5, not {v:?}")),
        };
        match arg.as_str() {
            "--workers" => match value()?.parse() {
                Ok(n @ 1..=64) => a.workers = Some(n),
                _ => return Err("--workers: 1 to 64".into()),
            },
            "--idle" => a.idle = Some(secs(value()?)?),
            "--secs" => a.secs = Some(secs(value()?)?),
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
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = c10m_apps::stop_on_signal(stop.clone()) {
        eprintln!("chat: cannot install the signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(secs) = a.secs {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::SeqCst);
        });
    }
    let result = match a.dataplane {
        Some(_) => on_dataplane(&a, stop),
        None => on_kernel(&a, &stop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn idle(a: &Args) -> Duration {
    Duration::from_secs_f64(a.idle.unwrap_or(300.0))
}

fn on_kernel(a: &Args, stop: &AtomicBool) -> Result<(), Box<dyn std::error::Error>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], a.port.unwrap_or(7100)));
    let cfg = kernel::Config {
        workers: a.workers.unwrap_or(2),
        ..kernel::Config::default()
    };
    let server = kernel::Server::start(&cfg, &[addr], make(idle(a)))?;
    println!(
        "chat on {} ({} workers)",
        server.local_addrs()[0],
        cfg.workers
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped = server.fanout().dropped();
    let s = server.stop()?;
    println!(
        "{{\"accepted\":{},\"closed\":{},\"idle_closed\":{},\"commands\":{},\"fanout_dropped\":{dropped}}}",
        s.accepted, s.closed, s.idle_closed, s.commands
    );
    Ok(())
}

fn on_dataplane(a: &Args, stop: Arc<AtomicBool>) -> Result<(), Box<dyn std::error::Error>> {
    use c10m_dataplane::{Hooks, Management, Options, parse_cidr, run_service};
    let opts = Options {
        iface: a.dataplane.clone().unwrap_or_default(),
        addr: parse_cidr(a.addr.as_deref().unwrap_or_default())?,
        ports: vec![a.port.unwrap_or(7100)],
        queues: a.workers.unwrap_or(2) as u32,
        management: Management {
            socket: a.mgmt.as_ref().map(Into::into),
            ..Management::default()
        },
        ..Options::default()
    };
    let report = run_service(&opts, stop, Hooks::default(), make(idle(a)), |_| {
        let at = SocketAddr::from((opts.addr.0, opts.ports[0]));
        println!(
            "chat on {at} ({} workers, AF_XDP, {})",
            opts.queues, opts.iface
        );
    })?;
    println!("{}", report.to_json());
    Ok(())
}
