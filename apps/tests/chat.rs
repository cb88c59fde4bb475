//! The chat example (`examples/chat.rs`) on the simulation and kernel backends: a handler
//! writes to other connections — on its own worker and, through the service's
//! [`Fanout`], on every other — and every member of a room gets each message byte for
//! byte, non-members nothing; a silent connection is closed by the idle timeout. On the
//! dataplane it is `tests/dataplane.rs`.

#[path = "../examples/chat.rs"]
#[allow(dead_code, unreachable_pub)]
mod chat;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use c10m_apps::sim::Simulation;
use c10m_apps::{Conn, Conns, Fanout, Handle, Service, kernel};
use c10m_stack::ListenOptions;
use common::{Clients, run};

const PORT: u16 = 7100;
const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn chat_on_the_simulation_writes_to_other_connections() {
    let mut sim = Simulation::from_factory(64, chat::make(Duration::from_secs(60)));
    sim.listen(PORT, ListenOptions::default()).unwrap();
    let mut cl = Clients::default();
    let [a, b, c, d] = [0; 4].map(|_| cl.open(&mut sim, PORT, 4096));
    cl.queue(a, b"JOIN lobby\n");
    cl.queue(b, b"JOIN lobby\r\n");
    cl.queue(c, b"JOIN other\n");
    let joined = |cl: &Clients| [a, b, c].iter().all(|&x| cl.peer(x).rx == b"OK\n");
    assert!(run(&mut sim, &mut cl, 1_000, joined));

    cl.queue(c, b"SAY psst\n");
    cl.queue(a, b"SAY hello, room\n");
    cl.queue(d, b"SAY nobody hears\nHELLO\n");
    assert!(run(&mut sim, &mut cl, 1_000, |cl| cl.peer(d).rx.len() >= 38));
    // Settle: anything sent to the wrong connection would have arrived by now.
    run(&mut sim, &mut cl, 200, |_| false);
    let lobby = b"OK\nMSG lobby hello, room\n";
    assert_eq!(cl.peer(a).rx, lobby, "the sender is a member too");
    assert_eq!(cl.peer(b).rx, lobby);
    assert_eq!(cl.peer(c).rx, b"OK\nMSG other psst\n");
    assert_eq!(cl.peer(d).rx, b"ERR not in a room\nERR unknown command\n");

    // LEAVE: b no longer hears the lobby, a still does.
    cl.queue(b, b"LEAVE\n");
    assert!(run(&mut sim, &mut cl, 1_000, |cl| cl
        .peer(b)
        .rx
        .ends_with(b"room\nOK\n")));
    cl.queue(a, b"SAY again\n");
    assert!(run(&mut sim, &mut cl, 1_000, |cl| cl
        .peer(a)
        .rx
        .ends_with(b"again\n")));
    run(&mut sim, &mut cl, 200, |_| false);
    assert_eq!(cl.peer(b).rx, b"OK\nMSG lobby hello, room\nOK\n");
    assert_eq!(sim.runtime().stats().commands, 3, "one command per SAY");
}

#[test]
fn chat_on_the_simulation_closes_the_silent() {
    let mut sim = Simulation::from_factory(64, chat::make(Duration::from_millis(500)));
    sim.listen(PORT, ListenOptions::default()).unwrap();
    let mut cl = Clients::default();
    let [silent, talker] = [0; 2].map(|_| cl.open(&mut sim, PORT, 4096));
    cl.queue(silent, b"JOIN lobby\n");
    cl.queue(talker, b"JOIN lobby\n");
    for _ in 0..8 {
        run(&mut sim, &mut cl, 200, |_| false);
        cl.queue(talker, b"LEAVE\n");
    }
    assert!(cl.peer(silent).eof, "closed after 500 ms of silence");
    assert!(!cl.peer(talker).eof, "a connection that talks stays");
    assert_eq!(sim.runtime().stats().idle_closed, 1);
}

/// The chat service, counting the connections its worker accepted.
struct Counted {
    chat: chat::Chat,
    accepted: Arc<AtomicU64>,
}

impl Service for Counted {
    type State = chat::Member;
    type Command = chat::Say;

    fn on_accept(&mut self, conn: &mut Conn<'_>) -> chat::Member {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.chat.on_accept(conn)
    }

    fn on_readable(&mut self, conn: &mut Conn<'_>, state: &mut chat::Member) {
        self.chat.on_readable(conn, state);
    }

    fn on_closed(&mut self, handle: Handle, state: chat::Member) {
        self.chat.on_closed(handle, state);
    }

    fn on_command(&mut self, cmd: &chat::Say, conns: &mut Conns<'_, chat::Member>) {
        self.chat.on_command(cmd, conns);
    }
}

/// The chat on two kernel-backend workers; and the connections each accepted.
fn two_workers(idle: Duration) -> (kernel::Server<chat::Say>, Vec<Arc<AtomicU64>>) {
    let counts: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (make, per_worker) = (chat::make(idle), counts.clone());
    let cfg = kernel::Config {
        workers: 2,
        ..kernel::Config::default()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = kernel::Server::start(&cfg, &[addr], move |w, addrs, f: &Fanout<_>| Counted {
        chat: make(w, addrs, f),
        accepted: per_worker[w].clone(),
    })
    .unwrap();
    (server, counts)
}

/// A chat client over kernel TCP.
struct Client(TcpStream);

impl Client {
    fn connect(server: &kernel::Server<chat::Say>) -> Client {
        let s = TcpStream::connect_timeout(&server.local_addrs()[0], TIMEOUT).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client(s)
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

#[test]
fn chat_on_two_kernel_workers_broadcasts_across_workers() {
    let (server, accepted) = two_workers(Duration::from_secs(60));
    // Sixteen members: the kernel's SO_REUSEPORT hash spreads them over both workers
    // (checked below), so a SAY reaches members on the sender's worker and the other.
    let mut lobby: Vec<Client> = (0..16).map(|_| Client::connect(&server)).collect();
    for m in &mut lobby {
        m.send("JOIN lobby\n");
        m.expect("OK\n");
    }
    let per_worker: Vec<u64> = accepted.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "members on both workers: {per_worker:?}"
    );

    let mut other = Client::connect(&server);
    other.send("JOIN other\n");
    other.expect("OK\n");
    other.send("SAY psst\n");
    other.expect("MSG other psst\n");
    // Every worker takes its commands in order: a member that gets the next message
    // would have had `psst` before it, had it been sent there.
    lobby[0].send("SAY hello from 0\n");
    for m in &mut lobby {
        m.expect("MSG lobby hello from 0\n");
    }
    lobby[15].send("SAY and from 15\n");
    for m in &mut lobby {
        m.expect("MSG lobby and from 15\n");
    }
    let mut lone = Client::connect(&server);
    lone.send("SAY anyone?\nLEAVE\nNICK x\nJOIN two words\n");
    lone.expect("ERR not in a room\nERR not in a room\nERR unknown command\n");
    lone.expect("ERR unknown command\n");
    for m in &mut lobby {
        m.send("LEAVE\n");
        m.expect("OK\n"); // and nothing else came before it
    }
    other.send("LEAVE\n");
    other.expect("OK\n");
    let stats = server.stop().unwrap();
    assert_eq!(stats.accepted, 18);
    assert_eq!(stats.commands, 3 * 2, "three SAYs, each on both workers");
}

#[test]
fn chat_on_two_kernel_workers_closes_the_silent() {
    let (server, _) = two_workers(Duration::from_millis(300));
    let mut silent = Client::connect(&server);
    let mut talker = Client::connect(&server);
    let start = Instant::now();
    silent.send("JOIN lobby\n");
    silent.expect("OK\n");
    while start.elapsed() < Duration::from_millis(1200) {
        talker.send("LEAVE\n");
        talker.expect("ERR not in a room\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = Vec::new();
    assert_eq!(
        silent.0.read_to_end(&mut rest).unwrap(),
        0,
        "EOF: closed when idle"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let stats = server.stop().unwrap();
    assert_eq!(stats.idle_closed, 1, "the talker was never idle: {stats:?}");
}
