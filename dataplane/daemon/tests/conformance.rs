//! Conformance against a real peer: the Linux stack in c10m-gen as the client of the
//! dataplane's echo service (`c10m run` in c10m-dut), checked on the wire. What the
//! dataplane answers in its SYN-ACK (MSS, window scale, timestamps, SACK-permitted) and
//! what Linux made of it (its TCP_INFO); zero windows probed both ways;
//! Linux's keep-alives answered; a half-close, a RST, a simultaneous close, and who holds
//! TIME-WAIT. The handshake's options are checked over IPv6 too in a build with
//! `--features ipv6` (the MSS is the family's); the rest is smoltcp's state machine, the
//! same for both. Each test captures the generator's side and keeps it as a pcap file
//! when it fails (`common::capture`). Privileged: see `common`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::capture::{ACK, Capture, FIN, RST, SYN, Segment};
use common::{Bed, Daemon, GEN_NS, SERVICE, in_netns, ns_run};
use serde_json::Value;
use socket2::{Domain, SockFilter, SockRef, Socket, TcpKeepalive, Type};

const SOCK: &str = "/tmp/c10m-test-conformance/c10m.sock";
const TIMEOUT: Duration = Duration::from_secs(10);
const ECHO: SocketAddrV4 = SocketAddrV4::new(SERVICE, 7);
const ECHO_PORT: u16 = 7;

/// The bed, a capture on the generator's side named `name`, and the daemon with `extra`.
fn setup(name: &str, extra: &[&str]) -> Option<(Bed, Capture, Daemon)> {
    let bed = Bed::up(1)?;
    let _ = std::fs::create_dir_all("/tmp/c10m-test-conformance");
    let cap = Capture::start(GEN_NS, name);
    Some((bed, cap, daemon(extra)))
}

fn daemon(extra: &[&str]) -> Daemon {
    Daemon::start(&[&["--mgmt", SOCK], extra].concat())
}

/// A Linux client in c10m-gen, `with` its options set before it connects.
fn client(with: impl FnOnce(&Socket) + Send) -> TcpStream {
    client_to(ECHO.into(), with)
}

/// [`client`] of the echo service at `to`.
fn client_to(to: SocketAddr, with: impl FnOnce(&Socket) + Send) -> TcpStream {
    in_netns(GEN_NS, || {
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
        with(&s);
        s.connect_timeout(&to.into(), TIMEOUT)
            .expect("connecting to the echo service");
        let s = TcpStream::from(s);
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    })
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Sends `data` from another thread while reading its echo here; byte-exact.
fn echo(c: &TcpStream, data: &[u8]) {
    let mut w = c.try_clone().unwrap();
    let sent = data.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let mut back = vec![0; data.len()];
    (&*c).read_exact(&mut back).expect("the echo");
    writer.join().unwrap().expect("sending");
    assert!(back == data, "the echo differs from what was sent");
}

/// From the echo service (the clients' ports are ephemeral: never 7).
fn from_server(s: &Segment) -> bool {
    s.src.port() == ECHO_PORT
}

/// The segments of the connection from client port `port` (to either service address).
fn conn(segs: &[Segment], port: u16) -> Vec<Segment> {
    segs.iter()
        .filter(|s| {
            (from_server(s) && s.dst.port() == port)
                || (s.dst.port() == ECHO_PORT && s.src.port() == port)
        })
        .cloned()
        .collect()
}

/// `c10m ctl --json ARGS`.
fn ctl(args: &[&str]) -> Value {
    let (ok, out) = common::ctl(SOCK, &[&["--json"], args].concat());
    assert!(ok, "ctl {args:?}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out}"))
}

fn totals() -> Value {
    ctl(&["stats"])["stats"]["totals"].clone()
}

/// The dataplane's count of connections in `state` (`time_wait`, …).
fn in_state(state: &str) -> u64 {
    totals()["connections"][state].as_u64().unwrap_or(0)
}

/// Waits up to `limit` for `done`; panics naming `what`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What Linux's socket made of the handshake (its TCP_INFO).
#[derive(Debug, PartialEq, Eq)]
struct TcpInfo {
    timestamps: bool,
    sack: bool,
    /// The shift it applies to the windows we send, and the one it applies to its own.
    wscale: Option<(u8, u8)>,
    snd_mss: u32,
}

fn tcp_info(c: &TcpStream) -> TcpInfo {
    // SAFETY: tcp_info is plain integers, for which all zeros is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket we own writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            c.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // include/uapi/linux/tcp.h: TCPI_OPT_TIMESTAMPS 1, _SACK 2, _WSCALE 4; the two
    // shifts are 4-bit fields, the send shift first (low bits).
    let w = info.tcpi_snd_rcv_wscale;
    TcpInfo {
        timestamps: info.tcpi_options & 1 != 0,
        sack: info.tcpi_options & 2 != 0,
        wscale: (info.tcpi_options & 4 != 0).then_some((w & 0x0f, w >> 4)),
        snd_mss: info.tcpi_snd_mss,
    }
}

/// Whether Linux holds its connection from `port` to the echo service in TIME-WAIT.
fn linux_time_wait(port: u16) -> bool {
    let (ok, out) = ns_run(
        GEN_NS,
        &[
            "ss",
            "-tanH",
            "state",
            "time-wait",
            "sport",
            "=",
            &format!(":{port}"),
        ],
    );
    assert!(ok, "ss: {out}");
    out.contains(&ECHO.to_string())
}

/// The handshake of the connection from `port`: the SYN and the SYN-ACK.
fn handshake(cap: &Capture, port: u16) -> (Segment, Segment) {
    let segs = cap.wait_for("the handshake", TIMEOUT, |s| {
        conn(s, port).iter().any(|s| s.has(SYN | ACK))
    });
    let segs = conn(&segs, port);
    let syn = segs
        .iter()
        .find(|s| s.flags & (SYN | ACK) == SYN)
        .expect("the SYN")
        .clone();
    let synack = segs.iter().find(|s| s.has(SYN | ACK)).unwrap().clone();
    (syn, synack)
}

#[test]
fn the_syn_ack_answers_the_options_linux_offers() {
    let Some((_bed, cap, d)) = setup("handshake", &[]) else {
        return;
    };
    handshake_options(&cap, d, ECHO.into(), &[]);
}

/// The same over IPv6: the MSS of a 1500-byte MTU is 20 bytes less (RFC 8200 §5).
#[cfg(feature = "ipv6")]
#[test]
fn the_syn_ack_answers_the_options_linux_offers_over_ipv6() {
    let v6 = ["--addr", "2001:2::10/64"];
    let Some((_bed, cap, d)) = setup("handshake-ipv6", &v6) else {
        return;
    };
    handshake_options(&cap, d, (common::SERVICE6, ECHO_PORT).into(), &v6);
}

/// The handshakes of Linux clients with the echo service at `to` (its daemon `d`, and
/// a second one later, started with `extra`), as `cap` saw them.
fn handshake_options(cap: &Capture, d: Daemon, to: SocketAddr, extra: &[&str]) {
    let mss = if to.is_ipv4() { 1460 } else { 1440 };
    // Default buffers (2 KiB): Linux offers MSS, SACK-permitted, timestamps and window
    // scaling; the dataplane answers each (RFC 7323 §2.2, §3.2; RFC 2018 §2).
    let c = client_to(to, |_| {});
    echo(&c, b"hello");
    let port = c.local_addr().unwrap().port();
    let (syn, synack) = handshake(cap, port);
    assert!(syn.sack_permitted && syn.mss == Some(mss), "{syn:?}");
    let client_shift = syn.wscale.expect("Linux offers window scaling");
    let (tsval, _) = syn.timestamps.expect("Linux offers timestamps");
    // The MSS of a 1500-byte MTU; shift 0, as a 2 KiB window needs none (the option is
    // still sent, so that Linux may scale its own window); TSecr echoes the SYN's TSval.
    assert_eq!(synack.src, to, "{synack:?}");
    assert_eq!(synack.mss, Some(mss), "{synack:?}");
    assert_eq!(synack.wscale, Some(0), "{synack:?}");
    assert!(synack.sack_permitted, "{synack:?}");
    assert_eq!(synack.timestamps.map(|t| t.1), Some(tsval), "{synack:?}");
    assert_eq!(synack.win, 2048, "{synack:?}");
    // What Linux took from it: timestamps, SACK, no shift for our window and its own
    // for its window; and an MSS of half our 2 KiB window (Linux bounds the MSS it sends
    // with to half the largest window the peer offered, `tcp_bound_to_half_wnd`).
    let want = TcpInfo {
        timestamps: true,
        sack: true,
        wscale: Some((0, client_shift)),
        snd_mss: 1024,
    };
    assert_eq!(tcp_info(&c), want);
    // Every later segment of both sides carries timestamps, with TSecr echoing the other.
    let segs = conn(&cap.segments(), port);
    assert!(
        segs.iter().all(|s| s.timestamps.is_some()),
        "a segment without timestamps: {segs:?}"
    );
    drop(c);
    d.stop();

    // Buffers above 64 KiB scale the window; timestamps declined. smoltcp's shift is the
    // buffer size's bit length less 16: 3 for 256 KiB, one more than it needs.
    let big = ["--rx-buf", "262144", "--prefault", "false"];
    let d = daemon(&[&big[..], &["--timestamps", "false"], extra].concat());
    // The client still knows the server's MAC, so its SYN comes before any ARP or
    // neighbour solicitation from it: the new daemon must ask for the client's and answer
    // at once, not after smoltcp's one-second silence (by then Linux sends its SYN again).
    let asked = Instant::now();
    let c = client_to(to, |_| {});
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(900), "connected in {took:?}");
    echo(&c, &pattern(512 * 1024));
    let port = c.local_addr().unwrap().port();
    let (syn, synack) = handshake(cap, port);
    assert!(syn.timestamps.is_some(), "Linux offered them: {syn:?}");
    assert_eq!(synack.timestamps, None, "declined: {synack:?}");
    assert_eq!(synack.wscale, Some(3), "{synack:?}");
    assert_eq!(
        synack.win, 65_535,
        "a SYN's window is never scaled: {synack:?}"
    );
    assert!(
        synack.sack_permitted && synack.mss == Some(mss),
        "{synack:?}"
    );
    // The whole MSS now: a window far above it, and no 12 bytes of timestamps in each segment.
    let want = TcpInfo {
        timestamps: false,
        sack: true,
        wscale: Some((3, syn.wscale.unwrap())),
        snd_mss: u32::from(mss),
    };
    assert_eq!(tcp_info(&c), want);
    // The bulk echo saw a window above 64 KiB (the field times 8).
    let segs = conn(&cap.segments(), port);
    let widest = segs
        .iter()
        .filter(|s| from_server(s) && !s.has(SYN))
        .map(|s| u32::from(s.win) << 3)
        .max();
    assert!(widest > Some(65_535), "widest window offered {widest:?}");
    let with_ts = segs.iter().skip(1).filter(|s| s.timestamps.is_some());
    assert_eq!(with_ts.count(), 0, "only the SYN has them: {segs:?}");
    drop(c);
    let waits = common::per_worker(&d.stop(), "stack", "neighbour_waits");
    assert!(
        waits[0] >= 1,
        "the SYN-ACK waited for the client's address: {waits:?}"
    );
}

/// Zero-window probes in a connection's segments: the dataplane's, Linux's, and Linux's
/// that the dataplane answered. A probe is a segment sent while the other side's last word
/// was a zero window at the sequence number the probe carries: smoltcp sends one byte at
/// the window's edge, the stack's own probe (`stack/src/recovery.rs`) and Linux
/// (`tcp_xmit_probe_skb`) an empty segment one below it, which the answer acknowledges.
fn probes(segs: &[Segment]) -> (usize, usize, usize) {
    let is_probe = |s: &Segment, last: Option<&Segment>| {
        last.is_some_and(|l| {
            l.win == 0
                && s.flags & (SYN | FIN | RST) == 0
                && ((s.len == 1 && s.seq == l.ack)
                    || (s.len == 0 && s.seq == l.ack.wrapping_sub(1)))
        })
    };
    let (mut ours, mut linux, mut answered) = (0, 0, 0);
    let (mut last_server, mut last_client) = (None::<&Segment>, None::<&Segment>);
    let mut pending = None::<&Segment>;
    for s in segs {
        if from_server(s) {
            ours += usize::from(is_probe(s, last_client));
            answered += usize::from(
                pending
                    .take()
                    .is_some_and(|p| s.ack == p.seq.wrapping_add(1)),
            );
            last_server = Some(s);
        } else {
            let probe = is_probe(s, last_server);
            linux += usize::from(probe);
            pending = (probe && s.len == 0).then_some(s);
            last_client = Some(s);
        }
    }
    (ours, linux, answered)
}

#[test]
fn zero_windows_are_probed_both_ways_and_reopen() {
    let Some((_bed, cap, _d)) = setup("zero-window", &[]) else {
        return;
    };
    // A client that sends 256 KiB and reads nothing at first, with a small receive buffer:
    // its window closes, then the echo's transmit buffer fills, the echo stops reading,
    // and the dataplane's window closes too. Each side must probe the other's.
    let c = client(|s| s.set_recv_buffer_size(4096).unwrap());
    let port = c.local_addr().unwrap().port();
    let data = pattern(256 * 1024);
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let segs = cap.wait_for(
        "a zero-window probe each way, Linux's answered",
        Duration::from_secs(8),
        |s| {
            let (ours, linux, answered) = probes(&conn(s, port));
            ours >= 1 && linux >= 1 && answered >= 1
        },
    );
    assert!(
        !conn(&segs, port).iter().any(|s| s.has(RST)),
        "nobody gave up"
    );
    // Reading reopens both windows: everything arrives, byte for byte.
    let mut back = vec![0; data.len()];
    (&c).read_exact(&mut back)
        .expect("the echo after the windows reopen");
    writer.join().unwrap().expect("sending");
    assert!(back == data, "the echo differs from what was sent");
    echo(&c, b"after");
}

#[test]
fn linux_keep_alives_are_answered() {
    let Some((_bed, cap, _d)) = setup("keep-alive", &[]) else {
        return;
    };
    // Linux probes after 1 s idle, then every second, and gives up after 2 unanswered
    // probes: an idle of 3.5 s survives only if the dataplane answers each.
    let c = client(|s| {
        let k = TcpKeepalive::new()
            .with_time(Duration::from_secs(1))
            .with_interval(Duration::from_secs(1))
            .with_retries(2);
        s.set_tcp_keepalive(&k).unwrap();
    });
    let port = c.local_addr().unwrap().port();
    echo(&c, b"a");
    // Everything of the echo on the wire first: the last word Linux's ACK of it.
    let segs = cap.wait_for("the echo", TIMEOUT, |s| {
        let c = conn(s, port);
        let echoed = c.iter().position(|s| from_server(s) && s.len == 1);
        echoed.is_some_and(|i| c[i + 1..].iter().any(|s| !from_server(s) && s.len == 0))
    });
    let before = conn(&segs, port).len();
    std::thread::sleep(Duration::from_millis(3500));
    let idle = conn(&cap.segments(), port).split_off(before);
    echo(&c, b"b");
    // A keep-alive: empty, one below SND.NXT (RFC 9293 §3.8.4); its answer an ACK of
    // SND.NXT.
    let (asked, answers): (Vec<_>, Vec<_>) = idle.iter().partition(|s| !from_server(s));
    assert!(
        asked.len() >= 2,
        "Linux sent {} keep-alives: {idle:?}",
        asked.len()
    );
    for k in &asked {
        assert_eq!(k.len, 0, "{k:?}");
        assert!(
            answers
                .iter()
                .any(|a| a.ack == k.seq.wrapping_add(1) && a.flags == ACK),
            "keep-alive {k:?} unanswered: {idle:?}"
        );
    }
    // The dataplane sends none of its own: the daemon's services leave the stack's
    // keep-alive (`SocketOptions::keep_alive`) off; it only answers.
    assert_eq!(answers.len(), asked.len(), "{idle:?}");
}

#[test]
fn half_close_rst_and_time_wait_after_linux_closes() {
    let Some((_bed, cap, _d)) = setup("fin-rst", &[]) else {
        return;
    };

    // Half-close: Linux's FIN ends its direction only; the echo sends all back, then closes
    // (CLOSE-WAIT, LAST-ACK).
    let c = client(|_| {});
    let port = c.local_addr().unwrap().port();
    let data = pattern(20_000);
    (&c).write_all(&data).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    (&c).read_to_end(&mut back)
        .expect("the echo after a half-close");
    assert!(back == data, "the echo after the half-close differs");
    drop(c);
    // Linux closed first: it holds TIME-WAIT, and the dataplane frees its slot as soon as
    // its FIN is acknowledged.
    assert!(linux_time_wait(port), "Linux holds TIME-WAIT");
    wait_until("the dataplane frees the closed connection", TIMEOUT, || {
        let t = totals();
        t["connections"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n == 0)
    });
    cap.wait_for("a FIN each way and the last ACK", TIMEOUT, |s| {
        let c = conn(s, port);
        let fins = c.iter().filter(|s| s.has(FIN)).count();
        fins == 2 && c.last().is_some_and(|l| !from_server(l) && l.flags == ACK)
    });

    // RST: Linux aborts (SO_LINGER 0); the dataplane frees the slot, counts the RST and
    // sends nothing back.
    let before = totals();
    let r = client(|s| s.set_linger(Some(Duration::ZERO)).unwrap());
    let port = r.local_addr().unwrap().port();
    echo(&r, b"x");
    wait_until("the dataplane counts it established", TIMEOUT, || {
        in_state("established") == 1
    });
    drop(r);
    wait_until("the dataplane frees the reset connection", TIMEOUT, || {
        in_state("established") == 0
    });
    let after = totals();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("resets_received"), 1, "{after}");
    assert_eq!(delta("closed"), 1, "{after}");
    let segs = cap.wait_for("Linux's RST", TIMEOUT, |s| {
        conn(s, port).iter().any(|s| s.has(RST))
    });
    let segs = conn(&segs, port);
    let rst = segs.iter().position(|s| s.has(RST)).unwrap();
    assert!(
        !from_server(&segs[rst]) && segs.len() == rst + 1,
        "{segs:?}"
    );
}

#[test]
fn simultaneous_close_leaves_both_in_time_wait_and_the_slot_is_freed_after() {
    // The echo closes a connection idle for 1 s: the dataplane's FIN.
    let Some((_bed, cap, _d)) = setup("simultaneous-close", &["--echo-idle-timeout", "1"]) else {
        return;
    };
    let c = client(|_| {});
    let port = c.local_addr().unwrap().port();
    echo(&c, b"x");
    // Linux's socket drops every segment that reaches it for now (a classic BPF filter
    // returning 0), so the dataplane's FIN is on the wire but not taken when Linux sends
    // its own: the FINs cross.
    let sock = SockRef::from(&c);
    sock.attach_filter(&[SockFilter::new(0x06, 0, 0, 0)]) // BPF_RET | BPF_K, 0
        .unwrap();
    let segs = cap.wait_for("the dataplane's FIN", Duration::from_secs(5), |s| {
        conn(s, port).iter().any(|s| from_server(s) && s.has(FIN))
    });
    let server_fin = conn(&segs, port).into_iter().find(|s| s.has(FIN)).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let segs = cap.wait_for("Linux's FIN acknowledged", TIMEOUT, |s| {
        let segs = conn(s, port);
        let fin = segs.iter().find(|s| !from_server(s) && s.has(FIN));
        fin.is_some_and(|f| {
            segs.iter()
                .any(|s| from_server(s) && s.ack == f.seq.wrapping_add(1))
        })
    });
    let client_fin = conn(&segs, port)
        .into_iter()
        .find(|s| !from_server(s) && s.has(FIN))
        .unwrap();
    assert_ne!(
        client_fin.ack,
        server_fin.seq.wrapping_add(1),
        "the FINs crossed"
    );
    assert_ne!(
        server_fin.ack,
        client_fin.seq.wrapping_add(1),
        "the FINs crossed"
    );
    // FIN-WAIT-1, then a FIN: CLOSING (RFC 9293 §3.6).
    wait_until("the dataplane in CLOSING", TIMEOUT, || {
        in_state("closing") == 1
    });
    sock.detach_filter().unwrap();

    // The retransmissions finish it: both ends end in TIME-WAIT.
    let mut rest = Vec::new();
    (&c).read_to_end(&mut rest).expect("the dataplane's FIN");
    assert!(rest.is_empty());
    wait_until("the dataplane in TIME-WAIT", TIMEOUT, || {
        in_state("time_wait") == 1
    });
    let entered = Instant::now();
    assert!(linux_time_wait(port), "Linux in TIME-WAIT too");

    // smoltcp holds TIME-WAIT for 10 s (its CLOSE_DELAY, not 2 MSL), then frees the slot.
    wait_until("the TIME-WAIT slot freed", Duration::from_secs(13), || {
        in_state("time_wait") == 0
    });
    let held = entered.elapsed();
    assert!(held > Duration::from_secs(8), "TIME-WAIT held {held:?}");
    assert_eq!(
        totals()["connections"]
            .as_object()
            .unwrap()
            .values()
            .filter(|n| *n != 0)
            .count(),
        0
    );
    drop(c);
}
