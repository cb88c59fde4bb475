//! The metrics listener's HTTP/1.x: `GET /metrics` (Prometheus text format, encoded by
//! prometheus-client, every metric prefixed `c10m_` and labelled with its `worker`) and
//! `GET /stats` (the `stats` JSON) and `GET /health` (the serving state: 200 with
//! `{"state":"serving"}`, or 503 with `starting`, `draining` or `stopping`, for a BGP
//! speaker's or load balancer's health check). One request per connection, then close.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::proto::stats_json;
use super::{Dataplane, State};
use crate::stats::{self, Kind};

type Labels = Vec<(String, String)>;

/// The answer to a complete request head in `input`; `None` while it is incomplete.
pub(crate) fn respond(input: &[u8], dp: &dyn Dataplane) -> Option<Vec<u8>> {
    let end = input.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&input[..end]);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    Some(match (method, path) {
        ("GET", "/metrics") => match metrics(dp) {
            Ok(text) => response(200, "text/plain; version=0.0.4; charset=utf-8", &text),
            Err(()) => response(500, "text/plain", "encoding failed\n"),
        },
        ("GET", "/stats") => {
            let body = stats_json(dp).to_string() + "\n";
            response(200, "application/json", &body)
        }
        ("GET", "/health") => {
            let state = dp.state();
            let body = serde_json::json!({"state": state.name()}).to_string() + "\n";
            response(health_status(state), "application/json", &body)
        }
        ("GET", _) => response(
            404,
            "text/plain",
            "not found: try /metrics, /stats or /health\n",
        ),
        _ => response(405, "text/plain", "only GET\n"),
    })
}

/// `GET /health`'s status: 200 only while serving.
pub(crate) fn health_status(state: State) -> u16 {
    if state.healthy() { 200 } else { 503 }
}

/// A complete HTTP/1.1 response that closes the connection.
pub(crate) fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every published metric of every worker, plus the ring depths, as Prometheus text.
pub(crate) fn metrics(dp: &dyn Dataplane) -> Result<String, ()> {
    let mut registry = Registry::with_prefix("c10m");
    let list = stats::catalogue();
    let values: Vec<Vec<u64>> = (0..dp.workers()).map(|w| dp.values(w)).collect();
    let mut i = 0;
    while i < list.len() {
        // A family: the consecutive metrics of one name.
        let name = list[i].name;
        let end = list[i..]
            .iter()
            .position(|m| m.name != name)
            .map_or(list.len(), |n| i + n);
        let labels = |w: usize, j: usize| -> Labels {
            let mut l = vec![("worker".to_owned(), w.to_string())];
            if let Some((k, v)) = list[j].label {
                l.push((k.to_owned(), v.to_owned()));
            }
            l
        };
        match list[i].kind {
            Kind::Counter => {
                let family = Family::<Labels, Counter>::default();
                for (w, vals) in values.iter().enumerate() {
                    for (j, &v) in vals.iter().enumerate().take(end).skip(i) {
                        family.get_or_create(&labels(w, j)).inc_by(v);
                    }
                }
                registry.register(name, list[i].help, family);
            }
            Kind::Gauge => {
                let family = Family::<Labels, Gauge>::default();
                for (w, vals) in values.iter().enumerate() {
                    for (j, &v) in vals.iter().enumerate().take(end).skip(i) {
                        let v = i64::try_from(v).unwrap_or(i64::MAX);
                        family.get_or_create(&labels(w, j)).set(v);
                    }
                }
                registry.register(name, list[i].help, family);
            }
        }
        i = end;
    }
    let depths = Family::<Labels, Gauge>::default();
    for w in 0..dp.workers() {
        let (commands, replies) = dp.ring_depths(w);
        for (ring, depth) in [("command", commands), ("reply", replies)] {
            let l = vec![
                ("worker".to_owned(), w.to_string()),
                ("ring".to_owned(), ring.to_owned()),
            ];
            depths.get_or_create(&l).set(depth as i64);
        }
    }
    registry.register("ring_depth", "Messages waiting in a control ring", depths);
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|_| ())?;
    Ok(text)
}
