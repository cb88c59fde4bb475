//! Loading through the verifier, attaching in each mode, refusals, and what is left on
//! the interface when the attaching process is killed. Privileged: see `common`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use c10m_ebpf::{Error, Steering, XdpMode};
use common::{Bed, in_netns};

#[test]
fn attaches_native_and_generic_on_veth() {
    let Some(bed) = Bed::new() else { return };
    for (asked, want, kind) in [
        (XdpMode::Native, XdpMode::Native, "xdp"),
        (XdpMode::Generic, XdpMode::Generic, "xdpgeneric"),
        (XdpMode::Auto, XdpMode::Native, "xdp"),
    ] {
        let steering = in_netns(&bed.dut_ns, || Steering::attach(&bed.dut_if, asked))
            .unwrap_or_else(|e| panic!("{asked}: {e}"));
        assert_eq!(steering.mode(), want);
        assert_eq!(steering.ifname(), bed.dut_if);
        let link = bed.dut_link();
        assert_eq!(common::xdp_kind(&link).as_deref(), Some(kind), "{link}");
        assert!(
            link.contains(&format!("id {}", steering.prog_id())),
            "{link}"
        );
        let ifindex =
            common::ip(&["-n", &bed.dut_ns, "-o", "link", "show", "dev", &bed.dut_if]).unwrap();
        assert!(
            ifindex.starts_with(&format!("{}:", steering.ifindex())),
            "{ifindex}"
        );
        if asked == XdpMode::Native {
            let prog = common::run(
                "bpftool",
                &["prog", "show", "id", &steering.prog_id().to_string()],
            );
            eprintln!("loaded: {}", prog.unwrap_or_else(|e| e).trim());
        }
        drop(steering);
        assert_eq!(bed.dut_xdp(), None, "dropping Steering detaches");
    }
}

/// veth reports its XDP features and no AF_XDP zero-copy among them; an interface that
/// does not exist has none to report.
#[test]
fn veth_says_it_does_no_zero_copy() {
    let Some(bed) = Bed::new() else { return };
    in_netns(&bed.dut_ns, || {
        assert_eq!(c10m_ebpf::xsk_zero_copy(&bed.dut_if), Some(false));
        assert_eq!(c10m_ebpf::xsk_zero_copy("c10m-none0"), None);
    });
}

#[test]
fn refuses_a_second_program() {
    let Some(bed) = Bed::new() else { return };
    in_netns(&bed.dut_ns, || {
        let _first = Steering::attach(&bed.dut_if, XdpMode::Native).unwrap();
        for mode in [XdpMode::Native, XdpMode::Generic, XdpMode::Auto] {
            match Steering::attach(&bed.dut_if, mode) {
                Err(e @ Error::AlreadyAttached { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("ip link set dev {} xdp off", bed.dut_if)),
                        "{msg}"
                    );
                }
                other => panic!("{mode}: want AlreadyAttached, got {other:?}"),
            }
        }
    });
    assert_eq!(bed.dut_xdp(), None);
}

#[test]
fn native_unsupported_is_an_error_and_auto_falls_back() {
    // Loopback has no native XDP; use the bed's own `lo`, never the host's.
    let Some(bed) = Bed::new() else { return };
    in_netns(&bed.dut_ns, || {
        match Steering::attach("lo", XdpMode::Native) {
            Err(e @ Error::NativeUnsupported { .. }) => assert_eq!(
                e.to_string(),
                "driver of lo does not support native XDP: use --xdp-mode generic or auto"
            ),
            other => panic!("want NativeUnsupported, got {other:?}"),
        }
        let steering = Steering::attach("lo", XdpMode::Auto).unwrap();
        assert_eq!(steering.mode(), XdpMode::Generic);
    });
}

#[test]
fn missing_interface_says_what_to_check() {
    // Needs no privileges: the name is resolved before anything is loaded.
    match Steering::attach("c10m-missing0", XdpMode::Auto) {
        Err(e @ Error::NoSuchInterface { .. }) => {
            assert_eq!(
                e.to_string(),
                "no interface named c10m-missing0: check `ip link`"
            )
        }
        other => panic!("want NoSuchInterface, got {other:?}"),
    }
    assert!(matches!(
        Steering::attach("bad\0name", XdpMode::Generic),
        Err(Error::NoSuchInterface { .. })
    ));
}

#[test]
fn without_capabilities_says_what_is_needed() {
    if !common::privileged() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Root without any capability: the loader must refuse before libbpf tries.
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "child_without_capabilities",
            "--nocapture",
        ])
        .env("C10M_CHILD", "1")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return common::skip(&format!("setpriv: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("child: loading XDP needs root or CAP_BPF+CAP_NET_ADMIN"),
        "{stdout}"
    );
}

/// Run by `without_capabilities_says_what_is_needed` in a child with no capabilities.
#[test]
#[ignore = "a child process of another test"]
fn child_without_capabilities() {
    if std::env::var_os("C10M_CHILD").is_none() {
        return;
    }
    let err = Steering::attach("lo", XdpMode::Generic).unwrap_err();
    assert!(matches!(err, Error::PermissionDenied), "{err:?}");
    println!("child: {err}");
}

#[test]
fn killed_process_leaves_no_program() {
    let Some(bed) = Bed::new() else { return };
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "child_attach_and_hold",
            "--nocapture",
        ])
        .env("C10M_HOLD_NETNS", &bed.dut_ns)
        .env("C10M_HOLD_IF", &bed.dut_if)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut prog_id = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("child: attached prog ") {
            prog_id = Some(id.trim().to_owned());
            break;
        }
    }
    let Some(prog_id) = prog_id else {
        let _ = child.kill();
        panic!("child exited without attaching: {:?}", child.wait());
    };
    assert_eq!(bed.dut_xdp().as_deref(), Some("xdp"), "{}", bed.dut_link());

    child.kill().unwrap(); // SIGKILL: no destructor runs in the child
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.dut_xdp().is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(bed.dut_xdp(), None, "{}", bed.dut_link());
    let net = common::ip(&[
        "netns",
        "exec",
        &bed.dut_ns,
        "bpftool",
        "net",
        "show",
        "dev",
        &bed.dut_if,
    ]);
    let net = net.unwrap();
    assert!(
        !net.contains("steer"),
        "bpftool net still lists the program: {net}"
    );
    // And the program itself is gone from the kernel (freed after an RCU grace period).
    while common::run("bpftool", &["prog", "show", "id", &prog_id]).is_ok()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(common::run("bpftool", &["prog", "show", "id", &prog_id]).is_err());
}

/// Run by `killed_process_leaves_no_program` in a child process: attach, say so, wait
/// to be killed (and exit by itself after a minute if nobody does).
#[test]
#[ignore = "a child process of another test"]
fn child_attach_and_hold() {
    let (Some(ns), Some(ifname)) = (
        std::env::var_os("C10M_HOLD_NETNS"),
        std::env::var_os("C10M_HOLD_IF"),
    ) else {
        return;
    };
    let (ns, ifname) = (ns.into_string().unwrap(), ifname.into_string().unwrap());
    let steering = in_netns(&ns, || Steering::attach(&ifname, XdpMode::Native)).unwrap();
    println!("child: attached prog {}", steering.prog_id());
    std::thread::sleep(Duration::from_secs(60));
}
