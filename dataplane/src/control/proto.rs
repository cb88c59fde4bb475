//! The management protocol: one JSON object per line each way.
//!
//! Requests: `{"cmd":"stats"}`, `{"cmd":"connections","limit":16}`, `{"cmd":"services"}`,
//! `{"cmd":"log-level"}` or `{"cmd":"log-level","level":"debug"}`, `{"cmd":"drain"}` or
//! `{"cmd":"drain","close":5}`, `{"cmd":"undrain"}`, `{"cmd":"state"}`,
//! `{"cmd":"shutdown","grace":5}`, `{"cmd":"publish","topic":"t","message":"hi"}`. Responses: `{"ok":true,"<cmd>":…}` or
//! `{"ok":false,"error":"…"}`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Command, Dataplane, Fanout, State};
use crate::stats;

/// Every command, for the error that names them.
pub(crate) const COMMANDS: [&str; 9] = [
    "stats",
    "connections",
    "services",
    "log-level",
    "drain",
    "undrain",
    "state",
    "shutdown",
    "publish",
];

/// Most endpoints a `connections` answer lists.
pub(crate) const MAX_SAMPLE: usize = 1000;
/// Endpoints listed when the request gives no limit.
pub(crate) const DEFAULT_SAMPLE: usize = 16;

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answer now.
    Reply(Value),
    /// A `connections` request: ask every worker for up to `limit` endpoints.
    Sample { limit: usize },
    /// A `publish` request: send it to every worker and count the subscribers reached.
    Publish { topic: String, message: String },
}

/// An error response.
pub(crate) fn error(message: impl Into<String>) -> Value {
    json!({"ok": false, "error": message.into()})
}

/// Handles one request line.
pub(crate) fn handle(line: &[u8], dp: &mut dyn Dataplane) -> Outcome {
    let req: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Reply(error(format!(
                "malformed request ({e}): send one JSON object per line, e.g. {{\"cmd\":\"stats\"}}"
            )));
        }
    };
    let Some(cmd) = req.get("cmd").and_then(Value::as_str) else {
        return Outcome::Reply(error(
            "the request has no \"cmd\" string: send e.g. {\"cmd\":\"stats\"}",
        ));
    };
    Outcome::Reply(match cmd {
        "stats" => json!({"ok": true, "stats": stats_json(dp)}),
        "connections" => {
            let limit = match req.get("limit") {
                None => DEFAULT_SAMPLE,
                Some(v) => match v.as_u64() {
                    Some(n) => (n as usize).min(MAX_SAMPLE),
                    None => return Outcome::Reply(error("\"limit\" must be a number")),
                },
            };
            return Outcome::Sample { limit };
        }
        "services" => json!({"ok": true, "services": dp.services()}),
        "publish" => {
            let field = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(topic), Some(message)) = (field("topic"), field("message")) else {
                return Outcome::Reply(error("publish needs \"topic\" and \"message\" strings"));
            };
            if topic.is_empty() || topic.contains([' ', '\n', '\r']) {
                return Outcome::Reply(error("the topic must be one word"));
            }
            if message.contains(['\n', '\r']) {
                return Outcome::Reply(error("the message must be one line"));
            }
            return Outcome::Publish { topic, message };
        }
        "log-level" => match req.get("level") {
            None => json!({"ok": true, "log-level": dp.log_level()}),
            Some(Value::String(level)) => match dp.set_log_level(level) {
                Ok(()) => json!({"ok": true, "log-level": dp.log_level()}),
                Err(e) => error(e),
            },
            Some(_) => error("\"level\" must be a string such as \"info\" or \"c10m=debug\""),
        },
        "drain" => {
            let close_after = match req.get("close") {
                None => None,
                Some(v) => match v.as_f64().filter(|c| (0.0..=3600.0).contains(c)) {
                    Some(c) => Some(Duration::from_secs_f64(c)),
                    None => return Outcome::Reply(error("\"close\" must be 0 to 3600 seconds")),
                },
            };
            match tell_workers(dp, &Command::Drain { close_after }) {
                Ok(()) => {
                    let before = dp.set_state(State::Draining);
                    let mut answer = json!({"workers": dp.workers(), "was": before.name()});
                    if let Some(c) = close_after {
                        answer["close_secs"] = c.as_secs_f64().into();
                    }
                    json!({"ok": true, "drain": answer})
                }
                Err(e) => e,
            }
        }
        "undrain" => {
            if dp.state() == State::Stopping {
                return Outcome::Reply(error(
                    "the daemon is stopping: it cannot accept again; start a new one",
                ));
            }
            match tell_workers(dp, &Command::Undrain) {
                Ok(()) => {
                    let before = dp.set_state(State::Serving);
                    json!({"ok": true, "undrain": {"workers": dp.workers(), "was": before.name()}})
                }
                Err(e) => e,
            }
        }
        "state" => {
            let state = dp.state();
            json!({"ok": true, "state": {"state": state.name(), "healthy": state.healthy()}})
        }
        "shutdown" => {
            let grace = match req.get("grace") {
                None => None,
                Some(v) => match v.as_f64().filter(|g| (0.0..=3600.0).contains(g)) {
                    Some(g) => Some(Duration::from_secs_f64(g)),
                    None => return Outcome::Reply(error("\"grace\" must be 0 to 3600 seconds")),
                },
            };
            let grace = dp.shutdown(grace);
            json!({"ok": true, "shutdown": {"grace_secs": grace.as_secs_f64()}})
        }
        other => error(format!(
            "unknown command {other:?}: valid commands are {}",
            COMMANDS.join(", ")
        )),
    })
}

/// Sends `cmd` to every worker; the error answer says how many had a full ring.
fn tell_workers(dp: &mut dyn Dataplane, cmd: &Command) -> Result<(), Value> {
    let refused = (0..dp.workers())
        .filter(|&w| !dp.send(w, cmd.clone()))
        .count();
    if refused == 0 {
        Ok(())
    } else {
        Err(error(format!(
            "{refused} worker(s) had a full command ring: retry"
        )))
    }
}

/// Per worker and totals, with ring depths: the `stats` answer and `GET /stats`.
pub(crate) fn stats_json(dp: &dyn Dataplane) -> Value {
    let values: Vec<Vec<u64>> = (0..dp.workers()).map(|w| dp.values(w)).collect();
    let workers: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(w, v)| {
            let mut obj = stats::to_json(v);
            let (commands, replies) = dp.ring_depths(w);
            obj["worker"] = w.into();
            obj["command_ring_depth"] = commands.into();
            obj["reply_ring_depth"] = replies.into();
            obj
        })
        .collect();
    let mut answer = json!({"workers": workers, "totals": stats::to_json(&stats::totals(&values))});
    if let Some(xdp) = dp.xdp() {
        answer["xdp"] = xdp;
    }
    answer
}

/// The `publish` answer from the workers' counts.
pub(crate) fn publish_json(
    workers: usize,
    fanout: Fanout,
    missing: usize,
    elapsed: Duration,
) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let delivered = fanout.delivered;
    let mut answer = json!({
        "ok": true,
        "publish": {
            "queued": fanout.queued,
            "delivered": delivered,
            "dropped": fanout.dropped,
            "workers": workers,
            "elapsed_us": elapsed.as_micros() as u64,
            "fanout_per_sec": (delivered as f64 / secs).round(),
        },
    });
    if missing > 0 {
        answer["publish"]["workers_not_answering"] = missing.into();
    }
    answer
}

/// The `connections` answer from the workers' samples.
pub(crate) fn connections_json(dp: &dyn Dataplane, sample: Vec<Value>, missing: usize) -> Value {
    let values: Vec<Vec<u64>> = (0..dp.workers()).map(|w| dp.values(w)).collect();
    let totals = stats::to_json(&stats::totals(&values));
    let by_state = totals["connections"].clone();
    let total: u64 = by_state
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let mut answer = json!({
        "ok": true,
        "connections": {"total": total, "by_state": by_state, "sample": sample},
    });
    if missing > 0 {
        answer["connections"]["workers_not_answering"] = missing.into();
    }
    answer
}
