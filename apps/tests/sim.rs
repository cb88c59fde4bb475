//! Every built-in service on the simulation backend: deterministic, on simulated time.

mod common;

use c10m_apps::services::{Echo, Http, Push, http, push};
use c10m_apps::sim::Simulation;
use c10m_stack::{ListenOptions, SocketOptions, State};
use common::{Clients, run};

fn listen_opts(buf: usize) -> ListenOptions {
    ListenOptions {
        socket: SocketOptions {
            rx_buf: buf,
            tx_buf: buf,
            ..SocketOptions::default()
        },
        backlog: 100_000,
        ..ListenOptions::default()
    }
}

#[test]
fn echo_many_connections() {
    let mut sim = Simulation::new(Echo::default(), 256);
    sim.listen(7, listen_opts(2048)).unwrap();
    let mut cl = Clients::default();
    for i in 0..50 {
        let c = cl.open(&mut sim, 7, 2048);
        let payload: Vec<u8> = (0..10_000).map(|j| (i * 7 + j * 31) as u8).collect();
        cl.queue(c, &payload);
    }
    assert!(run(&mut sim, &mut cl, 10_000, |c| c
        .all(|p| p.rx.len() == 10_000)));
    for p in cl.peers.values() {
        assert_eq!(p.rx, p.out);
    }
    assert_eq!(sim.runtime().service().bytes, 50 * 10_000);
}

#[test]
fn a_shutdown_paces_its_fins() {
    let n = 1_000;
    let mut sim = Simulation::new(Echo::default(), 2 * n);
    sim.listen(7, listen_opts(1024)).unwrap();
    let mut cl = Clients::default();
    for _ in 0..n {
        let c = cl.open(&mut sim, 7, 1024);
        cl.queue(c, b"x");
    }
    assert!(run(&mut sim, &mut cl, 10_000, |c| c.all(|p| p.rx == b"x")));
    let start = sim.now();
    sim.close_all();
    assert!(sim.runtime().closing());
    // Each millisecond the clients see at most one more batch of FINs.
    let mut seen = Vec::new();
    while !cl.all(|p| p.eof) && (sim.now() - start).total_millis() < 1_000 {
        let before = sim.now();
        run(&mut sim, &mut cl, 0, |_| false);
        let ms = (sim.now() - start).total_millis() as usize;
        let eof = cl.peers.values().filter(|p| p.eof).count();
        assert!(
            eof <= (ms + 1) * c10m_apps::CLOSES_PER_MS,
            "{eof} FINs by {ms} ms"
        );
        seen.push((ms, eof));
        if sim.now() == before {
            sim.sleep(1);
        }
    }
    assert!(cl.all(|p| p.eof), "every connection closed: {seen:?}");
    let last = (sim.now() - start).total_millis() as usize;
    assert!(
        (n / c10m_apps::CLOSES_PER_MS - 1..=n / c10m_apps::CLOSES_PER_MS + 5).contains(&last),
        "{n} FINs took {last} ms: {seen:?}"
    );
    // The last batch visits the slots no connection holds: done a millisecond later.
    run(&mut sim, &mut cl, 2, |_| false);
    assert!(!sim.runtime().closing());
    // The clients closed on EOF: the server's ends wait in TIME-WAIT, and the grace's
    // end resets none of them.
    run(&mut sim, &mut cl, 100, |_| false);
    let time_wait = sim.server().counters().in_state(State::TimeWait);
    assert_eq!(time_wait, n as u64, "every close ended in order");
    let resets = sim.server().counters().resets_sent;
    sim.abort_all();
    run(&mut sim, &mut cl, 100, |_| false);
    assert_eq!(
        sim.server().counters().resets_sent,
        resets,
        "no RST after TIME-WAIT"
    );
}

fn responses(rx: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(rx);
    s.split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.to_string())
        .collect()
}

#[test]
fn http_keep_alive_pipelining_head_and_close() {
    let mut sim = Simulation::new(Http::new(http::Config::default()), 64);
    sim.listen(80, listen_opts(4096)).unwrap();
    let mut cl = Clients::default();
    let c = cl.open(&mut sim, 80, 4096);
    let mut reqs = Vec::new();
    for _ in 0..10 {
        reqs.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    reqs.extend_from_slice(b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    reqs.extend_from_slice(b"HEAD / HTTP/1.1\r\n\r\n");
    reqs.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    cl.queue(c, &reqs);
    assert!(run(&mut sim, &mut cl, 5_000, |cl| cl.peer(c).closed));
    let rs = responses(&cl.peer(c).rx);
    assert_eq!(rs.len(), 13, "{rs:?}");
    assert!(rs.iter().all(|r| r.starts_with("200 OK")));
    assert!(rs[0].ends_with("Hello, World!"));
    assert!(
        rs[11].ends_with("\r\n\r\n"),
        "HEAD has no body: {:?}",
        rs[11]
    );
    assert!(rs[12].contains("Connection: close"));
    assert_eq!(sim.runtime().service().stats.requests, 13);
}

#[test]
fn http_request_split_across_segments() {
    let mut sim = Simulation::new(Http::new(http::Config::default()), 64);
    sim.listen(80, listen_opts(4096)).unwrap();
    let mut cl = Clients::default();
    let c = cl.open(&mut sim, 80, 4096);
    cl.queue(c, b"GET / HT");
    assert!(!run(&mut sim, &mut cl, 200, |cl| !cl.peer(c).rx.is_empty()));
    cl.queue(c, b"TP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert!(run(&mut sim, &mut cl, 1_000, |cl| responses(
        &cl.peer(c).rx
    )
    .len()
        == 2));
}

#[test]
fn http_refusals_get_their_status_and_close() {
    let cases: [(&[u8], &str); 4] = [
        (b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "413 Content Too Large",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "501 Not Implemented",
        ),
        (&[b'a'; 0], "431 Request Header Fields Too Large"),
    ];
    for (req, status) in cases {
        let cfg = http::Config {
            max_header: 1024,
            ..http::Config::default()
        };
        let mut sim = Simulation::new(Http::new(cfg), 64);
        sim.listen(80, listen_opts(4096)).unwrap();
        let mut cl = Clients::default();
        let c = cl.open(&mut sim, 80, 4096);
        if req.is_empty() {
            let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "y".repeat(3000));
            cl.queue(c, long.as_bytes());
        } else {
            cl.queue(c, req);
        }
        assert!(
            run(&mut sim, &mut cl, 10_000, |cl| cl.peer(c).closed),
            "{status}"
        );
        let rs = responses(&cl.peer(c).rx);
        assert_eq!(rs.len(), 1, "{status}: {rs:?}");
        assert!(rs[0].starts_with(status), "{rs:?}");
    }
}

#[test]
fn push_ten_thousand_subscribers_get_one_publish_exactly_once() {
    const N: usize = 10_000;
    let mut sim = Simulation::new(Push::new(push::Config::default()), N + 64);
    sim.listen(5222, listen_opts(512)).unwrap();
    let mut cl = Clients::default();
    for i in 0..N {
        let c = cl.open(&mut sim, 5222, 512);
        cl.queue(
            c,
            if i % 2 == 0 {
                b"SUB news\n"
            } else {
                b"SUB news\r\nSUB other\n"
            },
        );
    }
    run(&mut sim, &mut cl, 5_000, |_| false);
    assert_eq!(sim.runtime().service().subscriptions(), N + N / 2);
    sim.command(&push::Command::publish("news", b"hello"));
    assert!(run(&mut sim, &mut cl, 10_000, |cl| cl.all(|p| p.rx.len() >= 15)));
    run(&mut sim, &mut cl, 100, |_| false);
    assert!(cl.all(|p| p.rx == b"MSG news hello\n"));
    let svc = sim.runtime().service_mut();
    assert_eq!(svc.stats.delivered, N as u64);
    let done = svc.take_finished().expect("the fan-out finished");
    assert_eq!(
        (done.id, done.queued, done.delivered, done.dropped),
        (1, N as u64, N as u64, 0)
    );
    assert!(!svc.fanning_out() && svc.take_finished().is_none());
}

/// A fan-out larger than one loop iteration's budget goes out over many iterations, and
/// a heartbeat that arrives meanwhile is answered before the fan-out ends.
#[test]
fn push_fanout_is_paced_and_heartbeats_are_answered_in_between() {
    const N: usize = 2_000;
    const BUDGET: usize = 32;
    let cfg = push::Config {
        fanout_budget: BUDGET,
        ..push::Config::default()
    };
    let mut sim = Simulation::new(Push::new(cfg), N + 16);
    sim.listen(5222, listen_opts(512)).unwrap();
    let mut cl = Clients::default();
    let conns: Vec<_> = (0..N).map(|_| cl.open(&mut sim, 5222, 512)).collect();
    for &c in &conns {
        cl.queue(c, b"SUB news\n");
    }
    run(&mut sim, &mut cl, 5_000, |_| false);
    assert_eq!(sim.runtime().service().subscriptions(), N);

    sim.command(&push::Command::publish("news", b"hello"));
    // One iteration's worth went out with the command, no more.
    assert_eq!(sim.runtime().service().stats.delivered, BUDGET as u64);
    assert!(sim.runtime().service().fanning_out());
    // While the loop says frames wait to be read, a step reaches a sixteenth as many.
    sim.runtime().service_mut().set_backlog(true);
    assert!(run(&mut sim, &mut cl, 10, |_| true), "one round");
    assert_eq!(sim.runtime().service().stats.delivered, BUDGET as u64 + 2);
    sim.runtime().service_mut().set_backlog(false);
    // The last subscriber (last in handle order, so last in the fan-out) pings.
    let last = *conns.last().unwrap();
    cl.queue(last, b"PING\n");
    assert!(run(&mut sim, &mut cl, 10_000, |cl| cl
        .peer(last)
        .rx
        .starts_with(b"PONG\n")));
    let svc = sim.runtime().service();
    assert_eq!(svc.stats.pongs, 1);
    assert!(
        svc.fanning_out() && svc.stats.delivered < N as u64,
        "the heartbeat was answered during the fan-out ({} of {N} reached)",
        svc.stats.delivered
    );
    // The fan-out completes: exactly one MSG each.
    assert!(run(&mut sim, &mut cl, 10_000, |cl| cl
        .all(|p| p.rx.ends_with(b"MSG news hello\n"))));
    run(&mut sim, &mut cl, 100, |_| false);
    for &c in &conns {
        let want: &[u8] = if c == last {
            b"PONG\nMSG news hello\n"
        } else {
            b"MSG news hello\n"
        };
        assert_eq!(cl.peer(c).rx, want);
    }
    let svc = sim.runtime().service_mut();
    let done = svc.take_finished().expect("the fan-out finished");
    assert_eq!(
        (done.queued, done.delivered, done.dropped),
        (N as u64, N as u64, 0)
    );
    assert!(!svc.fanning_out());
}

#[test]
fn push_idle_timeout_closes_exactly_the_silent() {
    let mut sim = Simulation::new(Push::new(push::Config::default()), 256);
    sim.listen(5222, listen_opts(1024)).unwrap();
    let mut cl = Clients::default();
    let conns: Vec<_> = (0..40).map(|_| cl.open(&mut sim, 5222, 1024)).collect();
    for &c in &conns {
        cl.queue(c, b"SUB t\n");
    }
    // The even ones ping every 20 s for 150 s; the odd ones stay silent.
    for round in 0..8 {
        run(&mut sim, &mut cl, 20_000, |_| false);
        if round < 7 {
            for &c in conns.iter().step_by(2) {
                cl.queue(c, b"PING\n");
            }
        }
    }
    for (i, &c) in conns.iter().enumerate() {
        let p = cl.peer(c);
        if i % 2 == 0 {
            assert!(!p.closed && !p.eof, "active {i} closed");
            assert_eq!(p.rx, b"PONG\n".repeat(7));
        } else {
            assert!(p.eof, "silent {i} not closed");
        }
    }
    let st = sim.runtime().stats();
    assert_eq!(st.idle_closed, 20);
}

#[test]
fn push_drops_a_subscriber_that_does_not_read() {
    let mut sim = Simulation::new(Push::new(push::Config::default()), 64);
    sim.listen(5222, listen_opts(1024)).unwrap();
    let mut cl = Clients::default();
    let slow = cl.open(&mut sim, 5222, 1024);
    let fast = cl.open(&mut sim, 5222, 1024);
    cl.queue(slow, b"SUB t\n");
    cl.queue(fast, b"SUB t\n");
    for _ in 0..100 {
        if sim.runtime().service().subscriptions() == 2 {
            break;
        }
        run(&mut sim, &mut cl, 10, |_| false);
    }
    assert_eq!(sim.runtime().service().subscriptions(), 2);
    cl.peers.get_mut(&slow).unwrap().deaf = true;
    let payload = [b'x'; 200];
    for _ in 0..40 {
        sim.command(&push::Command::publish("t", &payload));
        run(&mut sim, &mut cl, 50, |_| false);
    }
    run(&mut sim, &mut cl, 1_000, |_| false);
    let svc = sim.runtime().service();
    assert_eq!(svc.stats.dropped_slow, 1);
    assert_eq!(svc.subscriptions(), 1);
    assert!(cl.peer(slow).closed);
    assert_eq!(cl.peer(fast).rx.len(), 40 * (6 + 200 + 1));
}
