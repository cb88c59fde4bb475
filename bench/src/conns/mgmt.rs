//! The server's side of the run, through its management sockets (one JSON line each
//! way): its counts, and a publish. A server of several processes (the kernel backend
//! behind one port) has one socket each: counts are summed, a publish goes to each.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

/// The server's counts from its management socket.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ServerCounts {
    pub(super) established: u64,
    pub(super) bytes_per_conn: u64,
    /// Frames the kernel dropped for the server's sockets: fill ring empty.
    pub(super) fill_ring_empty: u64,
    /// The other kernel-side rx drops: rx ring full, and the rest.
    pub(super) rx_dropped: u64,
}

fn ask(path: &Path, req: &Value, wait: Duration) -> anyhow::Result<Value> {
    let mut sock = UnixStream::connect(path)
        .with_context(|| format!("connecting to the management socket {}", path.display()))?;
    sock.set_read_timeout(Some(wait))?;
    writeln!(sock, "{req}")?;
    let mut line = String::new();
    BufReader::new(&sock).read_line(&mut line)?;
    let v: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the management answer {line:?}"))?;
    if v["ok"] != true {
        bail!("the server refused {req}: {line}");
    }
    Ok(v)
}

/// The counts of every socket in `paths`, summed (bytes per connection: the largest).
pub(super) fn server_counts(paths: &[PathBuf]) -> anyhow::Result<ServerCounts> {
    let mut sum = ServerCounts::default();
    for path in paths {
        let v = ask(path, &json!({"cmd": "stats"}), Duration::from_secs(5))?;
        let t = &v["stats"]["totals"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        sum.established += t["connections"]["established"]
            .as_u64()
            .ok_or_else(|| anyhow!("no connections.established in {v}"))?;
        sum.bytes_per_conn = sum.bytes_per_conn.max(n("bytes_per_connection"));
        sum.fill_ring_empty += n("xsk_rx_fill_ring_empty");
        sum.rx_dropped += n("xsk_rx_dropped") + n("xsk_rx_ring_full");
    }
    Ok(sum)
}

/// What the server said of a publish (summed over the topics published to).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Published {
    pub(super) queued: u64,
    pub(super) delivered: u64,
    pub(super) dropped: u64,
    /// When the last answer came.
    pub(super) answered: Option<Instant>,
}

/// Publishes `message` to each of `topics` in turn, through each socket of `paths`, on
/// a thread of its own (an answer comes when the server's fan-out ended: the generator
/// must go on receiving meanwhile); the result comes through the returned channel.
pub(super) fn publish(
    paths: Vec<PathBuf>,
    topics: Vec<String>,
    message: String,
) -> mpsc::Receiver<anyhow::Result<Published>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sum = Published::default();
        let result = topics
            .iter()
            .flat_map(|topic| paths.iter().map(move |path| (topic, path)))
            .try_for_each(|(topic, path)| {
                let req = json!({"cmd": "publish", "topic": topic, "message": message});
                let v = ask(path, &req, Duration::from_secs(310))?;
                let p = &v["publish"];
                let n = |k: &str| p[k].as_u64().unwrap_or(0);
                sum.queued += n("queued");
                sum.delivered += n("delivered");
                sum.dropped += n("dropped");
                if p.get("workers_not_answering").is_some() {
                    bail!("the publish to {topic} was not answered by every worker: {v}");
                }
                Ok(())
            })
            .map(|()| Published {
                answered: Some(Instant::now()),
                ..sum
            });
        let _ = tx.send(result);
    });
    rx
}
