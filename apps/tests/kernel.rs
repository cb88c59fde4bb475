//! The built-in services on the kernel backend over 127.0.0.1 (ephemeral ports).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use c10m_apps::services::{Kind, Spec, push};
use c10m_apps::{KernelOptions, kernel, start_kernel};

fn options(kinds: &[Kind], workers: usize) -> KernelOptions {
    KernelOptions {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        services: kinds.iter().map(|&kind| Spec { kind, port: 0 }).collect(),
        config: kernel::Config {
            workers,
            max_connections: 2048,
            ..kernel::Config::default()
        },
        settings: Default::default(),
        duration: None,
    }
}

fn connect(a: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn echo_over_loopback() {
    let server = start_kernel(&options(&[Kind::Echo], 2)).unwrap();
    let a = server.local_addrs()[0];
    let mut conns: Vec<_> = (0..100).map(|_| connect(a)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("hello {i}\n").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert_eq!(line, format!("hello {i}\n"));
    }
    // A bulk transfer larger than every buffer on the way.
    let mut c = connect(a);
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 31) as u8).collect();
    let writer = {
        let (mut c, data) = (c.try_clone().unwrap(), data.clone());
        std::thread::spawn(move || c.write_all(&data).unwrap())
    };
    let mut back = vec![0; data.len()];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data);
    drop((conns, c));
    let stats = server.stop().unwrap();
    assert_eq!(stats.accepted, 101);
}

fn read_responses(c: &mut TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() < n {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0, "EOF after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn http_pipelined_client_curl_and_refusals() {
    let server = start_kernel(&options(&[Kind::Http], 2)).unwrap();
    let a = server.local_addrs()[0];
    let mut c = connect(a);
    let req = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(1000);
    c.write_all(&req).unwrap();
    let got = read_responses(&mut c, 1000);
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 1000);
    assert_eq!(got.matches("Hello, World!").count(), 1000);

    for (req, status) in [
        (&b"BAD\x01 / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 400"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
            "HTTP/1.1 413",
        ),
    ] {
        let mut c = connect(a);
        c.write_all(req).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap(); // the server closes
        assert!(got.starts_with(status), "{got:?}");
    }
    let mut c = connect(a);
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000));
    c.write_all(long.as_bytes()).unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 431"), "{got:?}");

    let curl = std::process::Command::new("curl")
        .args([
            "-s",
            "-i",
            "--max-time",
            "5",
            &format!("http://{a}/"),
            &format!("http://{a}/x"),
        ])
        .output();
    match curl {
        Ok(out) if out.status.success() => {
            let body = String::from_utf8_lossy(&out.stdout);
            assert_eq!(body.matches("HTTP/1.1 200 OK").count(), 2, "{body}");
            let head = std::process::Command::new("curl")
                .args(["-s", "-I", "--max-time", "5", &format!("http://{a}/")])
                .output()
                .unwrap();
            let head = String::from_utf8_lossy(&head.stdout);
            assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("Content-Length: 13"));
        }
        Ok(out) => panic!("curl failed: {out:?}"),
        Err(e) => println!("curl not available ({e}): skipped (scripts/bootstrap installs it)"),
    }
    server.stop().unwrap();
}

#[test]
fn push_fanout_reaches_every_subscriber_on_every_worker() {
    const N: usize = 1000;
    let server = start_kernel(&options(&[Kind::Push], 2)).unwrap();
    let a = server.local_addrs()[0];
    let mut subs: Vec<_> = (0..N).map(|_| BufReader::new(connect(a))).collect();
    for s in &mut subs {
        s.get_mut().write_all(b"SUB room\nPING\n").unwrap();
    }
    for s in &mut subs {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        assert_eq!(line, "PONG\n");
    }
    let fanout = server.fanout();
    let t = Instant::now();
    assert_eq!(fanout.publish(push::Command::publish("room", b"hi")), 2);
    for s in &mut subs {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        assert_eq!(line, "MSG room hi\n");
    }
    let dt = t.elapsed();
    println!(
        "push fan-out (kernel, 2 workers): {N} subscribers received in {dt:?} ({:.0} msg/s incl. client reads)",
        N as f64 / dt.as_secs_f64()
    );
    // Exactly once: a heartbeat answer is the next line, no second MSG before it.
    for s in &mut subs {
        s.get_mut().write_all(b"PING\n").unwrap();
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        assert_eq!(line, "PONG\n");
    }
    let stats = server.stop().unwrap();
    assert_eq!(stats.commands, 2);
}
