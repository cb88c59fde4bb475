//! Real frames over the veth bed: the kernel's traffic passes untouched, the
//! dataplane's goes to a registered AF_XDP socket, or to the kernel when there is none.
//! Privileged: see `common`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use c10m_ebpf::{Counters, Error, Proto, Steering, XdpMode};
use common::{Bed, DUT_ADDR, DUT_MAC, GEN_ADDR, SERVICE, in_netns, sys::Xsk};

const UDP_PORT: u16 = 9000;
const TCP_PORT: u16 = 80;

/// Attaches in the bed's dut namespace and registers the service and its address.
fn steer(bed: &Bed, mode: XdpMode) -> Steering {
    let steering = in_netns(&bed.dut_ns, || Steering::attach(&bed.dut_if, mode)).unwrap();
    assert_eq!(steering.mode(), mode);
    steering.add_service(SERVICE, Proto::Udp, UDP_PORT).unwrap();
    steering.add_service(SERVICE, Proto::Tcp, TCP_PORT).unwrap();
    steering.add_address(SERVICE).unwrap();
    steering
}

/// Polls the counters until `done` holds (frames cross veth asynchronously) or 2 s pass.
fn counters_after(steering: &Steering, done: impl Fn(&Counters) -> bool) -> Counters {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let c = steering.counters().unwrap();
        if done(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `count` UDP datagrams from the generator to `SERVICE:port`.
fn send_udp(bed: &Bed, port: u16, payload: &[u8], count: usize) {
    in_netns(&bed.gen_ns, || {
        let socket = UdpSocket::bind((GEN_ADDR, 0)).unwrap();
        for _ in 0..count {
            socket.send_to(payload, (SERVICE, port)).unwrap();
        }
    });
}

/// Lets the generator reach `SERVICE` without ARP (nothing answers ARP without a socket).
fn static_neighbour(bed: &Bed) {
    let service = SERVICE.to_string();
    let args = [
        "-n",
        &bed.gen_ns,
        "neigh",
        "replace",
        &service,
        "lladdr",
        DUT_MAC,
        "dev",
        &bed.gen_if,
    ];
    common::ip(&args).unwrap();
}

fn kernel_traffic_passes(mode: XdpMode) {
    let Some(bed) = Bed::new() else { return };
    let steering = steer(&bed, mode);
    let before = steering.counters().unwrap();

    assert!(
        bed.ping_from_gen(DUT_ADDR),
        "ping to the kernel's address with XDP attached"
    );

    let listener = in_netns(&bed.dut_ns, || TcpListener::bind((DUT_ADDR, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let echoed = in_netns(&bed.gen_ns, || {
        let addr = SocketAddr::from((DUT_ADDR, port));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        conn.write_all(b"hello").unwrap();
        let mut buf = [0; 5];
        conn.read_exact(&mut buf).unwrap();
        buf
    });
    server.join().unwrap();
    assert_eq!(&echoed, b"hello");

    // ARP, 2 ICMP, at least 6 TCP segments, all for the kernel.
    let after = counters_after(&steering, |c| c.passed >= before.passed + 9);
    assert!(after.passed >= before.passed + 9, "{before:?} -> {after:?}");
    assert_eq!(
        (after.steered, after.no_xsk, after.dropped),
        (0, 0, 0),
        "{after:?}"
    );
}

#[test]
fn kernel_traffic_passes_native() {
    kernel_traffic_passes(XdpMode::Native);
}

#[test]
fn kernel_traffic_passes_generic() {
    kernel_traffic_passes(XdpMode::Generic);
}

#[test]
fn service_frames_without_a_socket_go_to_the_kernel() {
    let Some(bed) = Bed::new() else { return };
    let steering = steer(&bed, XdpMode::Native);

    // ARP for the service address is the dataplane's; with no socket the kernel gets
    // it, and does not own the address, so nobody answers.
    assert!(!bed.ping_from_gen(SERVICE));
    let c = counters_after(&steering, |c| c.no_xsk >= 1);
    assert!(c.no_xsk >= 1, "ARP requests count as no_xsk: {c:?}");

    static_neighbour(&bed);
    let before = steering.counters().unwrap();
    send_udp(&bed, UDP_PORT, b"service", 5);
    send_udp(&bed, UDP_PORT + 1, b"not a service", 3);
    let after = counters_after(&steering, |c| {
        c.no_xsk >= before.no_xsk + 5 && c.passed >= before.passed + 3
    });
    assert_eq!(after.no_xsk - before.no_xsk, 5, "{before:?} -> {after:?}");
    assert!(after.passed - before.passed >= 3, "{before:?} -> {after:?}");
    assert_eq!(after.steered, 0);

    // ICMP to the service address: no_xsk, and no answer.
    assert!(!bed.ping_from_gen(SERVICE));
    let icmp = counters_after(&steering, |c| c.no_xsk > after.no_xsk);
    assert_eq!(icmp.no_xsk - after.no_xsk, 1, "{icmp:?}");

    // A removed service is ordinary traffic again.
    steering
        .remove_service(SERVICE, Proto::Udp, UDP_PORT)
        .unwrap();
    send_udp(&bed, UDP_PORT, b"service", 2);
    let removed = counters_after(&steering, |c| c.passed >= icmp.passed + 2);
    assert_eq!(removed.no_xsk, icmp.no_xsk, "{removed:?}");
    assert!(matches!(
        steering.remove_service(SERVICE, Proto::Udp, UDP_PORT),
        Err(Error::NoSuchService { .. })
    ));
}

/// RFC 768/793 checksum over the IPv4 pseudo-header and the TCP/UDP segment.
fn l4_checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let segment = &ip[ihl..total];
    let words = |bytes: &[u8]| -> u32 {
        let word = |c: &[u8]| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        bytes.chunks(2).map(word).sum()
    };
    let mut sum = words(&ip[12..20]) + u32::from(ip[9]) + segment.len() as u32 + words(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

fn registered_socket_receives_service_frames(mode: XdpMode) {
    let Some(bed) = Bed::new() else { return };
    let steering = steer(&bed, mode);
    let xsk = in_netns(&bed.dut_ns, || Xsk::bind(steering.ifindex(), 0)).unwrap();
    steering.register_xsk(0, xsk.as_fd()).unwrap();

    static_neighbour(&bed);
    send_udp(&bed, UDP_PORT, b"c10m-steer-test", 1);
    let frame = xsk
        .recv(Duration::from_secs(2))
        .expect("the UDP datagram reaches the socket");
    assert_eq!(frame[12..14], [0x08, 0x00], "IPv4");
    assert_eq!(
        frame[14 + 16..14 + 20],
        SERVICE.octets(),
        "to the service address"
    );
    assert!(frame.ends_with(b"c10m-steer-test"), "{frame:02x?}");
    assert!(
        l4_checksum_ok(&frame),
        "a full UDP checksum (sender offload off): {frame:02x?}"
    );
    let c = counters_after(&steering, |c| c.steered >= 1);
    assert_eq!((c.steered, c.no_xsk), (1, 0), "{c:?}");

    // So do ICMP to the service address and ARP for it (unanswered here: no stack
    // reads the socket, so the pings fail).
    assert!(!bed.ping_from_gen(SERVICE));
    let echo = xsk
        .recv(Duration::from_secs(2))
        .expect("an ICMP echo reaches the socket");
    assert_eq!(
        (echo[12..14].to_vec(), echo[14 + 9]),
        (vec![0x08, 0x00], 1),
        "{echo:02x?}"
    );
    let service = SERVICE.to_string();
    common::ip(&[
        "-n",
        &bed.gen_ns,
        "neigh",
        "del",
        &service,
        "dev",
        &bed.gen_if,
    ])
    .unwrap();
    assert!(!bed.ping_from_gen(SERVICE));
    let arp = xsk
        .recv(Duration::from_secs(2))
        .expect("an ARP request reaches the socket");
    assert_eq!(arp[12..14], [0x08, 0x06], "ARP: {arp:02x?}");
    assert_eq!(
        arp[14 + 24..14 + 28],
        SERVICE.octets(),
        "ARP target: {arp:02x?}"
    );

    // The kernel's own traffic is unaffected by the socket.
    assert!(bed.ping_from_gen(DUT_ADDR));

    // Unregistered: back to the kernel, counted as no_xsk.
    steering.unregister_xsk(0).unwrap();
    static_neighbour(&bed);
    while xsk.recv(Duration::from_millis(100)).is_some() {} // ARP retries already queued
    let before = steering.counters().unwrap();
    send_udp(&bed, UDP_PORT, b"after", 2);
    let after = counters_after(&steering, |c| c.no_xsk >= before.no_xsk + 2);
    assert_eq!(after.no_xsk - before.no_xsk, 2, "{after:?}");
    assert_eq!(after.steered, before.steered);
    assert!(xsk.recv(Duration::from_millis(200)).is_none());
    let stats = xsk.stats().unwrap();
    assert_eq!(
        stats.rx_dropped, 0,
        "the fill ring had room for every frame"
    );

    // Closing a registered socket takes it out of the map.
    steering.register_xsk(0, xsk.as_fd()).unwrap();
    drop(xsk);
    send_udp(&bed, UDP_PORT, b"closed", 1);
    let closed = counters_after(&steering, |c| c.no_xsk > after.no_xsk);
    assert_eq!(
        (closed.no_xsk - after.no_xsk, closed.steered),
        (1, after.steered)
    );
}

#[test]
fn registered_socket_receives_service_frames_native() {
    registered_socket_receives_service_frames(XdpMode::Native);
}

#[test]
fn registered_socket_receives_service_frames_generic() {
    registered_socket_receives_service_frames(XdpMode::Generic);
}
