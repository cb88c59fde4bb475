//! `c10m ctl publish` with two workers: every worker gets the publish, and every
//! subscriber — whichever worker holds its connection — reads the message exactly once.
//! The single-worker case is in `services.rs`; this is the fan-out across workers, where
//! a lost or doubled command, or a count summed wrongly, would show. Over IPv4, and in a
//! build with `--features ipv6` over IPv6 too. Privileged: see `common`.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use common::{Bed, Daemon, GEN_NS, PushClient, SERVICE, assert_clean, in_netns};

const SOCK: &str = "/tmp/c10m-test-publish/c10m.sock";
const PUSH_PORT: u16 = 5222;
const QUEUES: u32 = 2;
/// Enough connections that the veth's per-flow queue choice puts subscribers on both
/// queues (all on one would take odds of 2^-63).
const SUBSCRIBERS: usize = 64;

fn ctl_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out) = common::ctl(SOCK, &all);
    assert!(ok, "ctl {args:?}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {out}"))
}

/// Which worker holds each push connection to `service`, from `ctl connections` (each
/// worker lists its own): client address → worker.
fn push_connections_by_worker(service: IpAddr) -> BTreeMap<String, u64> {
    let local = SocketAddr::new(service, PUSH_PORT).to_string();
    let v = ctl_json(&["connections", "1000"]);
    let c = &v["connections"];
    assert!(c.get("workers_not_answering").is_none(), "{v}");
    let mut by_remote = BTreeMap::new();
    for e in c["sample"].as_array().unwrap() {
        if e["local"] != local.as_str() {
            continue;
        }
        assert_eq!(e["state"], "established", "{e}");
        let remote = e["remote"].as_str().unwrap().to_owned();
        let worker = e["worker"].as_u64().unwrap();
        let before = by_remote.insert(remote, worker);
        assert!(before.is_none(), "a connection listed twice: {e}");
    }
    by_remote
}

#[test]
fn publish_reaches_every_subscriber_on_every_worker_exactly_once() {
    let Some(_bed) = Bed::up(QUEUES) else { return };
    publish_to_subscribers_at(SERVICE.into(), &[]);
}

#[cfg(feature = "ipv6")]
#[test]
fn publish_reaches_every_subscriber_on_every_worker_exactly_once_over_ipv6() {
    let Some(_bed) = Bed::up(QUEUES) else { return };
    publish_to_subscribers_at(common::SERVICE6.into(), &["--addr", "2001:2::10/64"]);
}

/// 64 subscribers at `service` (the daemon started with `extra` beside the standard
/// options), spread over both workers, each reading every publish exactly once.
fn publish_to_subscribers_at(service: IpAddr, extra: &[&str]) {
    let started = std::time::Instant::now();
    let _ = std::fs::create_dir_all("/tmp/c10m-test-publish");
    let push = format!("push:{PUSH_PORT}");
    let mut args = vec!["--queues", "2", "--cores", "0,1", "--service", &push];
    args.extend(["--mgmt", SOCK]);
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&args);

    // 64 subscribers from c10m-gen, each from its own source port; PING → PONG after
    // the SUB proves the worker that holds it took the subscription.
    let mut subs = in_netns(GEN_NS, || {
        (0..SUBSCRIBERS)
            .map(|_| PushClient::connect(service))
            .collect::<Vec<_>>()
    });
    for s in &mut subs {
        s.send("SUB news");
        s.ping();
    }

    // Both workers hold subscribers, and every subscriber is held by exactly one.
    let by_remote = push_connections_by_worker(service);
    for s in &subs {
        assert!(
            by_remote.contains_key(&s.local().to_string()),
            "subscriber {} not listed by any worker: {by_remote:?}",
            s.local()
        );
    }
    assert_eq!(by_remote.len(), SUBSCRIBERS, "{by_remote:?}");
    let mut per_worker = [0u64; QUEUES as usize];
    for &w in by_remote.values() {
        per_worker[w as usize] += 1;
    }
    eprintln!("subscribers per worker: {per_worker:?}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers hold subscribers: {per_worker:?}"
    );

    // The publish reaches all 64, summed over both workers.
    let v = ctl_json(&["publish", "news", "hello"]);
    let p = &v["publish"];
    eprintln!("publish: {p}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(p["delivered"], SUBSCRIBERS, "{v}");
    assert_eq!(p["queued"], SUBSCRIBERS, "{v}");
    assert_eq!(p["dropped"], 0, "{v}");
    assert_eq!(p["workers"], QUEUES, "{v}");
    assert!(p.get("workers_not_answering").is_none(), "{v}");

    // Each subscriber reads the message once: the next line is the PONG.
    for s in &mut subs {
        assert_eq!(s.line(), "MSG news hello\n", "subscriber {}", s.local());
        s.ping();
    }

    // A topic nobody subscribes to reaches no one, on either worker.
    let v = ctl_json(&["publish", "nobody", "hello"]);
    assert_eq!(v["publish"]["delivered"], 0, "{v}");
    assert_eq!(v["publish"]["workers"], QUEUES, "{v}");
    assert!(v["publish"].get("workers_not_answering").is_none(), "{v}");
    for s in &mut subs {
        s.ping();
    }

    drop(subs);
    let report = daemon.stop();
    assert_clean(&report);
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), QUEUES as usize);
    for w in workers {
        let q = w["queue"].as_u64().unwrap() as usize;
        let svc = &w["echo"];
        // Each worker took each publish once and delivered to its own subscribers only.
        assert_eq!(svc["push_published"], 2, "worker {q}: {svc}");
        assert_eq!(svc["push_delivered"], per_worker[q], "worker {q}: {svc}");
        assert_eq!(svc["accepted"], per_worker[q], "worker {q}: {svc}");
    }
    eprintln!("with the bed up: {:?}", started.elapsed());
}
