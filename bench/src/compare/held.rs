//! The `held` scenario: connections opened, held and reset by `c10m-bench conns`, and the
//! memory each costs the server.

use super::*;

impl Run<'_> {
    pub(super) fn held_dataplane(&mut self, server: &mut proc::Server, n: u32) -> Held {
        let mut h = Held {
            server: Some(Server::Dataplane),
            requested: u64::from(n),
            processes: 1,
            method: "bytes/conn: the stack's reserved bytes per connection slot \
                     (management socket); held: the server's established count; \
                     RSS/conn: growth of the daemon's RSS from before the client to the peak, \
                     divided by the peak count"
                .into(),
            ..Held::default()
        };
        if !server.alive() {
            h.error = Some("the dataplane exited before this scenario".into());
            return h;
        }
        let pid = server.pid();
        let rss0 = host::rss_bytes(pid).unwrap_or(0);
        let base = mgmt_stats(&self.sock).map(|s| s.0).unwrap_or(0);
        let args = self.conns_args(DP_ADDR, n, true);
        let pb = bar(u64::from(n), format!("dataplane: hold {n}"), true);
        let (mut peak, mut rss_peak) = (0u64, rss0);
        let mut stats = None;
        let result = self.run_conns(Server::Dataplane, n, &args, || {
            if let Ok(s) = mgmt_stats(&self.sock) {
                let est = s.0.saturating_sub(base);
                pb.set_position(est);
                if est >= peak {
                    peak = est;
                    rss_peak = rss_peak.max(host::rss_bytes(pid).unwrap_or(0));
                    stats = Some(s);
                }
            }
        });
        pb.finish_and_clear();
        match result {
            Ok(c) => {
                let held = c.server_established.unwrap_or(peak).max(peak);
                h.held = Some(held);
                h.bytes_per_conn = c
                    .server_bytes_per_conn
                    .or(stats.map(|s| s.1))
                    .map(|b| b as f64);
                if held > 0 {
                    h.rss_bytes_per_conn = Some(rss_peak.saturating_sub(rss0) as f64 / held as f64);
                }
                h.note = shortfall(&c, n);
                h.client = Some(c);
            }
            Err(e) => h.error = Some(format!("{e:#}")),
        }
        eprintln!("{}", held_line(&h));
        h
    }

    fn conns_args(&self, addr: &str, n: u32, mgmt: bool) -> Vec<String> {
        let a = self.args;
        let mut v = vec![
            "--iface".into(),
            "gen0".into(),
            "--target".into(),
            format!("{addr}:7"),
            "--count".into(),
            n.to_string(),
            "--rate".into(),
            a.held_rate.to_string(),
            "--hold".into(),
            a.hold.to_string(),
            "--max-secs".into(),
            format!("{:.0}", self.conns_secs(n) + 20.0),
        ];
        if mgmt {
            v.push("--mgmt".into());
            v.push(self.sock.display().to_string());
        }
        v
    }

    /// Runs `c10m-bench conns` with `args`, holding `n` connections to `server`, and
    /// calls `poll` every 200 ms or so while it runs; parses its report.
    fn run_conns(
        &self,
        server: Server,
        n: u32,
        args: &[String],
        mut poll: impl FnMut(),
    ) -> anyhow::Result<ConnsOut> {
        let mut last_poll = Instant::now();
        let out = proc::run(
            self.gen_cmd("conns", args),
            &self.logs.join(format!("conns-{}-{n}.log", server.name())),
            self.conns_limit(n),
            &self.stop,
            |_| {
                if last_poll.elapsed() < Duration::from_millis(200) {
                    return;
                }
                last_poll = Instant::now();
                poll();
            },
        );
        proc::parse_json(&out?)
    }

    fn conns_secs(&self, n: u32) -> f64 {
        f64::from(n) / f64::from(self.args.held_rate) + self.args.hold
    }

    fn conns_limit(&self, n: u32) -> Duration {
        Duration::from_secs_f64(self.conns_secs(n) + 60.0)
    }

    pub(super) fn held_kernel(&mut self, first: &mut proc::Server, n: u32) -> Held {
        let procs = n.div_ceil(PER_PROCESS).max(1);
        let mut h = Held {
            server: Some(Server::Kernel),
            requested: u64::from(n),
            processes: procs,
            method: format!(
                "bytes/conn: slab + socket buffer growth per held connection (see notes) + \
                 the server processes' RSS growth per held connection; \
                 held: growth of TCP inuse in {DUT_NS}; RSS/conn: growth of the {procs} \
                 server processes' summed RSS, divided by the peak count"
            ),
            ..Held::default()
        };
        let mut extra = Vec::new();
        // The first process holds the port alone; the others join it on purpose.
        let mut args = self.kernel_args();
        args.push("--reuseport".into());
        for i in 1..procs {
            let cmd = self.dut_cmd(&self.c10m, &args);
            match self.start(
                Server::Kernel,
                &format!("kernel-{i}"),
                cmd,
                proc::Ready::Line,
            ) {
                Ok(s) => extra.push(s),
                Err(e) => {
                    h.error = Some(format!("starting kernel process {i}: {e:#}"));
                    return h;
                }
            }
        }
        let pids: Vec<u32> = std::iter::once(first.pid())
            .chain(extra.iter().map(proc::Server::pid))
            .collect();
        let base = match KernelSample::read(&pids) {
            Ok(s) => s,
            Err(e) => {
                h.error = Some(format!("{e:#}"));
                return h;
            }
        };
        let args = self.conns_args(KERNEL_ADDR, n, false);
        let pb = bar(
            u64::from(n),
            format!("kernel: hold {n} ({procs} processes)"),
            true,
        );
        let mut peak: Option<KernelSample> = None;
        let result = self.run_conns(Server::Kernel, n, &args, || {
            if let Ok(s) = KernelSample::read(&pids) {
                pb.set_position(s.inuse.saturating_sub(base.inuse));
                if peak.as_ref().is_none_or(|p| s.inuse >= p.inuse) {
                    peak = Some(s);
                }
            }
        });
        pb.finish_and_clear();
        for (i, s) in extra.into_iter().enumerate() {
            self.stop_server(s, &format!("kernel-{}", i + 1));
        }
        match result {
            Ok(c) => {
                h.note = shortfall(&c, n);
                h.client = Some(c);
            }
            Err(e) => h.error = Some(format!("{e:#}")),
        }
        let held = peak
            .as_ref()
            .map_or(0, |p| p.inuse.saturating_sub(base.inuse));
        if let Some(p) = peak.filter(|_| held > 0) {
            let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / held as f64;
            let slab = per(p.slab_total(), base.slab_total());
            let buffers = per(p.buffers, base.buffers);
            let rss = per(p.rss, base.rss);
            h.held = Some(held);
            h.slab_bytes_per_conn = Some(slab);
            h.buffer_bytes_per_conn = Some(buffers);
            h.rss_bytes_per_conn = Some(rss);
            h.bytes_per_conn = Some(slab + buffers + rss);
            h.slab_caches = host::SLAB_CACHES
                .iter()
                .zip(p.slab.iter().zip(&base.slab))
                .map(|(name, (&a, &b))| ((*name).to_owned(), per(a, b)))
                .collect();
        } else if h.error.is_none() {
            h.error = Some("no connection seen in the kernel's TCP inuse".into());
        }
        eprintln!("{}", held_line(&h));
        h
    }
}

/// The note for a held run where the client did not get every connection.
fn shortfall(c: &ConnsOut, n: u32) -> Option<String> {
    (c.established < u64::from(n)).then(|| {
        format!(
            "the client established {} of {n}: {} refused or unanswered after {} SYN \
             retransmits (see the server's counters in logs/)",
            c.established, c.failed, c.syn_retransmits
        )
    })
}

fn held_line(h: &Held) -> String {
    let name = h.server.map_or("?", Server::name);
    match &h.error {
        Some(e) => format!("  {name} held {}: failed: {e}", h.requested),
        None => format!(
            "  {name} held {}: {} held, {} bytes/conn, RSS {} bytes/conn{}",
            h.requested,
            h.held.unwrap_or(0),
            h.bytes_per_conn.map_or("-".into(), |b| report::group(b, 0)),
            h.rss_bytes_per_conn
                .map_or("-".into(), |b| report::group(b, 0)),
            h.note.as_ref().map_or(String::new(), |n| format!(" ({n})")),
        ),
    }
}

/// A note of the connections the dataplane refused, from its final report (one JSON line
/// on stdout when stopped: `workers[].stack.refused.{backlog,half_open,slots,buffers,per_source}`).
pub(super) fn refusals(stdout: &[String]) -> Option<String> {
    let line = stdout
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let mut sums: Vec<(String, u64)> = Vec::new();
    for w in v["workers"].as_array()? {
        for (k, n) in w["stack"]["refused"].as_object()? {
            let n = n.as_u64().unwrap_or(0);
            match sums.iter_mut().find(|(name, _)| name == k) {
                Some((_, s)) => *s += n,
                None => sums.push((k.clone(), n)),
            }
        }
    }
    let list: Vec<String> = sums
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    (!list.is_empty()).then(|| {
        format!(
            "The dataplane refused connections over the whole run (its stack's counters, by \
             reason): {}. A full listen backlog (1,024 per listener) means SYNs arrived faster \
             than its core took them.",
            list.join(", ")
        )
    })
}

/// The dataplane's (established connections, reserved bytes per slot).
pub(super) fn mgmt_stats(path: &Path) -> anyhow::Result<(u64, u64)> {
    let mut s =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"{\"cmd\":\"stats\"}\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(line.trim())?;
    let t = &v["stats"]["totals"];
    let est = t["connections"]["established"]
        .as_u64()
        .ok_or_else(|| anyhow!("no established count in {line}"))?;
    Ok((est, t["bytes_per_connection"].as_u64().unwrap_or(0)))
}
