//! `c10m ctl`: one request to the daemon's management socket, the answer as a table (or
//! as the daemon's JSON with `--json`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

/// `c10m ctl [--mgmt PATH] COMMAND [ARG] [--json]`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The daemon's management socket.
    #[arg(long, default_value = c10m_dataplane::DEFAULT_SOCKET)]
    mgmt: String,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    /// The command (its list is the help text below).
    #[arg(
        help = "stats | connections [LIMIT] | services | log-level [FILTER] | drain [CLOSE_SECS] | undrain | state | shutdown [GRACE_SECS] | publish TOPIC MESSAGE"
    )]
    command: String,
    /// The command's argument.
    arg: Option<String>,
    /// The command's second argument (publish: the message).
    arg2: Option<String>,
}

fn request(a: &Args) -> Result<Value, String> {
    let mut req = json!({"cmd": a.command});
    if a.command == "publish" {
        let (Some(topic), Some(message)) = (&a.arg, &a.arg2) else {
            return Err("usage: c10m ctl publish TOPIC MESSAGE".into());
        };
        req["topic"] = topic.clone().into();
        req["message"] = message.clone().into();
        return Ok(req);
    }
    if a.arg2.is_some() {
        return Err(format!("{} takes at most one argument", a.command));
    }
    match (a.command.as_str(), &a.arg) {
        (_, None) => {}
        ("connections", Some(n)) => {
            req["limit"] = n
                .parse::<u64>()
                .map_err(|_| "LIMIT must be a number")?
                .into();
        }
        ("log-level", Some(f)) => req["level"] = f.clone().into(),
        ("drain", Some(c)) => {
            req["close"] = c
                .parse::<f64>()
                .map_err(|_| "CLOSE_SECS must be a number")?
                .into();
        }
        ("shutdown", Some(g)) => {
            req["grace"] = g
                .parse::<f64>()
                .map_err(|_| "GRACE_SECS must be a number")?
                .into();
        }
        (cmd, Some(_)) => return Err(format!("{cmd} takes no argument")),
    }
    Ok(req)
}

fn ask(path: &str, req: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!("cannot reach the daemon at {path}: {e} (is `c10m run` running? as root? --mgmt?)")
    })?;
    // A publish is answered when its paced fan-out ends: tens of seconds at 10M.
    let wait = if req["cmd"] == "publish" { 310 } else { 10 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(wait)));
    writeln!(s, "{req}").map_err(|e| format!("{path}: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer from the daemon ({e}): {line:?}"))
}

pub(crate) fn main(a: &Args) -> ExitCode {
    let answer = request(a).and_then(|req| ask(&a.mgmt, &req));
    let v = match answer {
        Ok(v) => v,
        Err(e) => {
            eprintln!("c10m ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    if v["ok"] != true {
        eprintln!("c10m ctl: {}", v["error"].as_str().unwrap_or("error"));
        return ExitCode::FAILURE;
    }
    if a.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    match a.command.as_str() {
        "stats" => stats_table(&v["stats"]),
        "connections" => connections_table(&v["connections"]),
        "services" => {
            let rows = v["services"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|s| vec![text(&s["name"]), text(&s["addr"]), text(&s["port"])])
                .collect();
            table(&["SERVICE", "ADDRESS", "PORT"], &rows);
        }
        "log-level" => println!("log level: {}", text(&v["log-level"])),
        "drain" => {
            println!(
                "draining (was {}): {} worker(s) stopped accepting; /health answers 503",
                text(&v["drain"]["was"]),
                text(&v["drain"]["workers"])
            );
            if let Some(c) = v["drain"]["close_secs"].as_f64() {
                println!("connections close in {c} s (reset after the grace period)");
            }
        }
        "undrain" => println!(
            "serving (was {}): {} worker(s) accept again; /health answers 200",
            text(&v["undrain"]["was"]),
            text(&v["undrain"]["workers"])
        ),
        "state" => println!("{}", text(&v["state"]["state"])),
        "shutdown" => println!(
            "shutting down: connections get {} s to finish",
            text(&v["shutdown"]["grace_secs"])
        ),
        "publish" => println!(
            "published to {} of {} subscriber(s) ({} dropped: output full) on {} worker(s) \
             in {} us ({} deliveries/s)",
            text(&v["publish"]["delivered"]),
            text(&v["publish"]["queued"]),
            text(&v["publish"]["dropped"]),
            text(&v["publish"]["workers"]),
            text(&v["publish"]["elapsed_us"]),
            text(&v["publish"]["fanout_per_sec"]),
        ),
        _ => println!("{v}"),
    }
    if let Some(n) = v[a.command.as_str()]["workers_not_answering"].as_u64() {
        eprintln!(
            "c10m ctl: {n} worker(s) did not answer (busy, or a full command ring): the figures leave them out"
        );
    }
    ExitCode::SUCCESS
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(head: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("{}", padded.join("  "));
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn sum(v: &Value) -> u64 {
    v.as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

fn stats_table(s: &Value) {
    let row = |name: String, w: &Value| {
        vec![
            name,
            text(&w["rx_frames"]),
            text(&w["tx_frames"]),
            sum(&w["drops"]).to_string(),
            text(&w["accepted"]),
            text(&w["connections"]["established"]),
            sum(&w["connections"]).to_string(),
            text(&w["resets_sent"]),
            text(&w["echo_bytes"]),
            text(&w["bytes_per_connection"]),
            format!(
                "{}/{}",
                text(&w["command_ring_depth"]),
                text(&w["reply_ring_depth"])
            ),
        ]
    };
    let mut rows: Vec<Vec<String>> = s["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| row(text(&w["worker"]), w))
        .collect();
    let mut totals = s["totals"].clone();
    totals["command_ring_depth"] = Value::Null;
    rows.push(row("total".into(), &totals));
    table(
        &[
            "WORKER", "RX", "TX", "DROPS", "ACCEPTED", "ESTAB", "CONNS", "RST_SENT", "ECHO_B",
            "B/CONN", "RINGS",
        ],
        &rows,
    );
}

fn connections_table(c: &Value) {
    println!("{} connection(s)", text(&c["total"]));
    if let Some(states) = c["by_state"].as_object() {
        let busy: Vec<String> = states
            .iter()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        if !busy.is_empty() {
            println!("by state: {}", busy.join(", "));
        }
    }
    let rows: Vec<Vec<String>> = c["sample"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["worker"]),
                text(&s["remote"]),
                text(&s["local"]),
                text(&s["state"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(&["WORKER", "REMOTE", "LOCAL", "STATE"], &rows);
    }
}
