//! The servers in turn — the dataplane, the reflector (the ceiling), the kernel baseline,
//! nginx where installed — and the `rps` and `cps` scenarios against each.

use super::held::refusals;
use super::report::{CoreUse, Cpu, Measured, Output};
use super::*;
use crate::measure::{PHASE_MEASURED, PHASE_MEASURING};

impl Run<'_> {
    // ---- the dataplane -------------------------------------------------------------

    pub(super) fn dataplane(&mut self) {
        if self.interrupted() {
            return;
        }
        let a = self.args;
        let args: Vec<String> = DP_RUN
            .iter()
            .chain(&["--service", "http:80", "--service", "echo:7"])
            .map(|s| s.to_string())
            .chain([
                "--cores".into(),
                a.server_core.to_string(),
                "--max-conns".into(),
                self.dp_slots().to_string(),
                "--rx-buf".into(),
                a.rx_buf.to_string(),
                "--tx-buf".into(),
                a.tx_buf.to_string(),
                "--grace".into(),
                "1".into(),
                "--mgmt".into(),
                self.sock.display().to_string(),
            ])
            .collect();
        let cmd = self.dut_cmd(&self.c10m, &args);
        let mut server = match self.start(Server::Dataplane, "dataplane", cmd, proc::Ready::Line) {
            Ok(s) => s,
            Err(e) => {
                self.note_failure("the dataplane did not start", &e);
                self.fail_all(Server::Dataplane, &format!("{e:#}"));
                return;
            }
        };
        if self.has(Scenario::Held) {
            for &n in &a.held {
                if self.interrupted() {
                    break;
                }
                let h = self.held_dataplane(&mut server, n);
                self.report.held.push(h);
            }
        }
        self.load(Server::Dataplane, &dp_target(a.proto), &mut server);
        if self.has(Scenario::Flood) && !self.interrupted() {
            self.flood(Server::Dataplane, &mut server);
        }
        let out = self.stop_server(server, "dataplane");
        if let Some(n) = refusals(&out) {
            self.report.notes.push(n);
        }
    }

    // ---- the reflector ---------------------------------------------------------------

    /// `c10m-bench reflect` where the dataplane was — same interface, address, core and
    /// XDP program — against the same rps and cps runs: the ceiling of this path.
    pub(super) fn reflector(&mut self) {
        let a = self.args;
        if self.interrupted() || !(self.has(Scenario::Rps) || self.has(Scenario::Cps)) {
            return;
        }
        let args: Vec<String> = ["reflect", "--iface", "dut0", "--addr", "198.18.0.10/24"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "--port".into(),
                a.proto.port().to_string(),
                "--cores".into(),
                a.server_core.to_string(),
            ])
            .collect();
        let cmd = self.dut_cmd(&self.bench, &args);
        let mut server = match self.start(Server::Reflector, "reflector", cmd, proc::Ready::Line) {
            Ok(s) => s,
            Err(e) => {
                self.note_failure("the reflector did not start", &e);
                self.fail_all(Server::Reflector, &format!("{e:#}"));
                return;
            }
        };
        self.load(Server::Reflector, &dp_target(a.proto), &mut server);
        self.stop_server(server, "reflector");
    }

    /// Records every scenario of `server` as failed with `why`.
    fn fail_all(&mut self, server: Server, why: &str) {
        let a = self.args;
        // The reflector runs rps and cps only.
        let all = server != Server::Reflector;
        if all && self.has(Scenario::Held) {
            for &n in &a.held {
                self.report.held.push(Held {
                    server: Some(server),
                    requested: u64::from(n),
                    error: Some(why.into()),
                    ..Held::default()
                });
            }
        }
        if self.has(Scenario::Rps) {
            for &c in &a.rps_conns {
                let x = self.rps(server, c, Measured::failed(why));
                self.report.rps.push(x);
            }
        }
        if self.has(Scenario::Cps) {
            for &c in &a.cps_concurrency {
                let x = self.cps(server, c, Measured::failed(why));
                self.report.cps.push(x);
            }
        }
        if all && self.has(Scenario::Flood) {
            self.report.flood.push(report::Flood {
                server: Some(server),
                error: Some(why.into()),
                ..report::Flood::default()
            });
        }
    }

    fn rps(&self, server: Server, conns: u32, measured: Measured<RpsOut>) -> Rps {
        Rps {
            server: Some(server),
            proto: self.args.proto.name().into(),
            conns: u64::from(conns),
            pipeline: u64::from(self.args.pipeline),
            measured,
        }
    }

    fn cps(&self, server: Server, concurrency: u32, measured: Measured<CpsOut>) -> Cps {
        Cps {
            server: Some(server),
            proto: self.args.proto.name().into(),
            concurrency: u64::from(concurrency),
            measured,
        }
    }

    // ---- rps and cps, for either server ------------------------------------------------

    /// Runs rps and cps against `target` (ADDR:PORT) of `server`.
    fn load(&mut self, server: Server, target: &str, proc: &mut proc::Server) {
        let a = self.args;
        if self.has(Scenario::Rps) {
            for &c in &a.rps_conns {
                if self.interrupted() {
                    break;
                }
                let args = [
                    ("--conns", c.to_string()),
                    ("--pipeline", a.pipeline.to_string()),
                    ("--secs", a.rps_secs.to_string()),
                    ("--warmup", a.warmup.to_string()),
                ];
                let m = self.measure(server, target, proc, c, &args, a.rps_secs + a.warmup);
                let x = self.rps(server, c, m);
                self.report.rps.push(x);
            }
        }
        if self.has(Scenario::Cps) {
            for &c in &a.cps_concurrency {
                if self.interrupted() {
                    break;
                }
                let args = [
                    ("--concurrency", c.to_string()),
                    ("--secs", a.cps_secs.to_string()),
                ];
                let m = self.measure(server, target, proc, c, &args, a.cps_secs);
                let x = self.cps(server, c, m);
                self.report.cps.push(x);
            }
        }
    }

    /// One run of generator `O` (`rps`, `cps`) against `target` of `server` at level
    /// `c`, with `args` after the target and protocol, for about `secs`: its figures or
    /// why it failed, the CPU use and the rates per busy second; a progress line.
    fn measure<O: Output>(
        &self,
        server: Server,
        target: &str,
        proc: &mut proc::Server,
        c: u32,
        args: &[(&str, String)],
        secs: f64,
    ) -> Measured<O> {
        let mut m = Measured::failed(&format!("the {} server exited", server.name()));
        if proc.alive() {
            let args: Vec<String> = [
                ("--iface", "gen0".to_owned()),
                ("--target", target.to_owned()),
                ("--proto", self.args.proto.name().to_owned()),
            ]
            .iter()
            .chain(args)
            .flat_map(|(k, v)| [(*k).to_owned(), v.clone()])
            .collect();
            let name = format!("{}-{}-{c}", O::NAME, server.name());
            match self.timed::<O>(O::NAME, &name, &args, secs, proc.pid()) {
                Ok((o, cpu)) => {
                    m.error = None;
                    m.per_core_second = server_core_rate(o.rate(), &cpu);
                    m.per_server_work_second = cpu
                        .server_work
                        .and_then(|w| cpu::per_core_second(o.rate(), w));
                    m.cpu = Some(Cpu {
                        generator_idle: o.idle_pct(),
                        ..cpu
                    });
                    m.out = Some(o);
                }
                Err(e) => m.error = Some(format!("{e:#}")),
            }
        }
        eprintln!(
            "  {} {} c={c}: {}",
            server.name(),
            O::NAME,
            match (&m.out, &m.error) {
                (Some(o), _) => format!("{}{}", o.summary(), busy_text(m.cpu.as_ref())),
                (None, e) => format!("failed: {}", e.as_deref().unwrap_or("?")),
            }
        );
        m
    }

    /// Runs generator `sub` for about `secs` with a time bar; parses its JSON. Samples
    /// CPU use (both cores, and `server_pid` with its children) over the generator's
    /// measured window: the generator prints [`PHASE_MEASURING`] and
    /// [`PHASE_MEASURED`] on stderr (its log, read every 100 ms) as the window opens and
    /// closes. Without them the whole child run is sampled, and the result says so.
    fn timed<T: serde::de::DeserializeOwned>(
        &self,
        sub: &str,
        name: &str,
        args: &[String],
        secs: f64,
        server_pid: u32,
    ) -> anyhow::Result<(T, Cpu)> {
        let pb = bar(secs.ceil() as u64, name.to_owned(), false);
        let log = self.logs.join(format!("{name}.log"));
        let pids = cpu::tree(server_pid);
        let spawned = cpu::Sample::take(&pids);
        let (mut open, mut close) = (None, None);
        let out = proc::run(
            self.gen_cmd(sub, args),
            &log,
            Duration::from_secs_f64(secs + 30.0),
            &self.stop,
            |t| {
                pb.set_position(t.as_secs());
                if close.is_some() {
                    return;
                }
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if open.is_none() && text.contains(PHASE_MEASURING) {
                    open = Some(cpu::Sample::take(&pids));
                }
                if open.is_some() && text.contains(PHASE_MEASURED) {
                    close = Some(cpu::Sample::take(&pids));
                }
            },
        );
        // A generator that exits within 100 ms of closing its window is sampled here.
        let exited = cpu::Sample::take(&pids);
        pb.finish_and_clear();
        let out: T = proc::parse_json(&out?)?;
        let (a, window) = match &open {
            Some(a) => (a, "measured"),
            None => (&spawned, "child run"),
        };
        let b = close.as_ref().unwrap_or(&exited);
        let c = cpu::between(a, b, self.args.server_core, self.args.gen_core, window);
        Ok((out, c))
    }

    // ---- the kernel ----------------------------------------------------------------

    pub(super) fn kernel_args(&self) -> Vec<String> {
        [
            "kernel",
            "--addr",
            KERNEL_ADDR,
            "--service",
            "http:80",
            "--service",
            "echo:7",
            "--workers",
            "1",
            "--max-conns",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([PER_PROCESS.to_string()])
        .collect()
    }

    pub(super) fn kernel(&mut self) {
        if self.interrupted() {
            return;
        }
        let args = self.kernel_args();
        let cmd = self.dut_cmd(&self.c10m, &args);
        let mut first = match self.start(Server::Kernel, "kernel-0", cmd, proc::Ready::Line) {
            Ok(s) => s,
            Err(e) => {
                self.note_failure("the kernel server did not start", &e);
                self.fail_all(Server::Kernel, &format!("{e:#}"));
                return;
            }
        };
        if self.has(Scenario::Held) {
            for &n in &self.args.held.clone() {
                if self.interrupted() {
                    break;
                }
                let h = self.held_kernel(&mut first, n);
                self.report.held.push(h);
            }
        }
        self.load(Server::Kernel, &kernel_target(self.args.proto), &mut first);
        if self.has(Scenario::Flood) && !self.interrupted() {
            self.flood(Server::Kernel, &mut first);
        }
        self.stop_server(first, "kernel-0");
    }

    /// nginx for http, where installed: one worker pinned to the server core, epoll,
    /// SO_REUSEPORT, keep-alive, no access log, answering every request with the same
    /// 13-byte body as the other two servers. Its files go to `nginx/` in the report.
    pub(super) fn nginx(&mut self) {
        let a = self.args;
        let wanted = a.proto == Proto::Http && (self.has(Scenario::Rps) || self.has(Scenario::Cps));
        if self.interrupted() || !wanted {
            return;
        }
        let Some(bin) = host::which("nginx") else {
            return;
        };
        let dir = match self.nginx_files() {
            Ok(d) => d,
            Err(e) => {
                self.note_failure("nginx not run", &e);
                return;
            }
        };
        let args: Vec<String> = vec![
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            dir.join("nginx.conf").display().to_string(),
        ];
        let cmd = self.dut_cmd(&bin, &args);
        let ready = proc::Ready::Listen(NGINX_PORT);
        let mut server = match self.start(Server::Nginx, "nginx", cmd, ready) {
            Ok(s) => s,
            Err(e) => {
                self.note_failure("nginx did not start", &e);
                return;
            }
        };
        let target = format!("{KERNEL_ADDR}:{NGINX_PORT}");
        self.load(Server::Nginx, &target, &mut server);
        self.stop_server(server, "nginx");
    }

    fn nginx_files(&mut self) -> anyhow::Result<PathBuf> {
        let dir = self
            .logs
            .parent()
            .context("the report directory")?
            .join("nginx");
        std::fs::create_dir_all(dir.join("tmp"))?;
        let conf = nginx_conf(&std::fs::canonicalize(&dir)?);
        std::fs::write(dir.join("nginx.conf"), &conf)?;
        self.report.notes.push(format!(
            "nginx configuration (nginx/nginx.conf): {}",
            conf.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
        Ok(std::fs::canonicalize(&dir)?)
    }
}

/// `rate` per busy second of the server core.
fn server_core_rate(rate: f64, c: &Cpu) -> Option<f64> {
    cpu::per_core_second(rate, c.server_core.as_ref()?.busy)
}

/// `, server core 97% busy, generator core 100%` for the progress lines.
fn busy_text(c: Option<&Cpu>) -> String {
    let busy = |u: Option<&CoreUse>| u.map_or("?".to_owned(), |u| format!("{:.0}%", u.busy));
    c.map_or(String::new(), |c| {
        format!(
            ", server core {} busy, generator core {} (its loop idle {})",
            busy(c.server_core.as_ref()),
            busy(c.generator_core.as_ref()),
            c.generator_idle
                .map_or("?".to_owned(), |i| format!("{i:.0}%"))
        )
    })
}

fn dp_target(p: Proto) -> String {
    format!("{DP_ADDR}:{}", p.port())
}

fn kernel_target(p: Proto) -> String {
    format!("{KERNEL_ADDR}:{}", p.port())
}

/// nginx tuned as an operator tunes a benchmark target (files under `dir`).
fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {PER_PROCESS};
events {{ worker_connections {PER_PROCESS}; use epoll; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  tcp_nodelay on;
  server {{
    listen {KERNEL_ADDR}:{NGINX_PORT} reuseport backlog=65535;
    location / {{ default_type text/plain; return 200 \"Hello, World!\"; }}
  }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_listens_on_the_kernel_address_with_reuseport() {
        let c = nginx_conf(Path::new("/tmp/x"));
        assert!(
            c.contains("listen 198.18.0.2:8080 reuseport backlog=65535;"),
            "{c}"
        );
        assert!(
            c.contains("worker_processes 1;") && c.contains("daemon off;"),
            "{c}"
        );
        assert!(c.contains("return 200 \"Hello, World!\";"), "{c}");
        assert!(c.contains("pid /tmp/x/nginx.pid;"), "{c}");
        // Balanced braces.
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }

    #[test]
    fn targets_use_the_protocol_port() {
        assert_eq!(dp_target(Proto::Http), "198.18.0.10:80");
        assert_eq!(kernel_target(Proto::Echo), "198.18.0.2:7");
    }
}
