//! The `flood` scenario: each server's echo service under a random-source SYN flood
//! (`c10m-bench flood` in c10m-gen), measured by ordinary kernel clients.
//!
//! Per server, on its echo port, in this order:
//!
//! 1. one echo connection is opened by a kernel client in c10m-gen (a thread that
//!    enters the namespace and is pinned to the generator core); the server's RSS and
//!    its RST (and cookie) counters are read;
//! 2. a *decoy* flood — the same generator at the same rate sending the same SYNs to
//!    the server's own address, but with a malformed IPv4 header (`--kind runt`,
//!    IHL 4), which the server's host discards at its first look (the dataplane's XDP
//!    program, the kernel's `ip_rcv`) — runs while the echo connection's round trips
//!    per second are measured over 3 s ("before"), and beside them, on another thread
//!    on the same core, a kernel client opens new connections one after another
//!    (`before`). On two cores the generator and the clients share the generator
//!    core, and on veth a frame's receive work runs on the core that sent it: the
//!    decoy loads that core with the same frames at the same rate, so what "during"
//!    loses against "before" is what answering the flood costs (the server's SYN
//!    handling and, on this bed, the replies reaching gen0 on the same core), not the
//!    generator's own work. A decoy to an address nobody has would not do: on veth
//!    with an XDP program attached, every frame passed to the kernel is copied into a
//!    new buffer first, which costs more than answering a SYN in XDP;
//! 3. the real flood for `--flood-secs`: after 1 s the round trips are measured over
//!    the same window ("during") while, beside them, the kernel client opens new
//!    connections one after another (connect, write, read the echo, close; 3 s each),
//!    `--flood-conns` of them, until 0.2 s before the flood ends at the latest (fewer
//!    is noted in the report);
//! 4. 1 s after the flood, 20 new connections (1 s each) and the round trips again
//!    ("after"); RSS and counters once more.
//!
//! The generator runs at nice 19 in both floods: it takes every cycle the clients
//! leave, but a client that wakes runs at once rather than after the generator's time
//! slice (on a real network the clients are other machines). Its top rate overruns
//! dut0's veth queue (a ring of 256 frames), so now and then a client's SYN is lost
//! there like any flood frame, and the kernel client resends it after its 1 s initial
//! RTO: that connection succeeds, 1 s late.
//!
//! RSTs the server sent: the dataplane's `resets_sent` (management socket); the
//! kernel's `TcpOutRsts` in c10m-dut (`nstat`, namespace-wide). Both include RSTs to the
//! legitimate clients. The generator itself counts what reached the spoofed sources
//! (SYN-ACKs, RSTs): the backscatter. SYN cookies: the dataplane's `cookies_sent`
//! plus its XDP program's `cookies` (the `stats` answer's `xdp`), the kernel's `TcpExtSyncookiesSent`; `net.ipv4.tcp_syncookies=1`
//! is set in c10m-dut for the run.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};

use super::report::{Attempts, Flood, FloodOut};
use super::*;
use crate::net::on_gen;

/// Flood time before a measurement opens.
const SETTLE: Duration = Duration::from_secs(1);
/// Each round-trip window.
const WINDOW: Duration = Duration::from_secs(3);
/// Limit of each step of a new connection during the flood.
const LEGIT_TIMEOUT: Duration = Duration::from_secs(3);
/// New connections after the flood, and the limit of each.
const AFTER: u32 = 20;
const AFTER_TIMEOUT: Duration = Duration::from_secs(1);

impl Run<'_> {
    /// The flood scenario against `server`'s echo service (see the module docs).
    pub(super) fn flood(&mut self, server: Server, proc: &mut proc::Server) {
        let mut f = Flood {
            server: Some(server),
            ..Flood::default()
        };
        if !proc.alive() {
            f.error = Some(format!("the {} server exited", server.name()));
        } else if let Err(e) = self.flood_run(server, proc.pid(), &mut f) {
            f.error = Some(format!("{e:#}"));
        }
        let wanted = u64::from(self.args.flood_conns);
        if f.error.is_none() && f.during.attempted < wanted && !self.interrupted() {
            self.report.notes.push(format!(
                "flood, {}: only {} of --flood-conns {wanted} new connections could be opened \
                 before the flood ended (a lost SYN costs its client a 1 s retransmission)",
                server.name(),
                f.during.attempted
            ));
        }
        eprintln!("{}", flood_line(&f));
        self.report.flood.push(f);
    }

    fn flood_run(&self, server: Server, pid: u32, f: &mut Flood) -> anyhow::Result<()> {
        let a = self.args;
        let addr: SocketAddr = match server {
            Server::Dataplane => format!("{DP_ADDR}:7"),
            _ => format!("{KERNEL_ADDR}:7"),
        }
        .parse()?;
        let core = a.gen_core;
        let mut echo = on_gen(core, || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .with_context(|| format!("the echo connection to {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.set_nodelay(true)?;
            round_trips(&mut s, Duration::from_millis(200))?;
            Ok(s)
        })?;
        let counters_before = self.server_counters(server);
        f.rss_before = host::rss_bytes(pid);

        let name = server.name();
        let decoy_secs = (SETTLE + WINDOW).as_secs_f64() + 0.5;
        let decoy_args = self.flood_args("runt", &addr.to_string(), decoy_secs);
        let (decoy, (before, legit_before)) = self.while_flooding(
            &format!("flood-decoy-{name}"),
            &decoy_args,
            decoy_secs,
            || {
                std::thread::sleep(SETTLE);
                self.echo_beside_attempts(&mut echo, addr, Instant::now() + WINDOW)
            },
        )?;
        f.decoy = Some(decoy);
        f.rtt_before = Some(before);
        f.before = legit_before;

        let secs = a.flood_secs;
        let args = self.flood_args("syn", &addr.to_string(), secs);
        // Only attempts that start well inside the flood count.
        let ends = Instant::now() + Duration::from_secs_f64(secs) - Duration::from_millis(200);
        let (out, (during, legit)) =
            self.while_flooding(&format!("flood-{name}"), &args, secs, || {
                std::thread::sleep(SETTLE);
                self.echo_beside_attempts(&mut echo, addr, ends)
            })?;
        f.generator = Some(out);
        f.rtt_during = Some(during);
        f.during = legit;

        std::thread::sleep(Duration::from_secs(1));
        let (after, rtt_after) = on_gen(core, || {
            let x = self.attempts(addr, AFTER, Instant::now() + WINDOW, AFTER_TIMEOUT);
            Ok((x, round_trips(&mut echo, WINDOW).ok()))
        })?;
        f.after = after;
        f.rtt_after = rtt_after;
        f.rss_after = host::rss_bytes(pid);
        let counters_after = self.server_counters(server);
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        f.resets_sent = delta(counters_before.0, counters_after.0);
        f.cookies_sent = delta(counters_before.1, counters_after.1);
        Ok(())
    }

    /// Round trips per second on `echo` over [`WINDOW`] while, beside it on the same
    /// core, a kernel client opens up to `--flood-conns` new connections one after
    /// another until `ends`. (Not more: a client opening connections without a pause
    /// would take the core from the niced generator, and the flood would not be one.)
    fn echo_beside_attempts(
        &self,
        echo: &mut TcpStream,
        addr: SocketAddr,
        ends: Instant,
    ) -> anyhow::Result<(f64, Attempts)> {
        let core = self.args.gen_core;
        std::thread::scope(|s| {
            let rtt = s.spawn(|| on_gen(core, || round_trips(echo, WINDOW)));
            let legit = on_gen(core, || {
                Ok(self.attempts(addr, self.args.flood_conns, ends, LEGIT_TIMEOUT))
            });
            let rtt = rtt
                .join()
                .map_err(|_| anyhow!("the echo thread panicked"))?;
            Ok((rtt?, legit?))
        })
    }

    /// Up to `n` new connections one after another, each step within `limit`, until
    /// `ends` (or an interrupt).
    fn attempts(&self, addr: SocketAddr, n: u32, ends: Instant, limit: Duration) -> Attempts {
        let mut x = Attempts::default();
        for i in 0..n {
            if self.interrupted() || Instant::now() >= ends {
                break;
            }
            attempt(addr, i, limit, &mut x);
        }
        x
    }

    /// `c10m-bench flood` arguments: frames of `kind` at `--flood-rate` for `secs`.
    fn flood_args(&self, kind: &str, target: &str, secs: f64) -> Vec<String> {
        [
            "--kind",
            kind,
            "--iface",
            "gen0",
            "--target",
            target,
            "--rate",
            &self.args.flood_rate,
            "--secs",
            &format!("{secs}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs the flood generator with `args` (about `secs`) while `measure` runs here;
    /// the generator's report and what `measure` returned.
    fn while_flooding<T: Send>(
        &self,
        name: &str,
        args: &[String],
        secs: f64,
        measure: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<(FloodOut, T)> {
        // Niced: it still takes every cycle the clients leave on the shared core, but a
        // client that wakes runs at once instead of after the generator's time slice.
        let cmd = self.gen_cmd_nice("flood", args, 19);
        let log = self.logs.join(format!("{name}.log"));
        let stop: &AtomicBool = &self.stop;
        let limit = Duration::from_secs_f64(secs + 30.0);
        std::thread::scope(|s| {
            let generator = s.spawn(move || proc::run(cmd, &log, limit, stop, |_| {}));
            let measured = measure();
            let out = generator
                .join()
                .map_err(|_| anyhow!("the flood thread panicked"))??;
            Ok((proc::parse_json(&out)?, measured?))
        })
    }

    /// The server's (RSTs sent, SYN cookies sent) counters, where it has them.
    fn server_counters(&self, server: Server) -> (Option<u64>, Option<u64>) {
        match server {
            Server::Dataplane => {
                let stats = mgmt_stats(&self.sock).ok();
                let get = |k: &str| stats.as_ref().and_then(|s| s["totals"][k].as_u64());
                // The stack's own cookies and the XDP program's.
                let xdp = stats.as_ref().and_then(|s| s["xdp"]["cookies"].as_u64());
                let cookies = get("cookies_sent").map(|c| c + xdp.unwrap_or(0));
                (get("resets_sent"), cookies)
            }
            _ => {
                let out = Command::new("ip")
                    .args(["netns", "exec", DUT_NS, "nstat", "-asz"])
                    .args(["TcpOutRsts", "TcpExtSyncookiesSent"])
                    .output();
                let text = out.map_or(String::new(), |o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                });
                (
                    nstat_value(&text, "TcpOutRsts"),
                    nstat_value(&text, "TcpExtSyncookiesSent"),
                )
            }
        }
    }
}

/// The management socket's `stats` answer (`totals`, `workers`, `xdp`).
pub(crate) fn mgmt_stats(path: &Path) -> anyhow::Result<serde_json::Value> {
    let mut s =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"{\"cmd\":\"stats\"}\n")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let mut v: serde_json::Value = serde_json::from_str(line.trim())?;
    Ok(v["stats"].take())
}

/// A counter of `nstat -a` output (`NAME  VALUE  RATE` lines).
pub(crate) fn nstat_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == name).then(|| w.next()?.parse().ok())?
    })
}

/// Round trips of 32 bytes per second on `s` over `window`, each echo checked.
fn round_trips(s: &mut TcpStream, window: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let (mut n, mut buf) = (0u64, [0u8; 32]);
    while start.elapsed() < window {
        let msg = [(n % 251) as u8; 32];
        s.write_all(&msg).context("the echo connection")?;
        s.read_exact(&mut buf).context("the echo connection")?;
        if buf != msg {
            bail!("the echo connection returned other bytes");
        }
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// One new connection: connect, write, read the echo, close, `limit` for each step.
fn attempt(addr: SocketAddr, i: u32, limit: Duration, a: &mut Attempts) {
    a.attempted += 1;
    let start = Instant::now();
    let result = (|| {
        let mut s = TcpStream::connect_timeout(&addr, limit)?;
        s.set_read_timeout(Some(limit))?;
        s.set_write_timeout(Some(limit))?;
        let msg = format!("legit {i:06}\n");
        s.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(std::io::Error::other("bad echo"));
        }
        Ok(())
    })();
    a.slowest_ms = a.slowest_ms.max(start.elapsed().as_millis() as u64);
    match result {
        Ok(()) => a.ok += 1,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => a.refused += 1,
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            a.timed_out += 1
        }
        Err(_) => a.other += 1,
    }
}

fn flood_line(f: &Flood) -> String {
    let name = f.server.map_or("?", Server::name);
    if let Some(e) = &f.error {
        return format!("  {name} flood: failed: {e}");
    }
    let g = f.generator.as_ref();
    format!(
        "  {name} flood: {:.0} SYNs/s; new connections {}/{} ok; echo round trips/s {:.0} → {:.0} → {}; \
         RSTs to spoofed sources {}; 1 s after {}/{} ok",
        g.map_or(0.0, |g| g.rate_achieved),
        f.during.ok,
        f.during.attempted,
        f.rtt_before.unwrap_or(0.0),
        f.rtt_during.unwrap_or(0.0),
        f.rtt_after.map_or("-".into(), |r| format!("{r:.0}")),
        g.map_or("-".into(), |g| g.replies.rst.to_string()),
        f.after.ok,
        f.after.attempted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nstat_counters_by_name() {
        let text = "#kernel\nTcpOutRsts                      48                 0.0\n\
                    TcpExtSyncookiesSent            7                  0.0\n";
        assert_eq!(nstat_value(text, "TcpOutRsts"), Some(48));
        assert_eq!(nstat_value(text, "TcpExtSyncookiesSent"), Some(7));
        assert_eq!(nstat_value(text, "TcpInSegs"), None);
    }
}
