//! The report as text: the side-by-side table for a terminal and the Markdown file.

use std::fmt::Write as _;

use super::*;

/// `1234567.8` → `1,234,568` (with `decimals` after the point).
pub(crate) fn group(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((&text[..], None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

fn met_text(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

/// The side-by-side table for a terminal.
pub(crate) fn table(r: &Report) -> String {
    let rows = rows(r);
    let w = rows
        .iter()
        .map(|x| x.scenario.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut s = String::new();
    // The reflector's columns only when it ran.
    let ceiling = rows.iter().any(|x| x.reflector != Cell::Missing);
    let _ = write!(
        s,
        "{:<w$}  {:>14}  {:>14}  {:>9}",
        "scenario", "dataplane", "kernel", "dp/kernel"
    );
    if ceiling {
        let _ = write!(s, "  {:>14}  {:>12}", "reflector", "dp/reflector");
    }
    let _ = writeln!(s);
    for x in &rows {
        let ratio = x.ratio().map_or("-".to_owned(), times);
        let _ = write!(
            s,
            "{:<w$}  {:>14}  {:>14}  {:>9}",
            x.scenario,
            x.dataplane.show(x.decimals),
            x.kernel.show(x.decimals),
            ratio
        );
        if ceiling {
            let share = x.of_reflector().map_or("-".to_owned(), times);
            let _ = write!(s, "  {:>14}  {:>12}", x.reflector.show(x.decimals), share);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    for g in &r.goals {
        let _ = writeln!(
            s,
            "goal: {:<52} {:<13} {}",
            g.name,
            met_text(g.met),
            g.measured
        );
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| group(v, decimals))
}

/// The Markdown report.
pub(crate) fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# c10m-bench compare, {}\n", r.started_utc);
    if r.interrupted {
        let _ = writeln!(s, "**Interrupted (Ctrl-C): the results are partial.**\n");
    }
    let _ = writeln!(
        s,
        "The dataplane (AF_XDP, 198.18.0.10) against the kernel baseline on the same host \
         (198.18.0.2), and against the stateless reflector (`c10m-bench reflect`, the same \
         AF_XDP path with no TCP state: the ceiling), measured in one run of {:.0} s by {}.\n",
        r.secs, r.tool
    );
    let _ = writeln!(
        s,
        "| scenario | dataplane | kernel | dataplane / kernel | reflector | dataplane / reflector |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for x in rows(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            x.scenario,
            x.dataplane.show(x.decimals),
            x.kernel.show(x.decimals),
            x.ratio().map_or("-".to_owned(), times),
            x.reflector.show(x.decimals),
            x.of_reflector().map_or("-".to_owned(), times)
        );
    }
    let _ = writeln!(
        s,
        "\n## Goals\n\n| goal | result | measured |\n|---|---|---|"
    );
    for g in &r.goals {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            g.name,
            met_text(g.met),
            md_escape(&g.measured)
        );
    }

    let _ = writeln!(s, "\n## Machine\n");
    let m = &r.machine;
    let _ = writeln!(s, "- CPU: {} ({} cores online)", m.cpu_model, m.cores);
    let _ = writeln!(s, "- RAM: {} MiB", group(m.ram_bytes as f64 / 1048576.0, 0));
    let _ = writeln!(s, "- kernel: {}", m.kernel);
    let _ = writeln!(s, "- host: {}", m.hostname);

    let _ = writeln!(s, "\n## Settings\n\n| setting | value |\n|---|---|");
    for (k, v) in &r.settings {
        let _ = writeln!(s, "| {} | {} |", md_escape(k), md_escape(v));
    }
    let _ = writeln!(
        s,
        "\n## Sysctls set for the kernel baseline (restored afterwards)\n"
    );
    if r.sysctls.is_empty() {
        let _ = writeln!(s, "None.");
    } else {
        let _ = writeln!(
            s,
            "| namespace | sysctl | before | set |\n|---|---|---|---|"
        );
        for x in &r.sysctls {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                x.namespace, x.name, x.before, x.set
            );
        }
    }
    let _ = writeln!(s, "\n## Servers\n");
    for x in &r.servers {
        let name = x.server.map_or("?", Server::name);
        let _ = writeln!(s, "- {name} at {}: `{}`", x.address, x.command);
    }
    let _ = writeln!(s, "\n## Notes\n");
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }

    let _ = writeln!(s, "\n## Held connections\n");
    let _ = writeln!(
        s,
        "| server | requested | processes | held (server) | bytes/conn | slab | buffers | RSS/conn | client established | note or error |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for h in &r.held {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            h.server.map_or("?", Server::name),
            group(h.requested as f64, 0),
            h.processes,
            opt(h.held.map(|v| v as f64), 0),
            opt(h.bytes_per_conn, 0),
            opt(h.slab_bytes_per_conn, 0),
            opt(h.buffer_bytes_per_conn, 0),
            opt(h.rss_bytes_per_conn, 0),
            opt(h.client.as_ref().map(|c| c.established as f64), 0),
            md_escape(h.error.as_deref().or(h.note.as_deref()).unwrap_or("")),
        );
    }
    for h in r.held.iter().filter(|h| !h.method.is_empty()) {
        let _ = writeln!(
            s,
            "\n{} at {}: {}",
            h.server.map_or("?", Server::name),
            group(h.requested as f64, 0),
            h.method
        );
        if !h.slab_caches.is_empty() {
            let caches: Vec<String> = h
                .slab_caches
                .iter()
                .map(|(n, b)| format!("{n} {}", group(*b, 0)))
                .collect();
            let _ = writeln!(
                s,
                "Slab bytes per connection by cache: {}.",
                caches.join(", ")
            );
        }
    }

    runs_table(
        &mut s,
        "Requests per second",
        "| server | proto | conns | pipeline | connected | requests/s | errors | p50 µs | p99 µs | p99.9 µs | max µs | error |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        &r.rps,
        |x, f| {
            vec![
                x.conns.to_string(),
                x.pipeline.to_string(),
                f(|o| o.connected, 0),
                f(|o| o.rps, 0),
                f(|o| o.errors, 0),
                f(|o| o.p50_us, 1),
                f(|o| o.p99_us, 1),
                f(|o| o.p999_us, 1),
                f(|o| o.max_us, 1),
            ]
        },
    );
    runs_table(
        &mut s,
        "Connections per second",
        "| server | proto | concurrency | completed | failed | connections/s | p50 µs | p99 µs | error |\n|---|---|---:|---:|---:|---:|---:|---:|---|",
        &r.cps,
        |x, f| {
            vec![
                x.concurrency.to_string(),
                f(|o| o.completed, 0),
                f(|o| o.failed, 0),
                f(|o| o.cps, 0),
                f(|o| o.p50_us, 1),
                f(|o| o.p99_us, 1),
            ]
        },
    );
    flood_section(&mut s, r);
    cpu_section(&mut s, r);
    if !r.plots.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for p in &r.plots {
            let _ = writeln!(s, "![{p}]({p})\n");
        }
    }
    s
}

/// A section with the table of rps or cps runs: server, proto, the run's own `cells`
/// (given a figure of the generator's output and its decimals, `-` where it failed), error.
fn runs_table<L: Load>(
    s: &mut String,
    heading: &str,
    header: &str,
    xs: &[L],
    cells: impl Fn(&L, &dyn Fn(fn(&L::Out) -> f64, usize) -> String) -> Vec<String>,
) {
    let _ = writeln!(s, "\n## {heading}\n");
    let _ = writeln!(s, "{header}");
    for x in xs {
        let m = x.measured();
        let f = |g: fn(&L::Out) -> f64, d| opt(m.out.as_ref().map(g), d);
        let mut row = vec![
            x.server().map_or("?", Server::name).to_owned(),
            x.proto().to_owned(),
        ];
        row.extend(cells(x, &f));
        row.push(md_escape(m.error.as_deref().unwrap_or("")));
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
}

/// The flood scenario: every figure of each server, and the generator's own counts.
fn flood_section(s: &mut String, r: &Report) {
    if r.flood.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## SYN flood\n");
    let _ = writeln!(
        s,
        "| server | SYNs sent | SYNs/s | decoy frames/s | new conns ok / attempted (refused, timed out, other; slowest ms) | echo round trips/s before / during / after | RSS before → after | server RSTs sent | SYN cookies sent | replies to spoofed sources: SYN-ACK / RST / other | 1 s after: ok / attempted | error |\n|---|---:|---:|---:|---|---|---|---:|---:|---|---|---|"
    );
    for f in &r.flood {
        let g = f.generator.as_ref();
        let a = |x: &Attempts| {
            format!(
                "{} / {} ({}, {}, {}; {})",
                x.ok, x.attempted, x.refused, x.timed_out, x.other, x.slowest_ms
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} / {} | {} → {} | {} | {} | {} | {} / {} | {} |",
            f.server.map_or("?", Server::name),
            opt(g.map(|g| g.sent as f64), 0),
            opt(g.map(|g| g.rate_achieved), 0),
            opt(f.decoy.as_ref().map(|g| g.rate_achieved), 0),
            a(&f.during),
            opt(f.rtt_before, 0),
            opt(f.rtt_during, 0),
            opt(f.rtt_after, 0),
            opt(f.rss_before.map(|v| v as f64), 0),
            opt(f.rss_after.map(|v| v as f64), 0),
            opt(f.resets_sent.map(|v| v as f64), 0),
            opt(f.cookies_sent.map(|v| v as f64), 0),
            g.map_or("-".into(), |g| format!(
                "{} / {} / {}",
                g.replies.syn_ack, g.replies.rst, g.replies.other
            )),
            f.after.ok,
            f.after.attempted,
            md_escape(f.error.as_deref().unwrap_or("")),
        );
    }
}

/// The CPU table: both cores and the server processes over each measured window.
fn cpu_section(s: &mut String, r: &Report) {
    let runs = cpu_runs(r);
    if runs.iter().all(|x| x.cpu.is_none()) {
        return;
    }
    let _ = writeln!(s, "\n## CPU use\n");
    let _ = writeln!(
        s,
        "Percent of each core over the measured window (`/proc/stat`; busy = 1 − (idle + \
         iowait) / total; user includes nice). Per server-core second = rate / server core \
         busy fraction. Generator loop idle: percent of the window in which the generator's loop \
         found nothing to do. See the notes for what the cores carry on veth.\n"
    );
    let _ = writeln!(
        s,
        "| server | run | rate | window s | server core busy | user | system | softirq | generator core busy | user | system | softirq | generator loop idle | server process CPU s | per server-core second | server work (est.) | per server-work second | bound by |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for x in runs {
        let Some(c) = x.cpu else { continue };
        let (sc, gc) = (c.server_core.as_ref(), c.generator_core.as_ref());
        let p = |u: Option<&CoreUse>, f: fn(&CoreUse) -> f64| opt(u.map(f), 1);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.server.map_or("?", Server::name),
            x.run,
            opt(x.rate, 0),
            c.window_secs,
            if c.window == "measured" {
                ""
            } else {
                " (whole child run)"
            },
            p(sc, |u| u.busy),
            p(sc, |u| u.user),
            p(sc, |u| u.system),
            p(sc, |u| u.softirq),
            p(gc, |u| u.busy),
            p(gc, |u| u.user),
            p(gc, |u| u.system),
            p(gc, |u| u.softirq),
            opt(c.generator_idle, 1),
            opt(c.server_process_cpu_secs, 2),
            opt(x.per_core_second, 0),
            opt(c.server_work, 1),
            opt(x.per_server_work_second, 0),
            c.bound(),
        );
    }
}
