//! The built-in services of `c10m-apps` on the dataplane, answering real kernel clients
//! from c10m-gen: http with curl (status, body length, HEAD, keep-alive), push with a
//! Rust client (SUB, PING → PONG, `c10m ctl publish` reaching each subscriber exactly
//! once), and the close of open connections at shutdown — over IPv4, and in a build with
//! `--features ipv6` over IPv6 too (`curl -6`). Privileged: see `common`.

mod common;

use std::io::Read;
use std::net::IpAddr;

use common::{Bed, Daemon, GEN_NS, PushClient, SERVICE, assert_clean, in_netns, ns_run};

const SOCK: &str = "/tmp/c10m-test-services/c10m.sock";
const BODY: usize = 1000;

fn ctl(args: &[&str]) -> (bool, String) {
    common::ctl(SOCK, args)
}

/// `curl ARGS… URL…` from c10m-gen, with `-6` and the URL's brackets for an IPv6
/// `service`, each URL its root; its output (stdout then stderr) if it succeeded.
fn curl(service: IpAddr, args: &[&str], urls: usize) -> String {
    let url = match service {
        IpAddr::V4(a) => format!("http://{a}/"),
        IpAddr::V6(a) => format!("http://[{a}]/"),
    };
    let mut all = vec!["curl", "-sS", "--max-time", "10"];
    if service.is_ipv6() {
        all.extend(["-6", "-g"]);
    }
    all.extend_from_slice(args);
    all.extend(std::iter::repeat_n(url.as_str(), urls));
    let (ok, out) = ns_run(GEN_NS, &all);
    assert!(ok, "{all:?}: {out}");
    out
}

/// http and push at `service` (started with `extra` beside the standard options).
fn http_and_push(service: IpAddr, extra: &[&str]) {
    let _ = std::fs::create_dir_all("/tmp/c10m-test-services");
    let body = BODY.to_string();
    let mut args = vec![
        "--service",
        "http:80",
        "--service",
        "push:5222",
        "--http-body",
        &body,
        "--mgmt",
        SOCK,
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&args);

    // http with curl: status and body length, HEAD, and keep-alive (two requests, one
    // connection, both bodies whole).
    let out = curl(
        service,
        &["-o", "/dev/null", "-w", "%{http_code} %{size_download}"],
        1,
    );
    assert_eq!(out.trim(), format!("200 {BODY}"));
    let out = curl(service, &["-I"], 1);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("content-length: {BODY}")),
        "{out}"
    );
    let full = c10m_apps::services::http::ok_response(BODY, false, false);
    let body = &full[full.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let body = String::from_utf8_lossy(body);
    let out = curl(service, &["-w", "|%{http_code}:%{num_connects}|"], 2);
    assert!(
        out == format!("{body}|200:1|{body}|200:0|"),
        "both bodies byte for byte, the second request on the first one's connection: \
         {out:?}"
    );

    // push: heartbeat, subscriptions, and a publish from the control path.
    let (mut subs, mut other) = in_netns(GEN_NS, || {
        let subs: Vec<PushClient> = (0..5).map(|_| PushClient::connect(service)).collect();
        (subs, PushClient::connect(service))
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

#[test]
fn http_and_push_on_the_dataplane_answer_kernel_clients() {
    let Some(_bed) = Bed::up(1) else { return };
    http_and_push(SERVICE.into(), &[]);
}

#[cfg(feature = "ipv6")]
#[test]
fn http_and_push_on_the_dataplane_answer_kernel_clients_over_ipv6() {
    let Some(_bed) = Bed::up(1) else { return };
    http_and_push(common::SERVICE6.into(), &["--addr", "2001:2::10/64"]);
}
