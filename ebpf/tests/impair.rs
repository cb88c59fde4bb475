//! The impairment filter on a throw-away veth bed: a known fraction of the frames
//! leaving the generator is dropped, its counters account for every lost ping, a new
//! rate applies in place, and `off` restores a clean path; a TCP stream through it is
//! counted frame by frame (one segment per buffer), not by GSO buffer. Privileged: see `common`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use c10m_ebpf::{ImpairStatus, Impairment, LossRate};
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

/// Sends `bytes` over one TCP connection from the generator to a listener in the dut.
fn send_tcp(bed: &Bed, bytes: usize) {
    let listener = in_netns(&bed.dut_ns, || TcpListener::bind((DUT_ADDR, 9100))).unwrap();
    std::thread::scope(|s| {
        let sink = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got.len()
        });
        in_netns(&bed.gen_ns, || {
            let mut conn = TcpStream::connect((DUT_ADDR, 9100)).unwrap();
            conn.write_all(&vec![7u8; bytes]).unwrap();
        });
        assert_eq!(sink.join().unwrap(), bytes);
    });
}

fn status(bed: &Bed) -> Option<ImpairStatus> {
    in_netns(&bed.gen_ns, || Impairment::status(&bed.gen_if)).unwrap()
}

#[test]
fn drops_a_known_fraction_counts_it_and_off_restores() {
    let Some(bed) = Bed::new() else { return };
    assert!(
        bed.ping_from_gen(DUT_ADDR),
        "the bed does not answer before any loss"
    );
    assert_eq!(status(&bed), None);

    let loss: LossRate = "20%".parse().unwrap();
    let set = in_netns(&bed.gen_ns, || Impairment::set(&bed.gen_if, loss)).unwrap();
    assert_eq!((set.loss, set.seen, set.dropped), (loss, 0, 0));
    let link = || {
        run(
            "ip",
            &["-n", &bed.gen_ns, "-d", "link", "show", "dev", &bed.gen_if],
        )
    };
    assert!(
        link().unwrap().contains("gso_max_segs 1 "),
        "{}",
        link().unwrap()
    );
    let filters = || {
        run(
            "tc",
            &[
                "-n",
                &bed.gen_ns,
                "filter",
                "show",
                "dev",
                &bed.gen_if,
                "egress",
            ],
        )
    };
    let shown = filters().unwrap();
    assert!(
        shown.contains("impair") && shown.contains("direct-action"),
        "{shown}"
    );

    let (sent, answered) = pings(&bed, 1000);
    assert_eq!(sent, 1000);
    let after = status(&bed).expect("the filter is still attached");
    let lost = sent - answered;
    // Every lost ping is a dropped request (replies leave the dut, never filtered); the
    // filter may also have drawn a few IPv6 frames (router solicitations, MLD).
    assert!(after.seen >= sent, "{after:?}");
    assert!(after.dropped >= lost, "{lost} pings lost, {after:?}");
    assert!(
        after.dropped - lost <= after.seen - sent,
        "{lost} pings lost, {after:?}"
    );
    // Binomial(1000, 0.2): mean 200, sd 12.6; ±6 sd.
    assert!(
        (125..=275).contains(&lost),
        "{lost} of 1000 pings lost at 20%"
    );

    // A new rate applies in place: the counters go on, nothing more is lost.
    let none = in_netns(&bed.gen_ns, || Impairment::set(&bed.gen_if, LossRate::NONE)).unwrap();
    assert_eq!(
        (none.loss, none.seen, none.dropped),
        (LossRate::NONE, after.seen, after.dropped)
    );
    assert_eq!(pings(&bed, 100), (100, 100));
    let clean = status(&bed).unwrap();
    assert!(
        clean.seen >= after.seen + 100 && clean.dropped == after.dropped,
        "{clean:?}"
    );

    // 1 MiB of TCP: at least one counted frame per MSS, not one per GSO buffer.
    send_tcp(&bed, 1 << 20);
    let streamed = status(&bed).unwrap();
    assert!(
        streamed.seen - clean.seen >= (1 << 20) / 1460,
        "{clean:?} then {streamed:?}"
    );
    assert_eq!(streamed.dropped, clean.dropped);

    let last = in_netns(&bed.gen_ns, || Impairment::off(&bed.gen_if)).unwrap();
    assert_eq!(last, Some(streamed));
    assert_eq!(status(&bed), None);
    assert!(!filters().unwrap().contains("impair"));
    assert!(
        link().unwrap().contains("gso_max_segs 65535 "),
        "{}",
        link().unwrap()
    );
    assert_eq!(
        in_netns(&bed.gen_ns, || Impairment::off(&bed.gen_if)).unwrap(),
        None
    );
    assert_eq!(pings(&bed, 100), (100, 100));

    let missing = in_netns(&bed.gen_ns, || Impairment::status("c10m-nope0")).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "no interface named c10m-nope0: check `ip link`"
    );
}
