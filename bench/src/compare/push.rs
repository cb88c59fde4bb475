//! The `push` scenario: `--push-conns` live subscribers on each server's push service
//! (`c10m-bench conns --proto push`: every connection sends `SUB`, then a `PING` every
//! `--push-heartbeat-interval` seconds, and the generator publishes once through the
//! servers' management sockets and counts each `MSG`), with the servers' connections
//! and memory sampled every second while the client runs.
//!
//! The dataplane runs `--cores S` itself (not under taskset), one worker, push on
//! 198.18.0.10:5222. The kernel baseline runs `c10m kernel` processes on 198.18.0.2:5222
//! sharing the port (SO_REUSEPORT), each pinned to the server core, one reactor and
//! at most 19,900 connections each (RLIMIT_NOFILE is 20,000 here and cannot be
//! raised), one process per 18,000 subscribers: the kernel spreads connections over the
//! listeners by a hash, not evenly, and the headroom keeps any process from its limit.
//! Each has its own management socket; the generator sums their counts and publishes
//! through each. Both servers close a connection silent for `--push-idle-timeout` (at
//! least 2.5 heartbeat intervals, so a heartbeat resent after a loss still comes in
//! time).

use super::held::{mgmt_stats, refusals};
use super::report::{Push, PushOut, PushSample};
use super::*;

/// The push service's port on both servers.
const PUSH_PORT: u16 = 5222;
/// Subscribers per kernel process, and the connections each may hold (see the module
/// docs).
const PUSH_PER_PROCESS: u32 = 18_000;
const PUSH_MAX_PER_PROCESS: u32 = 19_900;
/// Memory a kernel connection is assumed to need when sizing the kernel's largest run
/// from the memory available (its measured cost is in the report).
const KERNEL_BYTES_GUESS: u64 = 4096;
/// The longest the kernel's connect phase may take when its count is not given.
const KERNEL_CONNECT_SECS: f64 = 60.0;

impl Run<'_> {
    /// The subscribers the kernel side is asked to hold: `--push-kernel-conns`, else
    /// `--push-conns` bounded by half the memory available at 4 KiB a connection and by
    /// [`KERNEL_CONNECT_SECS`] of connecting at `--push-kernel-rate` (so that the whole
    /// run stays bounded at 10M on the dataplane).
    pub(super) fn push_kernel_conns(&self) -> (u32, String) {
        let a = self.args;
        if let Some(k) = a.push_kernel_conns {
            return (k, "--push-kernel-conns".into());
        }
        let avail = host::mem_available().unwrap_or(0);
        let by_memory = (avail / 2 / KERNEL_BYTES_GUESS).min(u64::from(u32::MAX)) as u32;
        let by_time = (KERNEL_CONNECT_SECS * f64::from(a.push_kernel_rate)) as u32;
        if by_memory < a.push_conns.min(by_time) {
            let why = format!(
                "half the memory available ({} MiB) at {KERNEL_BYTES_GUESS} bytes a connection",
                avail >> 20
            );
            (by_memory, why)
        } else if by_time < a.push_conns {
            let why = format!(
                "{KERNEL_CONNECT_SECS} s of connecting at --push-kernel-rate {}",
                a.push_kernel_rate
            );
            (by_time, why)
        } else {
            (a.push_conns, "--push-conns".into())
        }
    }

    /// The servers' idle timeout: `--push-idle-timeout`, else three heartbeat intervals
    /// and 10 s (the generator stops heartbeating about 4 s before it asks the servers
    /// for their final counts).
    pub(super) fn push_idle(&self) -> String {
        let a = self.args;
        let t = a
            .push_idle_timeout
            .unwrap_or(a.push_heartbeat_interval * 3.0 + 10.0);
        format!("{}", t.ceil())
    }

    pub(super) fn push_hold(&self) -> f64 {
        let a = self.args;
        a.push_hold.unwrap_or(a.push_heartbeat_interval + 1.0)
    }

    /// The generator's arguments against `addr` with `n` subscribers at `rate`.
    fn push_args(&self, addr: &str, n: u32, rate: u32, socks: &[PathBuf]) -> Vec<String> {
        let a = self.args;
        let mut v: Vec<String> = vec![
            "--iface".into(),
            "gen0".into(),
            "--target".into(),
            format!("{addr}:{PUSH_PORT}"),
            "--proto".into(),
            "push".into(),
            "--count".into(),
            n.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--topic".into(),
            "news".into(),
            "--heartbeat-interval".into(),
            a.push_heartbeat_interval.to_string(),
            "--hold".into(),
            self.push_hold().to_string(),
            "--publish-after".into(),
            a.push_publish_after.to_string(),
            "--publish-message".into(),
            "hello-subscribers".into(),
            "--max-secs".into(),
            format!("{:.0}", self.push_secs(n, rate)),
        ];
        for s in socks {
            v.push("--mgmt".into());
            v.push(s.display().to_string());
        }
        v
    }

    /// The generator's own bound: connect, hold, publish and its grace, teardown.
    fn push_secs(&self, n: u32, rate: u32) -> f64 {
        f64::from(n) / f64::from(rate) + self.push_hold() + self.args.push_publish_after + 60.0
    }

    /// Runs the generator, calling `sample(t)` about once a second.
    fn push_client(
        &self,
        server: Server,
        n: u32,
        args: &[String],
        rate: u32,
        mut sample: impl FnMut(f64),
    ) -> anyhow::Result<PushOut> {
        let pb = bar(
            self.push_secs(n, rate).ceil() as u64,
            format!("{}: push {n}", server.name()),
            false,
        );
        let mut next = Duration::ZERO;
        let out = proc::run(
            self.gen_cmd("conns", args),
            &self.logs.join(format!("push-{}-{n}.log", server.name())),
            Duration::from_secs_f64(self.push_secs(n, rate) + 60.0),
            &self.stop,
            |t| {
                pb.set_position(t.as_secs());
                if t >= next {
                    next = t + Duration::from_secs(1);
                    sample(t.as_secs_f64());
                }
            },
        );
        pb.finish_and_clear();
        proc::parse_json(&out?)
    }

    pub(super) fn push_dataplane(&mut self) {
        let a = self.args;
        let n = a.push_conns;
        let mut p = Push {
            server: Some(Server::Dataplane),
            requested: u64::from(n),
            processes: 1,
            method: "bytes/conn: the stack's reserved bytes per connection slot (management \
                     socket); held: its established count; samples: the daemon's RSS growth \
                     per held connection"
                .into(),
            ..Push::default()
        };
        if self.interrupted() {
            return;
        }
        let slots = n as usize + 131_072;
        // At least 65,536 frames even for a small run (the daemon's default gives fewer
        // below 1M slots); its default above (up to 262,144: at 10M live fewer dropped
        // frames in bursts, bench/RESULTS.md).
        let frames = (slots / 16).clamp(65_536, 262_144).next_power_of_two();
        let args: Vec<String> = DP_RUN
            .iter()
            .chain(&["--grace", "1"])
            .map(|s| s.to_string())
            .chain([
                "--umem-frames".into(),
                frames.to_string(),
                "--service".into(),
                format!("push:{PUSH_PORT}"),
                "--cores".into(),
                a.server_core.to_string(),
                "--max-conns".into(),
                slots.to_string(),
                "--rx-buf".into(),
                a.rx_buf.to_string(),
                "--tx-buf".into(),
                a.tx_buf.to_string(),
                "--push-idle-timeout".into(),
                self.push_idle(),
                "--mgmt".into(),
                self.sock.display().to_string(),
            ])
            .collect();
        // `--cores` pins the worker; taskset would pin the daemon's other threads (the
        // warmer, the control loop) to the worker's core too.
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", DUT_NS])
            .arg(&self.c10m)
            .args(&args)
            .env("RUST_LOG", "warn");
        let server = match self.start(Server::Dataplane, "push-dataplane", cmd, proc::Ready::Line) {
            Ok(s) => s,
            Err(e) => {
                p.error = Some(format!("the dataplane did not start: {e:#}"));
                self.report.push.push(p);
                return;
            }
        };
        let pid = server.pid();
        let rss0 = host::rss_bytes(pid).unwrap_or(0);
        let (mut peak, mut rss_peak, mut reserved) = (0u64, rss0, None);
        let mut samples = Vec::new();
        let gen_args = self.push_args(DP_ADDR, n, a.push_rate, std::slice::from_ref(&self.sock));
        let result = self.push_client(Server::Dataplane, n, &gen_args, a.push_rate, |t| {
            let Ok((est, per_slot)) = mgmt_stats(&self.sock) else {
                return;
            };
            let rss = host::rss_bytes(pid).unwrap_or(0);
            if est >= peak {
                (peak, rss_peak, reserved) = (est, rss, Some(per_slot));
            }
            samples.push(PushSample {
                secs: t,
                conns: est,
                bytes_per_conn: (est >= 1000).then(|| rss.saturating_sub(rss0) as f64 / est as f64),
            });
        });
        p.samples = samples;
        p.held = Some(peak);
        p.bytes_per_conn = reserved.map(|b| b as f64);
        p.rss_bytes_per_conn =
            (peak > 0).then(|| rss_peak.saturating_sub(rss0) as f64 / peak as f64);
        match result {
            Ok(c) => {
                p.held = c
                    .conns
                    .server_established
                    .map_or(p.held, |s| Some(s.max(peak)));
                p.bytes_per_conn = c
                    .conns
                    .server_bytes_per_conn
                    .map(|b| b as f64)
                    .or(p.bytes_per_conn);
                p.stopped = push_shortfall(&c, n, self.push_secs(n, a.push_rate));
                p.client = Some(c);
            }
            Err(e) => p.error = Some(format!("{e:#}")),
        }
        let out = self.stop_server(server, "push-dataplane");
        if let Some(n) = refusals(&out) {
            p.stopped = Some(p.stopped.map_or(n.clone(), |s| format!("{s} {n}")));
        }
        self.push_done(p);
    }

    pub(super) fn push_kernel(&mut self) {
        let a = self.args;
        let (n, why) = self.push_kernel_conns();
        let procs = n.div_ceil(PUSH_PER_PROCESS).max(1);
        let mut p = Push {
            server: Some(Server::Kernel),
            requested: u64::from(n),
            processes: procs,
            method: format!(
                "{n} subscribers ({why}); bytes/conn: slab + socket buffer growth + the \
                 {procs} server processes' RSS growth, per held connection (as held); held: \
                 growth of TCP inuse in {DUT_NS}"
            ),
            ..Push::default()
        };
        if self.interrupted() || n == 0 {
            return;
        }
        let dir = self.sock.with_file_name("kernel-push");
        let _ = std::fs::create_dir_all(&dir);
        let mut procs_up = Vec::new();
        let mut socks = Vec::new();
        for i in 0..procs {
            let sock = dir.join(format!("{i}.sock"));
            let args: Vec<String> = [
                "kernel",
                "--addr",
                KERNEL_ADDR,
                "--workers",
                "1",
                "--reuseport",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "--service".into(),
                format!("push:{PUSH_PORT}"),
                "--max-conns".into(),
                PUSH_MAX_PER_PROCESS.to_string(),
                "--push-idle-timeout".into(),
                self.push_idle(),
                "--mgmt".into(),
                sock.display().to_string(),
            ])
            .collect();
            let cmd = self.dut_cmd(&self.c10m, &args);
            match self.start(
                Server::Kernel,
                &format!("push-kernel-{i}"),
                cmd,
                proc::Ready::Line,
            ) {
                Ok(s) => {
                    procs_up.push(s);
                    socks.push(sock);
                }
                Err(e) => {
                    p.stopped = Some(format!(
                        "kernel process {i} of {procs} did not start ({e:#}): ran with {i}"
                    ));
                    break;
                }
            }
        }
        if procs_up.is_empty() {
            p.error = p.stopped.take();
            self.report.push.push(p);
            return;
        }
        p.processes = procs_up.len() as u32;
        let pids: Vec<u32> = procs_up.iter().map(proc::Server::pid).collect();
        let base = match KernelSample::read(&pids) {
            Ok(s) => s,
            Err(e) => {
                p.error = Some(format!("{e:#}"));
                self.stop_kernels(procs_up);
                self.report.push.push(p);
                return;
            }
        };
        let overflows0 = host::listen_overflows(pids[0]);
        let mut peak: Option<KernelSample> = None;
        let mut samples = Vec::new();
        let gen_args = self.push_args(KERNEL_ADDR, n, a.push_kernel_rate, &socks);
        let result = self.push_client(Server::Kernel, n, &gen_args, a.push_kernel_rate, |t| {
            let Ok(s) = KernelSample::read(&pids) else {
                return;
            };
            let held = s.inuse.saturating_sub(base.inuse);
            samples.push(PushSample {
                secs: t,
                conns: held,
                bytes_per_conn: (held >= 1000).then(|| kernel_bytes(&s, &base, held)),
            });
            if peak.as_ref().is_none_or(|p| s.inuse >= p.inuse) {
                peak = Some(s);
            }
        });
        p.samples = samples;
        if let Some(pk) = &peak {
            let held = pk.inuse.saturating_sub(base.inuse);
            p.held = Some(held);
            if held > 0 {
                p.bytes_per_conn = Some(kernel_bytes(pk, &base, held));
                p.rss_bytes_per_conn = Some(pk.rss.saturating_sub(base.rss) as f64 / held as f64);
            }
        }
        let overflows = match (overflows0, host::listen_overflows(pids[0])) {
            (Some((o0, d0)), Some((o1, d1))) => (o1.saturating_sub(o0), d1.saturating_sub(d0)),
            _ => (0, 0),
        };
        let ended: Vec<String> = self.stop_kernels(procs_up);
        match result {
            Ok(c) => {
                let short = push_shortfall(&c, n, self.push_secs(n, a.push_kernel_rate));
                let refused: u64 = ended.iter().filter_map(|l| kernel_refused(l)).sum();
                let mut why: Vec<String> = p.stopped.take().into_iter().chain(short).collect();
                if overflows != (0, 0) {
                    why.push(format!(
                        "the listeners' accept queues overflowed {} times ({} SYNs or \
                         handshake ACKs dropped: TcpExt ListenOverflows / ListenDrops in \
                         {DUT_NS}): connections the client counted as open that the \
                         kernel never accepted, at {} SYNs/s",
                        overflows.0, overflows.1, a.push_kernel_rate
                    ));
                }
                if refused > 0 {
                    why.push(format!(
                        "the kernel processes refused {refused} connections at their \
                         {PUSH_MAX_PER_PROCESS}-connection limit (RLIMIT_NOFILE 20,000)"
                    ));
                }
                p.stopped = (!why.is_empty()).then(|| why.join("; "));
                p.client = Some(c);
            }
            Err(e) => p.error = Some(format!("{e:#}")),
        }
        let _ = std::fs::remove_dir_all(&dir);
        self.push_done(p);
    }

    /// Records a push run: its progress line, a note of where it held fewer than asked and
    /// why, and its record.
    fn push_done(&mut self, p: Push) {
        eprintln!("{}", push_line(&p));
        if let Some(why) = &p.stopped {
            let name = p.server.map_or("?", Server::name);
            let held = p.held.map_or("?".into(), |h| report::group(h as f64, 0));
            self.report.notes.push(format!(
                "push, {name}: held {held} of {} asked: {why}",
                report::group(p.requested as f64, 0)
            ));
        }
        self.report.push.push(p);
    }

    /// Stops the kernel processes; returns what each printed after `ready`.
    fn stop_kernels(&self, procs: Vec<proc::Server>) -> Vec<String> {
        let pb = bar(
            procs.len() as u64,
            "stopping the kernel processes".into(),
            true,
        );
        let mut out = Vec::new();
        for s in procs {
            out.extend(s.stop());
            pb.inc(1);
        }
        pb.finish_and_clear();
        out
    }
}

/// Slab + socket buffers + RSS growth from `base` to `s`, per held connection.
fn kernel_bytes(s: &KernelSample, base: &KernelSample, held: u64) -> f64 {
    let grow = s.slab_total().saturating_sub(base.slab_total())
        + s.buffers.saturating_sub(base.buffers)
        + s.rss.saturating_sub(base.rss);
    grow as f64 / held as f64
}

/// `refused` of a `c10m kernel` process's final JSON line.
fn kernel_refused(line: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    v["refused"].as_u64()
}

/// Why a run holds fewer subscribers than asked, from the client's side (`bound`: the
/// generator's `--max-secs`).
fn push_shortfall(c: &PushOut, n: u32, bound: f64) -> Option<String> {
    let k = &c.conns;
    let mut why = (k.established < u64::from(n) || c.subscribed < k.established).then(|| {
        format!(
            "the client established {} of {n} and {} subscribed: {} refused or unanswered \
             after {} SYN retransmits",
            k.established, c.subscribed, k.failed, k.syn_retransmits
        )
    })?;
    if k.established + k.failed < u64::from(n) {
        why.push_str(&format!(
            "; connecting had not ended when the generator's bound (--max-secs {bound:.0}) \
             did, so nothing was published"
        ));
    }
    Some(why)
}

fn push_line(p: &Push) -> String {
    let name = p.server.map_or("?", Server::name);
    match (&p.client, &p.error) {
        (Some(c), _) => format!(
            "  {name} push {}: {} held, {}/{} heartbeats answered (RTT p50 {} µs, p99 {} µs), \
             {} of {} delivered in {:.2} s, {} duplicates, {} missed, {} bytes/conn{}",
            p.requested,
            p.held.unwrap_or(0),
            c.heartbeats_ok,
            c.heartbeats_sent,
            c.heartbeat_rtt.p50_us,
            c.heartbeat_rtt.p99_us,
            c.delivered,
            c.published_to,
            c.delivery_secs,
            c.duplicates,
            c.missed,
            p.bytes_per_conn.map_or("-".into(), |b| report::group(b, 0)),
            p.stopped
                .as_ref()
                .map_or(String::new(), |s| format!(" ({s})")),
        ),
        (None, e) => format!(
            "  {name} push {}: failed: {}",
            p.requested,
            e.as_deref().unwrap_or("?")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortfall_says_when_the_time_bound_ended_the_connect_phase() {
        let mut c = PushOut::default();
        (c.conns.established, c.subscribed) = (10, 10);
        assert_eq!(push_shortfall(&c, 10, 60.0), None);
        c.conns.established = 7;
        let why = push_shortfall(&c, 10, 60.0).unwrap();
        assert!(
            why.contains("established 7 of 10") && why.contains("--max-secs 60"),
            "{why}"
        );
        c.conns.failed = 3;
        let why = push_shortfall(&c, 10, 60.0).unwrap();
        assert!(!why.contains("--max-secs"), "{why}");
    }

    #[test]
    fn a_kernel_process_report_gives_its_refusals() {
        let line = r#"{"accepted":19000,"closed":19000,"idle_closed":0,"refused":12,"commands":1}"#;
        assert_eq!(kernel_refused(line), Some(12));
        assert_eq!(kernel_refused("ready"), None);
    }

    #[test]
    fn kernel_bytes_sum_slab_buffers_and_rss_growth() {
        let base = KernelSample {
            inuse: 10,
            buffers: 4096,
            slab: vec![1000, 0],
            rss: 1 << 20,
        };
        let s = KernelSample {
            inuse: 1010,
            buffers: 4096 * 101,
            slab: vec![1000 + 2_000_000, 500_000],
            rss: (1 << 20) + 100_000,
        };
        let per = kernel_bytes(&s, &base, 1000);
        assert!(
            (per - (2_500_000.0 + 409_600.0 + 100_000.0) / 1000.0).abs() < 1e-9,
            "{per}"
        );
    }
}
