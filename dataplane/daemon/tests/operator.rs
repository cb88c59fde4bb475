//! Operator mistakes and what the daemon does about them, on the veth test bed: the
//! host's own address or an address without prefix refused at start-up, the interface
//! deleted or set down while running or draining (exit 3 within 2 s), and VLAN traffic
//! left to the kernel. Privileged: see `common`.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Bed, DUT_NS, Daemon, GEN_NS, in_netns, lines_of, ns_run, wait_timeout};

const TIMEOUT: Duration = Duration::from_secs(10);

/// `c10m run` in c10m-dut with `args`: it must fail; returns its exit code and its
/// stderr, which must be one line.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(!out.status.success(), "started with {args:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn the_hosts_own_address_and_a_bare_address_are_refused() {
    let Some(_bed) = Bed::up(1) else { return };
    let run = |addr| ["--iface", "dut0", "--addr", addr, "--service", "echo:7"];

    // 198.18.0.2/24 is dut0's own address in c10m-dut.
    let (code, e) = refused(&run("198.18.0.2/24"));
    assert_eq!(code, 1);
    assert_eq!(
        e,
        "c10m: 198.18.0.2 is already an address of this host (dut0): the dataplane needs an \
         address of its own — pick another in 198.18.0.0/24, or remove it with \
         'ip addr del 198.18.0.2/24 dev dut0'"
    );
    // Anywhere in the namespace, not only on the interface.
    let (_, e) = refused(&run("127.0.0.1/8"));
    assert!(
        e.contains("127.0.0.1 is already an address of this host (lo)"),
        "{e}"
    );
    // The host's networking was left alone: the kernel still answers on 198.18.0.2.
    let (ok, out) = ns_run(GEN_NS, &["ping", "-c", "1", "-W", "2", "198.18.0.2"]);
    assert!(ok, "{out}");

    let (code, e) = refused(&run("198.18.0.10"));
    assert_eq!(code, 2, "a bad command line");
    assert!(
        e.contains(
            "198.18.0.10 has no prefix length: write it as ADDR/PREFIX, e.g. 198.18.0.10/24"
        ),
        "{e}"
    );
    // An IPv6 address without its prefix gets the IPv6 form (in any build: the command
    // line is read before the build's families matter).
    let (code, e) = refused(&run("2001:2::10"));
    assert_eq!(code, 2, "a bad command line");
    assert!(
        e.contains("2001:2::10 has no prefix length: write it as ADDR/PREFIX, e.g. 2001:2::10/64"),
        "{e}"
    );
    let (_, e) = refused(&run("198.18.0.10/32"));
    assert!(
        e.contains("198.18.0.10/32") && e.contains("198.18.0.10/24"),
        "{e}"
    );

    // The configuration file says the same, naming its key.
    let path = std::env::temp_dir().join(format!("c10m-operator-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "iface = \"dut0\"\naddr = \"198.18.0.10\"\nservices = [\"echo:7\"]\n",
    )
    .unwrap();
    let (code, e) = refused(&["--config", path.to_str().unwrap()]);
    std::fs::write(
        &path,
        "iface = \"dut0\"\naddr = \"198.18.0.2/24\"\nservices = [\"echo:7\"]\n",
    )
    .unwrap();
    let (code2, e2) = refused(&["--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 1);
    assert!(
        e.contains("`addr`") && e.contains("198.18.0.10 has no prefix length"),
        "{e}"
    );
    assert_eq!(code2, 1);
    assert!(
        e2.contains("198.18.0.2 is already an address of this host (dut0)"),
        "{e2}"
    );
}

/// When the interface breaks: while serving, or while a SIGTERM's drain waits out a
/// 30 s grace period for a client that holds its end open.
#[derive(Clone, Copy, PartialEq)]
enum When {
    Serving,
    Draining,
}

/// Starts the daemon, runs `break_it` in c10m-dut once it is ready (`when`), and checks
/// that it exits with status 3 within 2 s, its message as the one line on stderr and its
/// report on stdout.
fn exits_when(break_it: &[&str], when: When) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", DUT_NS, env!("CARGO_BIN_EXE_c10m"), "run"])
        .args(["--iface", "dut0", "--addr", "198.18.0.10/24"])
        .args(["--service", "echo:7", "--max-conns", "1024", "--mgmt", ""])
        .args(["--grace", "30"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let ready = lines.recv_timeout(Duration::from_secs(15));
    assert_eq!(ready.as_deref(), Ok("ready"));
    // An open connection must not hold the exit back for the grace period.
    let mut conn = in_netns(GEN_NS, || {
        TcpStream::connect_timeout(&(common::SERVICE, 7).into(), TIMEOUT).unwrap()
    });
    if when == When::Draining {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        // The daemon's FIN arrives; the client keeps its end open, so the drain waits.
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(conn.read(&mut [0u8; 8]).unwrap(), 0, "the daemon's FIN");
        assert!(child.try_wait().unwrap().is_none(), "exited in its grace");
    }

    let (ok, out) = ns_run(DUT_NS, break_it);
    assert!(ok, "{break_it:?}: {out}");
    let started = Instant::now();
    let status = wait_timeout(&mut child, Duration::from_secs(5));
    let took = started.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    drop(conn);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running 5 s after {break_it:?}; stderr: {err}");
    };
    eprintln!("{break_it:?}: exit {status} after {took:?}");
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        err.trim(),
        "c10m: interface dut0 went away (deleted or down): exiting; restart when it is back"
    );
    let report: Vec<String> = lines.try_iter().filter(|l| l.starts_with('{')).collect();
    assert_eq!(report.len(), 1, "the report on stdout: {report:?}");
    let report: serde_json::Value = serde_json::from_str(&report[0]).unwrap();
    assert_eq!(report["totals"]["accepted"], 1, "{report}");
}

#[test]
fn the_interface_deleted_while_running_ends_the_daemon() {
    let Some(_bed) = Bed::up(1) else { return };
    exits_when(&["ip", "link", "del", "dut0"], When::Serving);
}

#[test]
fn the_interface_set_down_while_running_ends_the_daemon() {
    let Some(_bed) = Bed::up(1) else { return };
    exits_when(&["ip", "link", "set", "dut0", "down"], When::Serving);
}

#[test]
fn the_interface_deleted_during_a_drain_ends_its_grace() {
    let Some(_bed) = Bed::up(1) else { return };
    exits_when(&["ip", "link", "del", "dut0"], When::Draining);
}

/// A VLAN (id 100) over the veth pair: gen0.100 198.18.1.1/24, dut0.100 198.18.1.2/24.
/// False if this kernel has no 802.1Q (`CONFIG_VLAN_8021Q`), as some VMs' do not.
fn vlan_up() -> bool {
    for (ns, dev, link, addr) in [
        (GEN_NS, "gen0.100", "gen0", "198.18.1.1/24"),
        (DUT_NS, "dut0.100", "dut0", "198.18.1.2/24"),
    ] {
        let add = [
            "ip", "link", "add", "link", link, "name", dev, "type", "vlan", "id", "100",
        ];
        let (ok, out) = ns_run(ns, &add);
        if !ok && out.contains("Unknown device type") {
            eprintln!("no 802.1Q in this kernel: the host-VLAN half of the test does not run");
            return false;
        }
        assert!(ok, "{add:?} in {ns}: {out}");
        for cmd in [
            &["ip", "addr", "add", addr, "dev", dev][..],
            &["ip", "link", "set", dev, "up"],
        ] {
            let (ok, out) = ns_run(ns, cmd);
            assert!(ok, "{cmd:?} in {ns}: {out}");
        }
    }
    true
}

/// Ping and a TCP exchange from c10m-gen to a listener of dut0.100's kernel, tagged.
fn kernel_vlan_works() {
    let (ok, out) = ns_run(
        GEN_NS,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.1.2"],
    );
    assert!(ok, "ping over the VLAN: {out}");
    common::kernel_echo([198, 18, 1, 2].into(), b"tagged, ok?");
}

/// An Ethernet frame from gen0 to dut0 with one tag (`tpid` 0x8100 or 0x88a8, VLAN 100).
fn tagged(tpid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0xc6, 0x12, 0, 0x02, 0x02, 0, 0xc6, 0x12, 0, 0x01];
    f.extend(tpid.to_be_bytes());
    f.extend(100u16.to_be_bytes());
    f.extend(ethertype.to_be_bytes());
    f.extend(payload);
    f
}

/// An ARP request from 198.18.0.1 for `target` (RFC 826).
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0xc6, 0x12, 0, 0x01];
    p.extend([198, 18, 0, 1]);
    p.extend([0; 6]);
    p.extend(target);
    p
}

/// A TCP SYN from 198.18.0.1:40000 to 198.18.0.10:7 (checksums left zero: the point is
/// where the frame goes, and the stack would count a bad one rather than drop it silently).
fn syn_to_service() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 10,
    ];
    p.extend(40000u16.to_be_bytes());
    p.extend(7u16.to_be_bytes());
    p.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

/// Writes `frames` to gen0 through an AF_PACKET socket in c10m-gen.
fn send_raw(frames: &[Vec<u8>]) {
    in_netns(GEN_NS, || {
        // SAFETY: socket(2) with constant arguments; checked, then owned by `fd`.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(c"gen0".as_ptr()) };
        assert!(index > 0, "gen0 in c10m-gen");
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        for f in frames {
            // SAFETY: `f` and `to` are valid for the lengths given, for the whole call.
            let n = unsafe {
                libc::sendto(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
        }
    });
}

#[test]
fn vlan_traffic_stays_with_the_kernel() {
    let Some(_bed) = Bed::up(1) else { return };
    let host_vlan = vlan_up();
    let daemon = Daemon::start(&[]);
    if host_vlan {
        // The host's VLAN interface works while the dataplane runs.
        kernel_vlan_works();
    }

    // Tagged frames for the service address, which the old program steered to the
    // stack (where they died as an unknown EtherType): they go to the kernel now.
    let frames = [
        tagged(0x8100, 0x0806, &arp_request([198, 18, 0, 10])),
        tagged(0x8100, 0x0806, &arp_request([198, 18, 0, 10])),
        tagged(0x8100, 0x0800, &syn_to_service()),
        tagged(0x8100, 0x0800, &syn_to_service()),
        tagged(0x88a8, 0x0806, &arp_request([198, 18, 0, 10])),
    ];
    send_raw(&frames);
    // Untagged, the service still answers (and the frames above had time to arrive).
    let (ok, out) = ns_run(GEN_NS, &["ping", "-c", "2", "-W", "2", "198.18.0.10"]);
    assert!(ok, "{out}");

    let report = daemon.stop();
    common::assert_clean(&report);
    let vlan = report["xdp"]["vlan"].as_u64().unwrap();
    if host_vlan {
        // ARP, 3 pings and the TCP exchange were tagged too.
        assert!(vlan >= frames.len() as u64 + 6, "{}", report["xdp"]);
    } else {
        assert_eq!(vlan, frames.len() as u64, "{}", report["xdp"]);
    }
    let stack = &report["workers"][0]["stack"];
    assert_eq!(
        stack["drops"]["ethertype"], 0,
        "the stack saw tagged frames: {stack}"
    );
}
