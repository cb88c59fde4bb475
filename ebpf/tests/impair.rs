//! The impairment filter on a throw-away veth bed: a known fraction of the frames
//! leaving the generator (egress) or arriving at it (ingress) is dropped, its counters
//! account for every lost ping, a new rate applies in place, the two hooks are
//! independent, and `off` restores a clean path; a TCP stream through it is counted
//! frame by frame (one segment per buffer), not by GSO or GRO buffer. Privileged: see
//! `common`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use c10m_ebpf::{Hook, ImpairStatus, Impairment, LossRate};
use common::{Bed, DUT_ADDR, in_netns, run};

/// Sends `count` pings from the generator 1 ms apart and returns (sent, answered).
fn pings(bed: &Bed, count: u32) -> (u64, u64) {
    let count = count.to_string();
    let dut = DUT_ADDR.to_string();
    // ping exits 1 when some replies are missing: the summary line is what counts.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.gen_ns, "ping", "-q", "-n"])
        .args(["-i", "0.001", "-W", "1", "-c", &count, &dut])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {text:?}"));
    let number = |word: &str| -> u64 {
        let before = &summary[..summary.find(word).unwrap()];
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    (number("packets transmitted"), number("received"))
}

/// Sends `bytes` over one TCP connection from the generator to a listener in the dut
/// or, `to_gen`, from the dut to the generator (which connects); the receiver checks
/// every byte.
fn send_tcp(bed: &Bed, bytes: usize, to_gen: bool) {
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let listener = in_netns(&bed.dut_ns, || TcpListener::bind((DUT_ADDR, 9100))).unwrap();
    std::thread::scope(|s| {
        let data = &data;
        let dut = s.spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            if to_gen {
                conn.write_all(data).unwrap();
            } else {
                conn.read_to_end(&mut got).unwrap();
            }
            got
        });
        let got = in_netns(&bed.gen_ns, || {
            let mut conn = TcpStream::connect((DUT_ADDR, 9100)).unwrap();
            let mut got = Vec::new();
            if to_gen {
                conn.read_to_end(&mut got).unwrap();
            } else {
                conn.write_all(data).unwrap();
            }
            got
        });
        let got = if to_gen { got } else { dut.join().unwrap() };
        assert!(
            got == *data,
            "{} of {bytes} bytes, or other bytes",
            got.len()
        );
    });
}

fn status(bed: &Bed, hook: Hook) -> Option<ImpairStatus> {
    in_netns(&bed.gen_ns, || Impairment::status(&bed.gen_if, hook)).unwrap()
}

fn set(bed: &Bed, hook: Hook, loss: &str) -> ImpairStatus {
    let loss: LossRate = loss.parse().unwrap();
    in_netns(&bed.gen_ns, || Impairment::set(&bed.gen_if, hook, loss)).unwrap()
}

fn off(bed: &Bed, hook: Hook) -> Option<ImpairStatus> {
    in_netns(&bed.gen_ns, || Impairment::off(&bed.gen_if, hook)).unwrap()
}

/// `ip -d link show` of the generator's interface.
fn gen_link(bed: &Bed) -> String {
    run(
        "ip",
        &["-n", &bed.gen_ns, "-d", "link", "show", "dev", &bed.gen_if],
    )
    .unwrap()
}

/// `tc filter show` of the generator's interface on `hook`.
fn filters(bed: &Bed, hook: Hook) -> String {
    run(
        "tc",
        &[
            "-n",
            &bed.gen_ns,
            "filter",
            "show",
            "dev",
            &bed.gen_if,
            hook.name(),
        ],
    )
    .unwrap()
}

/// Whether the generator's interface has GRO on, as `ethtool -k` says.
fn gen_gro(bed: &Bed) -> bool {
    let shown = run(
        "ip",
        &["netns", "exec", &bed.gen_ns, "ethtool", "-k", &bed.gen_if],
    )
    .unwrap();
    shown.contains("generic-receive-offload: on")
}

/// Checks what 1,000 pings at 20% loss on `hook` did to the counters: every lost ping is
/// a dropped request (egress) or reply (ingress), and the loss is near 20%. Returns the
/// counters after.
fn lose_pings(bed: &Bed, hook: Hook, before: ImpairStatus) -> ImpairStatus {
    let (sent, answered) = pings(bed, 1000);
    assert_eq!(sent, 1000);
    let after = status(bed, hook).expect("the filter is still attached");
    let (seen, dropped) = (after.seen - before.seen, after.dropped - before.dropped);
    let lost = sent - answered;
    // The filter may also have drawn a few IPv6 frames (router solicitations, MLD).
    assert!(seen >= sent, "{hook:?}: {after:?}");
    assert!(dropped >= lost, "{hook:?}: {lost} pings lost, {after:?}");
    assert!(
        dropped - lost <= seen - sent,
        "{hook:?}: {lost} pings lost, {after:?}"
    );
    // Binomial(1000, 0.2): mean 200, sd 12.6; ±6 sd.
    assert!(
        (125..=275).contains(&lost),
        "{hook:?}: {lost} of 1000 pings lost at 20%"
    );
    after
}

#[test]
fn drops_a_known_fraction_counts_it_and_off_restores() {
    let Some(bed) = Bed::new() else { return };
    assert!(
        bed.ping_from_gen(DUT_ADDR),
        "the bed does not answer before any loss"
    );
    assert_eq!(status(&bed, Hook::Egress), None);

    let first = set(&bed, Hook::Egress, "20%");
    assert_eq!((first.seen, first.dropped), (0, 0));
    assert_eq!(first.loss.to_string(), "20%");
    assert!(
        gen_link(&bed).contains("gso_max_segs 1 "),
        "{}",
        gen_link(&bed)
    );
    let shown = filters(&bed, Hook::Egress);
    assert!(
        shown.contains("impair") && shown.contains("direct-action"),
        "{shown}"
    );
    assert_eq!(status(&bed, Hook::Ingress), None);

    let after = lose_pings(&bed, Hook::Egress, first);

    // A new rate applies in place: the counters go on, nothing more is lost.
    let none = in_netns(&bed.gen_ns, || {
        Impairment::set(&bed.gen_if, Hook::Egress, LossRate::NONE)
    })
    .unwrap();
    assert_eq!(
        (none.loss, none.seen, none.dropped),
        (LossRate::NONE, after.seen, after.dropped)
    );
    assert_eq!(pings(&bed, 100), (100, 100));
    let clean = status(&bed, Hook::Egress).unwrap();
    assert!(
        clean.seen >= after.seen + 100 && clean.dropped == after.dropped,
        "{clean:?}"
    );

    // 1 MiB of TCP: at least one counted frame per MSS, not one per GSO buffer.
    send_tcp(&bed, 1 << 20, false);
    let streamed = status(&bed, Hook::Egress).unwrap();
    assert!(
        streamed.seen - clean.seen >= (1 << 20) / 1460,
        "{clean:?} then {streamed:?}"
    );
    assert_eq!(streamed.dropped, clean.dropped);

    assert_eq!(off(&bed, Hook::Egress), Some(streamed));
    assert_eq!(status(&bed, Hook::Egress), None);
    assert!(!filters(&bed, Hook::Egress).contains("impair"));
    assert!(
        gen_link(&bed).contains("gso_max_segs 65535 "),
        "{}",
        gen_link(&bed)
    );
    assert_eq!(off(&bed, Hook::Egress), None);
    assert_eq!(pings(&bed, 100), (100, 100));

    let missing = in_netns(&bed.gen_ns, || {
        Impairment::status("c10m-nope0", Hook::Egress)
    })
    .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "no interface named c10m-nope0: check `ip link`"
    );
}

#[test]
fn drops_toward_the_generator_frame_by_frame_and_apart_from_egress() {
    let Some(bed) = Bed::new() else { return };
    // As on the test bed: GRO on at the generator, no super-frames from the dut.
    for (ns, iface, features) in [
        (&bed.gen_ns, &bed.gen_if, "gro on"),
        (&bed.dut_ns, &bed.dut_if, "tso off gso off"),
    ] {
        let mut args = vec!["netns", "exec", ns, "ethtool", "-K", iface];
        args.extend(features.split(' '));
        run("ip", &args).unwrap();
    }
    assert!(gen_gro(&bed));

    let first = set(&bed, Hook::Ingress, "20%");
    assert_eq!((first.seen, first.dropped), (0, 0));
    assert!(!gen_gro(&bed), "GRO would merge frames before the filter");
    assert!(filters(&bed, Hook::Ingress).contains("impair"));
    assert!(!filters(&bed, Hook::Egress).contains("impair"));
    assert_eq!(status(&bed, Hook::Egress), None);

    // Lost replies, not requests: the replies are what arrives.
    let after = lose_pings(&bed, Hook::Ingress, first);

    // Both hooks at once, each with its own counters: a stream from the dut loses some
    // of its frames on the way in and some of the generator's ACKs on the way out, and
    // still arrives whole; ingress counts one frame per segment, GRO off.
    set(&bed, Hook::Ingress, "5%");
    let out = set(&bed, Hook::Egress, "5%");
    assert_eq!((out.seen, out.dropped), (0, 0));
    send_tcp(&bed, 1 << 20, true);
    let (inn, out) = (
        status(&bed, Hook::Ingress).unwrap(),
        status(&bed, Hook::Egress).unwrap(),
    );
    assert!(
        inn.seen - after.seen >= (1 << 20) / 1460,
        "{after:?} then {inn:?}"
    );
    assert!(inn.dropped > after.dropped, "{after:?} then {inn:?}");
    assert!(out.seen > 0 && out.dropped > 0, "{out:?}");
    // The segments lost are near 5% of those seen: within about ±4 standard deviations for ~750 frames.
    let lost = (inn.dropped - after.dropped) as f64 / (inn.seen - after.seen) as f64;
    assert!(
        (0.015..=0.09).contains(&lost),
        "{lost} of the frames in lost"
    );

    // Off one way leaves the other.
    assert_eq!(off(&bed, Hook::Ingress), Some(inn));
    assert!(gen_gro(&bed), "off turns GRO on again");
    assert_eq!(status(&bed, Hook::Ingress), None);
    assert!(status(&bed, Hook::Egress).is_some());
    assert!(filters(&bed, Hook::Egress).contains("impair"));
    assert!(off(&bed, Hook::Egress).is_some());
    assert_eq!(pings(&bed, 100), (100, 100));
}
