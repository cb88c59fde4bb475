//! The protocol and the loop's limits against a fake dataplane: no root, no XDP.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::msg::ConnInfo;

use super::*;
use crate::stats::{Published, Sample};

#[derive(Default)]
struct Fake {
    stats: Vec<Published>,
    replies: VecDeque<Reply>,
    drained: Arc<AtomicUsize>,
    level: String,
    shutdown: Arc<Mutex<Option<Duration>>>,
    /// While set, worker 1's command ring is full: every send to it is refused.
    full: Arc<AtomicBool>,
    undrained: Arc<AtomicUsize>,
    /// The close delay of the last drain.
    close_after: Arc<Mutex<Option<Duration>>>,
    /// The serving state, shared with the test.
    state: Arc<Mutex<Option<State>>>,
}

impl Dataplane for Fake {
    fn workers(&self) -> usize {
        self.stats.len()
    }
    fn values(&self, w: usize) -> Vec<u64> {
        self.stats[w].read()
    }
    fn ring_depths(&self, _: usize) -> (usize, usize) {
        (0, self.replies.len())
    }
    fn send(&mut self, w: usize, cmd: Command) -> bool {
        if w == 1 && self.full.load(Ordering::SeqCst) {
            return false;
        }
        match cmd {
            Command::Drain { close_after } => {
                *self.close_after.lock().unwrap() = close_after;
                self.drained.fetch_add(1, Ordering::SeqCst);
            }
            Command::Undrain => {
                self.undrained.fetch_add(1, Ordering::SeqCst);
            }
            Command::Sample { id, limit } => {
                let conn = |port| ConnInfo {
                    remote: (Ipv4Addr::new(198, 18, 0, 1), port).into(),
                    local: (Ipv4Addr::new(198, 18, 0, 10), 7).into(),
                    state: "established",
                };
                let conns = (0..3).map(|i| conn(40000 + i)).take(limit).collect();
                self.replies.push_back(Reply::Sample {
                    id,
                    worker: w,
                    conns,
                });
            }
            Command::Publish { id, topic, .. } => {
                let delivered = if &*topic == "news" { 2 } else { 0 };
                self.replies.push_back(Reply::Published {
                    id,
                    worker: w,
                    fanout: Fanout {
                        queued: delivered + 1,
                        delivered,
                        dropped: 1,
                    },
                });
            }
        }
        true
    }
    fn reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }
    fn services(&self) -> Value {
        json!([{"name": "echo", "port": 7}])
    }
    fn log_level(&self) -> String {
        self.level.clone()
    }
    fn set_log_level(&mut self, level: &str) -> Result<(), String> {
        if level == "bogus!" {
            return Err("bad filter".into());
        }
        self.level = level.into();
        Ok(())
    }
    fn shutdown(&mut self, grace: Option<Duration>) -> Duration {
        let g = grace.unwrap_or(Duration::from_secs(5));
        *self.shutdown.lock().unwrap() = Some(g);
        self.set_state(State::Stopping);
        g
    }
    fn state(&self) -> State {
        self.state.lock().unwrap().unwrap_or(State::Serving)
    }
    fn set_state(&mut self, state: State) -> State {
        let before = self.state();
        *self.state.lock().unwrap() = Some(state);
        before
    }
}

/// A running control loop over a fake with two workers; stopped on drop.
struct Loop {
    path: std::path::PathBuf,
    http: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    drained: Arc<AtomicUsize>,
    shutdown: Arc<Mutex<Option<Duration>>>,
    full: Arc<AtomicBool>,
    undrained: Arc<AtomicUsize>,
    close_after: Arc<Mutex<Option<Duration>>>,
    state: Arc<Mutex<Option<State>>>,
}

impl Loop {
    fn start(idle: Duration) -> Loop {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "c10m-ctl-test-{}-{n}/c10m.sock",
            std::process::id()
        ));
        let settings = Settings {
            socket: Some(path.clone()),
            metrics: Some("127.0.0.1:0".parse().unwrap()),
            idle_timeout: idle,
            max_clients: 200,
            on_state: None,
        };
        let listeners = bind(&settings).unwrap();
        let http = listeners.http.as_ref().unwrap().local_addr().unwrap();
        let mut fake = Fake {
            level: "info".into(),
            ..Fake::default()
        };
        for w in 0..2 {
            let p = Published::default();
            let mut s = Sample::default();
            s.stack.accepted = 10 + w;
            s.stack.states[4] = 3;
            p.publish(&s);
            fake.stats.push(p);
        }
        let (drained, shutdown) = (fake.drained.clone(), fake.shutdown.clone());
        let full = fake.full.clone();
        let (undrained, close_after) = (fake.undrained.clone(), fake.close_after.clone());
        let state = fake.state.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn(listeners, settings, Box::new(fake), stop.clone(), vec![]).unwrap();
        Loop {
            path,
            http,
            stop,
            thread: Some(thread),
            drained,
            shutdown,
            full,
            undrained,
            close_after,
            state,
        }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn ask(&self, request: &str) -> Value {
        let mut s = self.connect();
        writeln!(s, "{request}").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

#[test]
fn every_command_answers() {
    let l = Loop::start(Duration::from_secs(10));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&l.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");

    let v = l.ask(r#"{"cmd":"stats"}"#);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["stats"]["workers"].as_array().unwrap().len(), 2);
    assert_eq!(v["stats"]["totals"]["accepted"], 21);
    assert_eq!(v["stats"]["workers"][1]["command_ring_depth"], 0);

    let v = l.ask(r#"{"cmd":"connections","limit":4}"#);
    let c = &v["connections"];
    assert_eq!(c["total"], 6, "{v}");
    assert_eq!(c["by_state"]["established"], 6);
    let sample = c["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 4, "limit honoured: {v}");
    assert_eq!(sample[0]["remote"], "198.18.0.1:40000");

    let v = l.ask(r#"{"cmd":"services"}"#);
    assert_eq!(v["services"][0]["name"], "echo");

    assert_eq!(l.ask(r#"{"cmd":"log-level"}"#)["log-level"], "info");
    let v = l.ask(r#"{"cmd":"log-level","level":"debug"}"#);
    assert_eq!(v["log-level"], "debug");
    let v = l.ask(r#"{"cmd":"log-level","level":"bogus!"}"#);
    assert_eq!(v["ok"], false);

    let v = l.ask(r#"{"cmd":"publish","topic":"news","message":"hello"}"#);
    assert_eq!(v["publish"]["delivered"], 4, "2 per worker: {v}");
    assert_eq!(v["publish"]["queued"], 6, "{v}");
    assert_eq!(v["publish"]["dropped"], 2, "{v}");
    assert_eq!(v["publish"]["workers"], 2);
    let v = l.ask(r#"{"cmd":"publish","topic":"a b","message":"x"}"#);
    assert_eq!(v["ok"], false, "{v}");
    let v = l.ask(r#"{"cmd":"publish","topic":"news"}"#);
    assert_eq!(v["ok"], false, "{v}");

    assert_eq!(l.ask(r#"{"cmd":"drain"}"#)["ok"], true);
    assert_eq!(l.drained.load(Ordering::SeqCst), 2, "every worker told");

    let v = l.ask(r#"{"cmd":"shutdown","grace":2}"#);
    assert_eq!(v["shutdown"]["grace_secs"], 2.0);
    assert_eq!(*l.shutdown.lock().unwrap(), Some(Duration::from_secs(2)));
}

#[test]
fn a_worker_with_a_full_command_ring_is_reported_not_answering() {
    let l = Loop::start(Duration::from_secs(10));
    l.full.store(true, Ordering::SeqCst);
    // Worker 0 answers at once; worker 1 was never asked, and the answer says so
    // rather than passing off one worker's subscribers as everyone's.
    let v = l.ask(r#"{"cmd":"publish","topic":"news","message":"hello"}"#);
    assert_eq!(v["publish"]["delivered"], 2, "worker 0's only: {v}");
    assert_eq!(v["publish"]["workers"], 2, "{v}");
    assert_eq!(v["publish"]["workers_not_answering"], 1, "{v}");
    let v = l.ask(r#"{"cmd":"connections","limit":10}"#);
    assert_eq!(v["connections"]["sample"].as_array().unwrap().len(), 3);
    assert_eq!(v["connections"]["workers_not_answering"], 1, "{v}");

    l.full.store(false, Ordering::SeqCst);
    let v = l.ask(r#"{"cmd":"publish","topic":"news","message":"hello"}"#);
    assert_eq!(v["publish"]["delivered"], 4, "{v}");
    assert!(v["publish"].get("workers_not_answering").is_none(), "{v}");
}

#[test]
fn bad_requests_get_errors() {
    let l = Loop::start(Duration::from_secs(10));
    let v = l.ask(r#"{"cmd":"frobnicate"}"#);
    assert_eq!(v["ok"], false);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("frobnicate") && e.contains("stats, connections, services"),
        "{e}"
    );
    let v = l.ask("{not json");
    assert!(v["error"].as_str().unwrap().contains("malformed"), "{v}");
    let v = l.ask(r#"["stats"]"#);
    assert!(v["error"].as_str().unwrap().contains("cmd"), "{v}");
    let v = l.ask(r#"{"cmd":"shutdown","grace":"soon"}"#);
    assert_eq!(v["ok"], false);

    // Several requests in one write, answered in order on one connection.
    let mut s = l.connect();
    s.write_all(b"{\"cmd\":\"services\"}\n\n{\"cmd\":\"nope\"}\n{\"cmd\":\"stats\"}\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        answers.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert!(answers[0]["services"].is_array());
    assert_eq!(answers[1]["ok"], false);
    assert!(answers[2]["stats"].is_object());

    // An oversized line: an error, then the connection closes.
    let mut s = l.connect();
    let big = vec![b'x'; MAX_LINE * 3];
    let _ = s.write_all(&big);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.contains("longer than 4096 bytes"), "{out:?}");
    // The loop still serves.
    assert_eq!(l.ask(r#"{"cmd":"stats"}"#)["ok"], true);
}

#[test]
fn idle_clients_are_dropped() {
    let l = Loop::start(Duration::from_millis(300));
    let mut s = l.connect();
    s.write_all(b"{\"cmd\":").unwrap(); // a partial request, then silence
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the loop");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_hundred_clients_and_a_slow_one() {
    let l = Loop::start(Duration::from_secs(10));
    // One client sends its request a byte a second (well, every 400 ms here: 6.4 s in all).
    let mut slow = l.connect();
    let slow_thread = std::thread::spawn(move || {
        for b in b"{\"cmd\":\"stats\"}\n" {
            slow.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
        let mut line = String::new();
        BufReader::new(slow).read_line(&mut line).unwrap();
        line
    });
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..100 {
            s.spawn(|| {
                let mut c = l.connect();
                let mut r = BufReader::new(c.try_clone().unwrap());
                for _ in 0..10 {
                    c.write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    assert!(line.contains("\"ok\":true"), "{line}");
                }
            });
        }
    });
    let fast = started.elapsed();
    // Served while the slow one still sends: not queued behind it. (The bound leaves room
    // for a busy 2-core CI machine; the requests themselves take milliseconds.)
    assert!(fast < Duration::from_secs(5), "100 clients took {fast:?}");
    assert!(
        !slow_thread.is_finished(),
        "the slow client was still sending"
    );
    let line = slow_thread.join().unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
}

#[test]
fn metrics_and_stats_over_http() {
    let l = Loop::start(Duration::from_secs(10));
    let text = l.get("/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let samples = crate::control::tests::parse_prometheus(body);
    let get = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(labels))
            .map(|s| s.2)
    };
    assert_eq!(get("c10m_accepted_total", "worker=\"1\""), Some(11.0));
    let est = get("c10m_connections", "state=\"established\"");
    assert_eq!(est, Some(3.0), "{body}");
    assert!(get("c10m_ring_depth", "ring=\"reply\"").is_some());
    let stats = l.get("/stats");
    let json: Value = serde_json::from_str(stats.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["totals"]["accepted"], 21);
    assert!(l.get("/nope").starts_with("HTTP/1.1 404"));
}

/// Parses Prometheus text: `(name, labels, value)` per sample line.
pub(crate) fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("name value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {l:?}"));
            (name.to_owned(), labels.to_owned(), value)
        })
        .collect()
}

/// Splits an HTTP response into its status code and body.
fn status_and_body(response: &str) -> (u16, Value) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn health_follows_the_state_through_drain_undrain_and_shutdown() {
    let l = Loop::start(Duration::from_secs(10));
    let set = |s: State| *l.state.lock().unwrap() = Some(s);
    set(State::Starting);
    let r = l.get("/health");
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert_eq!(status_and_body(&r), (503, json!({"state": "starting"})));
    set(State::Serving);
    assert_eq!(
        status_and_body(&l.get("/health")),
        (200, json!({"state": "serving"}))
    );
    assert_eq!(l.ask(r#"{"cmd":"state"}"#)["state"]["healthy"], true);

    let v = l.ask(r#"{"cmd":"drain","close":2.5}"#);
    assert_eq!(v["drain"]["was"], "serving", "{v}");
    assert_eq!(v["drain"]["close_secs"], 2.5, "{v}");
    assert_eq!(l.drained.load(Ordering::SeqCst), 2, "every worker told");
    assert_eq!(
        *l.close_after.lock().unwrap(),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(
        status_and_body(&l.get("/health")),
        (503, json!({"state": "draining"}))
    );
    assert_eq!(l.ask(r#"{"cmd":"state"}"#)["state"]["state"], "draining");
    let v = l.ask(r#"{"cmd":"drain","close":-1}"#);
    assert_eq!(v["ok"], false, "{v}");

    let v = l.ask(r#"{"cmd":"undrain"}"#);
    assert_eq!(v["undrain"]["was"], "draining", "{v}");
    assert_eq!(l.undrained.load(Ordering::SeqCst), 2, "every worker told");
    assert_eq!(status_and_body(&l.get("/health")).0, 200);

    // A full ring: the state does not move, and the answer says to retry.
    l.full.store(true, Ordering::SeqCst);
    let v = l.ask(r#"{"cmd":"drain"}"#);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(status_and_body(&l.get("/health")).0, 200);
    l.full.store(false, Ordering::SeqCst);

    assert_eq!(l.ask(r#"{"cmd":"shutdown"}"#)["ok"], true);
    assert_eq!(
        status_and_body(&l.get("/health")),
        (503, json!({"state": "stopping"}))
    );
    let v = l.ask(r#"{"cmd":"undrain"}"#);
    assert_eq!(
        v["ok"], false,
        "a stopping daemon does not accept again: {v}"
    );
    assert_eq!(status_and_body(&l.get("/health")).0, 503);
}

#[test]
fn only_get_on_known_paths() {
    let l = Loop::start(Duration::from_secs(10));
    assert!(l.get("/healthz").starts_with("HTTP/1.1 404"));
    let mut s = TcpStream::connect(l.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "POST /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
}
