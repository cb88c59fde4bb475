//! `c10m kernel --mgmt PATH`: a management socket for benchmarks, one JSON line each way
//! per connection, in the shape `c10m run`'s socket answers the same requests:
//!
//! * `{"cmd":"stats"}` → `{"ok":true,"stats":{"totals":{"connections":{"established":N}}}}`,
//!   where N is the process's open sockets (`/proc/self/fd`, so it costs nothing on the
//!   reactors) less its listeners and the two management sockets: the connections
//!   accepted and not yet closed;
//! * `{"cmd":"publish","topic":T,"message":M}` → `{"ok":true,"publish":{"workers":W,
//!   "workers_reached":R}}` (with `"workers_not_answering"` when a worker's queue was
//!   full): the push service's publish, queued to every reactor. The kernel backend
//!   writes the messages as its reactors take the command; it does not count deliveries.
//!
//! One client at a time, each with a 2 s read timeout; the thread ends with the process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use c10m_apps::Fanout;
use c10m_apps::services::push::Command;
use serde_json::{Value, json};

/// Binds `path` (mode 0600; a stale file nobody answers on is replaced) and serves it on
/// a thread of its own; `listeners`: the server's listening sockets.
pub(crate) fn serve(path: &Path, fanout: Fanout<Command>, listeners: usize) -> std::io::Result<()> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another server", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("mgmt".into())
        .spawn(move || {
            for s in listener.incoming().flatten() {
                let _ = answer(s, &fanout, listeners + 2);
            }
        })?;
    Ok(())
}

fn answer(s: UnixStream, fanout: &Fanout<Command>, fixed: usize) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    // One line of at most 4 KiB.
    BufReader::new((&s).take(4096)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Value>(line.trim()) {
        Ok(req) => reply(&req, fanout, fixed),
        Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
    };
    (&s).write_all(format!("{reply}\n").as_bytes())
}

fn reply(req: &Value, fanout: &Fanout<Command>, fixed: usize) -> Value {
    match req["cmd"].as_str() {
        Some("stats") => json!({"ok": true, "stats": {"totals": {"connections": {
            "established": established(fixed)
        }}}}),
        Some("publish") => {
            let (Some(topic), Some(message)) = (req["topic"].as_str(), req["message"].as_str())
            else {
                return json!({"ok": false, "error": "publish takes a topic and a message"});
            };
            if topic.is_empty() || topic.contains(char::is_whitespace) || message.contains('\n') {
                return json!({"ok": false, "error": "one-word topic, one-line message"});
            }
            let workers = fanout.workers();
            let reached = fanout.publish(Command::publish(topic, message.as_bytes()));
            let mut p = json!({"workers": workers, "workers_reached": reached});
            if reached < workers {
                p["workers_not_answering"] = json!(workers - reached);
            }
            json!({"ok": true, "publish": p})
        }
        _ => json!({"ok": false, "error": "commands: stats, publish"}),
    }
}

/// This process's sockets less `fixed` of them (its listeners, and the management
/// listener and the client being answered): the connections it holds.
fn established(fixed: usize) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let sockets = dir
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count();
    sockets.saturating_sub(fixed) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_reaches_every_worker_and_bad_requests_are_refused() {
        let (fanout, inboxes) = Fanout::<Command>::new(2);
        let v = reply(
            &json!({"cmd": "publish", "topic": "news", "message": "hi"}),
            &fanout,
            0,
        );
        assert_eq!(v["publish"]["workers_reached"], 2, "{v}");
        assert!(v["publish"].get("workers_not_answering").is_none(), "{v}");
        for i in &inboxes {
            assert_eq!(i.try_recv(), Some(Command::publish("news", b"hi")));
        }
        let v = reply(
            &json!({"cmd": "publish", "topic": "a b", "message": "x"}),
            &fanout,
            0,
        );
        assert_eq!(v["ok"], false, "{v}");
        let v = reply(&json!({"cmd": "reload"}), &fanout, 0);
        assert_eq!(v["ok"], false, "{v}");
        // Two sockets open here, none of them fixed: two connections.
        let _pair = UnixStream::pair().unwrap();
        let v = reply(&json!({"cmd": "stats"}), &fanout, 0);
        let n = v["stats"]["totals"]["connections"]["established"].as_u64();
        assert!(n >= Some(2), "{v}");
    }
}
