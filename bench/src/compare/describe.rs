//! The settings and notes of a run: everything a reader needs to repeat it.

use super::*;

impl Run<'_> {
    /// Settings and notes: everything a reader needs to repeat the run.
    pub(super) fn describe(&mut self) {
        let a = self.args;
        let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let scen: Vec<&str> = a
            .scenarios
            .iter()
            .map(|s| match s {
                Scenario::Held => "held",
                Scenario::Rps => "rps",
                Scenario::Cps => "cps",
                Scenario::Flood => "flood",
                Scenario::Push => "push",
            })
            .collect();
        let nofile = host::nofile_limit();
        let nofile_text = nofile.map_or("unknown".into(), |n| n.to_string());
        let slots = self.dp_slots();
        let (bench, c10m) = (
            self.bench.display().to_string(),
            self.c10m.display().to_string(),
        );
        let classic = self.classic();
        let s = &mut self.report.settings;
        let mut set = |k: &str, v: String| s.push((k.to_owned(), v));
        set("scenarios", scen.join(", "));
        set("held: connection counts", list(&a.held));
        set("held: SYNs per second", a.held_rate.to_string());
        set("held: seconds held", a.hold.to_string());
        set(
            "held: client",
            "c10m-bench conns, echo:7, a 16-byte echo request on every 100th connection, \
             an 8-byte heartbeat each second on every 1000th"
                .into(),
        );
        set("rps/cps protocol", a.proto.name().into());
        set("rps: concurrency (connections)", list(&a.rps_conns));
        set("rps: pipeline depth", a.pipeline.to_string());
        set("rps: seconds measured per level", a.rps_secs.to_string());
        set("rps: warm-up seconds per level", a.warmup.to_string());
        set("cps: concurrency", list(&a.cps_concurrency));
        set("cps: seconds measured", a.cps_secs.to_string());
        set("flood: SYNs per second", a.flood_rate.clone());
        set("flood: seconds", a.flood_secs.to_string());
        set(
            "flood: new connections during the flood",
            a.flood_conns.to_string(),
        );
        set(
            "flood: generator and clients",
            "c10m-bench flood --kind syn from 198.19.0.0/16 on the echo port; kernel clients \
             in c10m-gen pinned to the generator core; a decoy flood (same rate, to \
             198.18.0.99) under the before window"
                .into(),
        );
        set(
            "server core (taskset; dataplane --cores)",
            a.server_core.to_string(),
        );
        set("generator core (taskset)", a.gen_core.to_string());
        set("generator", format!("{bench} (AF_XDP on gen0 in {GEN_NS})"));
        set("dataplane: binary", c10m);
        set("dataplane: queues / workers", "1 / 1".into());
        set(
            "dataplane: connection slots (--max-conns)",
            slots.to_string(),
        );
        set(
            "dataplane: --rx-buf / --tx-buf",
            format!("{} / {}", a.rx_buf, a.tx_buf),
        );
        set(
            "dataplane: XDP mode, zero-copy, idle policy",
            "auto, auto, adaptive (defaults)".into(),
        );
        set(
            "kernel: workers per process",
            "1 (one epoll reactor)".into(),
        );
        set(
            "kernel: connections per process (--max-conns)",
            PER_PROCESS.to_string(),
        );
        set(
            "kernel: listen backlog",
            "4096 (c10m kernel's, capped by somaxconn)".into(),
        );
        set("RLIMIT_NOFILE (soft, this process)", nofile_text.clone());
        if !classic {
            // Only push runs: the other scenarios' settings would only mislead.
            let other = [
                "held:",
                "rps",
                "cps:",
                "flood:",
                "dataplane: connection",
                "kernel: conn",
            ];
            s.retain(|(k, _)| !other.iter().any(|o| k.starts_with(o)));
        }

        let notes = &mut self.report.notes;
        notes.push(format!(
            "RLIMIT_NOFILE is {nofile_text} per process here and cannot be raised, so a kernel \
             run holding more than {PER_PROCESS} connections uses ceil(N / {PER_PROCESS}) \
             `c10m kernel` processes (one reactor each, all pinned to core {}) sharing the port \
             through SO_REUSEPORT. The dataplane needs no descriptor per connection.",
            a.server_core
        ));
        notes.push(format!(
            "Same cores: every server is pinned to core {} and the generator to core {}; the \
             same generator (this binary over AF_XDP) drives both servers. On veth the receive \
             path (the kernel's TCP input in softirq; the XDP program and the AF_XDP copy for \
             the dataplane) runs on the sending core, for both.",
            a.server_core, a.gen_core
        ));
        notes.push(
            "The kernel baseline is tuned as an operator would: non-blocking sockets, \
             edge-triggered epoll (mio), SO_REUSEPORT listeners, TCP_NODELAY, no thread per \
             connection, and the sysctls below."
                .into(),
        );
        notes.push(
            "Kernel memory per held connection = (growth of the slab caches TCP, \
             request_sock_TCP, tw_sock_TCP, sock_inode_cache, filp, eventpoll_epi in \
             /proc/slabinfo, active objects × object size) + (growth of socket buffer pages, \
             /proc/net/sockstat TCP mem × 4096) + (growth of the server processes' summed \
             RSS), divided by the growth of TCP inuse in c10m-dut, sampled at the peak. Slab and sockstat mem are system-wide; the generator uses no \
             kernel sockets. Dentries (192 B each) and other allocations are not counted, which \
             favours the kernel."
                .into(),
        );
        notes.push(
            "Dataplane memory per held connection = its stack's own accounting of reserved \
             bytes per connection slot (memory_bytes / connection_capacity from the management \
             socket): every slot is preallocated at start, so it does not grow with the count."
                .into(),
        );
        if a.scenarios.contains(&Scenario::Rps) || a.scenarios.contains(&Scenario::Cps) {
            notes.push(format!(
                "The reflector (`c10m-bench reflect`) is the ceiling of the rps and cps runs: \
                 on {DP_ADDR}, the dataplane's address, interface, XDP program, AF_XDP port \
                 code, idle policy and core, it answers each SYN with a SYN-ACK, each request \
                 segment with one response segment (the http service's own bytes) and each \
                 FIN with a FIN-ACK, keeping no connection state. Its rates are what this \
                 path and generator allow at all; dataplane / reflector is the dataplane's \
                 share of that."
            ));
        }
        if a.scenarios.contains(&Scenario::Push) {
            self.describe_push();
        }
        let notes = &mut self.report.notes;
        if a.scenarios.contains(&Scenario::Flood) {
            notes.push(
                "Flood: the kernel baseline runs with net.ipv4.tcp_syncookies=1 in c10m-dut (set \
                 for the run, see the sysctls). The \"before\" round trips are measured under a \
                 decoy flood — the same generator at the same rate, to an address nobody has — \
                 because the generator and the kernel clients share the generator core, and on \
                 veth a frame's receive work runs on the sending core: the decoy keeps that load \
                 equal, so before and during differ only in what reaches the server. Server RSTs \
                 include those to legitimate clients; RSTs to spoofed sources are what the \
                 generator received for 198.19.0.0/16. At --flood-rate max the achieved \
                 rates differ by server: on veth the kernel's SYN handling runs in softirq on \
                 the generator's core and slows the generator, and the dataplane's answers \
                 reach the generator's socket on the server core; give a --flood-rate below \
                 both achieved rates for an equal flood."
                    .into(),
            );
        }
        let http = a.proto == Proto::Http;
        match host::which("nginx") {
            Some(p) if http => notes.push(format!(
                "nginx ({}) is installed: it runs as a second http baseline at \
                 {KERNEL_ADDR}:{NGINX_PORT}, one worker pinned to core {}; its rows read \
                 \"vs nginx\", with nginx in the kernel column.",
                p.display(),
                a.server_core
            )),
            Some(_) => {
                notes.push("nginx is installed but serves http only: not run for echo.".into())
            }
            None => notes.push(
                "nginx: not installed (not on PATH), so not run; the http baseline is c10m \
                 kernel's http service."
                    .into(),
            ),
        }
    }

    /// The push scenario's settings and notes.
    fn describe_push(&mut self) {
        let a = self.args;
        let (kernel_n, why) = self.push_kernel_conns();
        let idle = self.push_idle();
        let hold = self.push_hold();
        let s = &mut self.report.settings;
        let mut set = |k: &str, v: String| s.push((k.to_owned(), v));
        set(
            "push: subscribers on the dataplane",
            a.push_conns.to_string(),
        );
        set(
            "push: dataplane connection slots (--max-conns)",
            (a.push_conns as usize + 131_072).to_string(),
        );
        set(
            "push: subscribers on the kernel",
            format!("{kernel_n} ({why})"),
        );
        set(
            "push: SYNs per second (dataplane / kernel)",
            format!("{} / {}", a.push_rate, a.push_kernel_rate),
        );
        set(
            "push: heartbeat interval, s",
            a.push_heartbeat_interval.to_string(),
        );
        set("push: seconds held once connected", hold.to_string());
        set(
            "push: publish after every subscriber is in, s",
            a.push_publish_after.to_string(),
        );
        set("push: servers' idle timeout, s", idle);
        set(
            "push: client",
            "c10m-bench conns --proto push --topic news: every connection sends SUB news, \
             then PING every interval (PONG checked, round trip measured), and counts MSG \
             news hello-subscribers"
                .into(),
        );
        self.report.notes.push(format!(
            "Push: the dataplane runs `c10m run --cores {}` with the push service on \
             {DP_ADDR}:5222 and 65,536 UMEM frames (not under taskset: --cores pins its worker); \
             the kernel baseline runs one `c10m kernel` process per 18,000 subscribers on \
             {KERNEL_ADDR}:5222 (SO_REUSEPORT, 19,900 connections each at most: the kernel \
             spreads connections by a hash, the headroom keeps every process under \
             RLIMIT_NOFILE), each with a management socket the generator publishes through. \
             Memory per connection over the run: the dataplane's RSS growth (its accounting \
             of reserved bytes per slot is the table's figure); the kernel's slab + socket \
             buffers + RSS growth, as for held. Heartbeat round trip: PING sent → its PONG \
             received, at the generator (a resent PING's includes its timeout).",
            a.server_core
        ));
    }
}
