//! The built-in services of `c10m-apps` on the dataplane, answering real kernel clients
//! from c10m-gen: http with curl (status, body length, HEAD, keep-alive), push with a
//! Rust client (SUB, PING → PONG, `c10m ctl publish` reaching each subscriber exactly
//! once), and the close of open connections at shutdown. Privileged: see `common`.

mod common;

use std::io::Read;

use common::{Bed, Daemon, GEN_NS, PushClient, SERVICE, assert_clean, in_netns, ns_run};

const SOCK: &str = "/tmp/c10m-test-services/c10m.sock";
const BODY: usize = 1000;

fn url() -> String {
    format!("http://{SERVICE}/")
}

fn ctl(args: &[&str]) -> (bool, String) {
    common::ctl(SOCK, args)
}

#[test]
fn http_and_push_on_the_dataplane_answer_kernel_clients() {
    let Some(_bed) = Bed::up(1) else { return };
    let _ = std::fs::create_dir_all("/tmp/c10m-test-services");
    let body = BODY.to_string();
    let daemon = Daemon::start(&[
        "--service",
        "http:80",
        "--service",
        "push:5222",
        "--http-body",
        &body,
        "--mgmt",
        SOCK,
    ]);

    // http with curl: status and body length, HEAD, and keep-alive (two requests, one
    // connection).
    let (ok, out) = ns_run(
        GEN_NS,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url(),
        ],
    );
    assert!(ok, "curl: {out}");
    assert_eq!(out.trim(), format!("200 {BODY}"));
    let (ok, out) = ns_run(GEN_NS, &["curl", "-sS", "--max-time", "10", "-I", &url()]);
    assert!(ok, "curl -I: {out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("content-length: {BODY}")),
        "{out}"
    );
    let (ok, out) = ns_run(
        GEN_NS,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}:%{size_download}:%{num_connects} ",
            &url(),
            &url(),
        ],
    );
    assert!(ok, "curl keep-alive: {out}");
    assert_eq!(
        out.trim(),
        format!("200:{BODY}:1 200:{BODY}:0"),
        "the second request reuses the connection"
    );

    // push: heartbeat, subscriptions, and a publish from the control path.
    let (mut subs, mut other) = in_netns(GEN_NS, || {
        let subs: Vec<PushClient> = (0..5).map(|_| PushClient::connect()).collect();
        (subs, PushClient::connect())
    });
    for s in &mut subs {
        s.ping();
        s.send("SUB news");
        s.ping();
    }
    other.send("SUB sport");
    other.ping();
    let (ok, out) = ctl(&["--json", "publish", "news", "hello world"]);
    assert!(ok, "ctl publish: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["publish"]["delivered"], 5, "{v}");
    let (ok, out) = ctl(&["publish", "news"]);
    assert!(!ok && out.contains("TOPIC MESSAGE"), "{out}");
    for (i, s) in subs.iter_mut().enumerate() {
        assert_eq!(s.line(), "MSG news hello world\n", "subscriber {i}");
        s.ping(); // exactly once: the next line is the PONG
    }
    other.ping(); // not subscribed: nothing came before the PONG

    // Shutdown closes the connections still open with a FIN.
    drop(subs);
    let mut held = other.into_stream();
    let reader = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let r = held.read_to_end(&mut rest);
        (r.map_err(|e| e.kind()), rest)
    });
    let report = daemon.stop();
    let (r, rest) = reader.join().unwrap();
    assert_eq!(r, Ok(0), "a FIN from the dataplane at shutdown");
    assert!(rest.is_empty());
    assert_clean(&report);
    let svc = &report["workers"][0]["echo"];
    assert!(svc["http_requests"].as_u64().unwrap() >= 4, "{svc}");
    assert_eq!(svc["push_delivered"], 5, "{svc}");
    assert_eq!(svc["push_published"], 1, "{svc}");
    assert!(svc["accepted"].as_u64().unwrap() >= 9, "{svc}");
}
