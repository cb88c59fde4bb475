//! `c10m-bench reflect` on the veth test bed: the reflector on dut0 (198.18.0.10, core 1)
//! and the kernel's own TCP as its client in c10m-gen — the handshake, byte-exact echoes
//! and an HTTP response over one connection, the close by FIN, and the reflector's
//! counters at exit agreeing with what the client did.
//!
//! Privileged: skipped (with "skipped: needs root") when not root, failed under
//! `CI=true`. Holds the test bed lock for its whole run (see `common`).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Bed, Process, in_netns, privileged};

const TARGET: &str = "198.18.0.10:7";
/// The http service's keep-alive response with its default 13-byte body.
const HTTP_OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: c10m\r\nContent-Type: text/plain\r\n\
Content-Length: 13\r\n\r\nHello, World!";

fn connect() -> TcpStream {
    let addr: SocketAddr = TARGET.parse().unwrap();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("handshake");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn round_trip(s: &mut TcpStream, request: &[u8], expect: &[u8]) {
    s.write_all(request).unwrap();
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).expect("the response");
    assert_eq!(got, expect);
}

/// Half-closes and expects the reflector's FIN (end of stream) with nothing before it.
fn close(mut s: TcpStream) {
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("end of stream after our FIN");
    assert!(rest.is_empty(), "{rest:?}");
}

fn u(r: &serde_json::Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {field} in {r}"))
}

#[test]
fn the_reflector_answers_a_kernel_client_statelessly() {
    if !privileged() {
        return;
    }
    let Some(_bed) = Bed::up(1) else { return };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", "c10m-dut", "taskset", "-c", "1"])
        .arg(env!("CARGO_BIN_EXE_c10m-bench"))
        .args(["reflect", "--iface", "dut0", "--addr", "198.18.0.10/24"])
        .args(["--port", "7", "--cores", "1", "--secs", "60", "--json"]);
    let reflector = Process::spawn(cmd, "c10m-bench reflect");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match reflector.lines.recv_timeout(left) {
            Ok(l) if l == "ready" => break,
            Ok(_) => {}
            Err(_) => panic!("the reflector did not become ready"),
        }
    }

    let echoed = in_netns("c10m-gen", || {
        // Several requests on one connection: each answered byte for byte, in order.
        let mut s = connect();
        let mut echoed = 0;
        for (i, size) in [1usize, 100, 1000, 1448].into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            round_trip(&mut s, &data, &data);
            echoed += size;
        }
        close(s);
        // HTTP requests get the http service's response, one each.
        let mut s = connect();
        let get = b"GET / HTTP/1.1\r\nHost: 198.18.0.10\r\n\r\n";
        round_trip(&mut s, get, HTTP_OK);
        round_trip(&mut s, get, HTTP_OK);
        close(s);
        echoed as u64
    });

    let r = reflector.stop();
    eprintln!("{r}");
    assert_eq!(u(&r, "syn_acks"), 2, "{r}");
    assert_eq!(u(&r, "echoed_bytes"), echoed, "{r}");
    assert_eq!(u(&r, "http_responses"), 2, "{r}");
    assert_eq!(u(&r, "responses"), 6, "{r}");
    assert_eq!(u(&r, "fin_acks"), 2, "{r}");
    assert!(
        u(&r, "arp_replies") >= 1,
        "the client had to resolve us: {r}"
    );
    assert!(u(&r, "acks") >= 2, "the client acknowledged our FINs: {r}");
    assert_eq!(u(&r, "dropped"), 0, "{r}");
    assert_eq!(u(&r, "no_room"), 0, "{r}");
    // Every answer left: SYN-ACKs, responses, FIN-ACKs and ARP replies.
    let answers = ["syn_acks", "responses", "fin_acks", "arp_replies"]
        .iter()
        .map(|f| u(&r, f))
        .sum::<u64>();
    assert_eq!(u(&r, "tx_frames"), answers, "{r}");
    let seen = [
        "syn_acks",
        "responses",
        "fin_acks",
        "arp_replies",
        "resets",
        "acks",
        "ignored",
        "dropped",
    ]
    .iter()
    .map(|f| u(&r, f))
    .sum::<u64>();
    assert_eq!(u(&r, "frames"), seen, "every frame counted once: {r}");
}
