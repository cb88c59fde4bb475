//! The [`Dataplane`] of a running daemon: the control thread's ends of the workers' rings
//! and published counters, the serving state, the XDP program's counters and the
//! binary's log filter.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use c10m_ebpf::Steering;
use serde_json::{Value, json};

use super::state::Lifecycle;
use super::{Command, Dataplane, Reply, State};
use crate::link::{Ends, LogLevel};

/// The [`Dataplane`] of a running daemon.
pub(crate) struct Workers {
    workers: Vec<Ends>,
    services: Value,
    log: Option<Arc<dyn LogLevel>>,
    stop: Arc<AtomicBool>,
    grace_ms: Arc<AtomicU64>,
    lifecycle: Arc<Lifecycle>,
    next_reply: usize,
    steering: Arc<Steering>,
}

/// The `services` answer: each listener's name, address `addr` and port.
pub(crate) fn services_json(addr: Ipv4Addr, listen: &[(String, u16)]) -> Value {
    listen
        .iter()
        .map(|(name, port)| json!({"name": name, "addr": addr.to_string(), "port": port}))
        .collect()
}

impl Workers {
    pub(crate) fn new(
        workers: Vec<Ends>,
        services: Value,
        log: Option<Arc<dyn LogLevel>>,
        stop: Arc<AtomicBool>,
        grace_ms: Arc<AtomicU64>,
        lifecycle: Arc<Lifecycle>,
        steering: Arc<Steering>,
    ) -> Workers {
        Workers {
            workers,
            services,
            log,
            stop,
            grace_ms,
            lifecycle,
            next_reply: 0,
            steering,
        }
    }
}

impl Dataplane for Workers {
    fn workers(&self) -> usize {
        self.workers.len()
    }

    fn values(&self, w: usize) -> Vec<u64> {
        self.workers[w].stats.read()
    }

    fn ring_depths(&self, w: usize) -> (usize, usize) {
        let e = &self.workers[w];
        (e.commands.len(), e.replies.len())
    }

    fn send(&mut self, w: usize, cmd: Command) -> bool {
        self.workers[w].commands.push(cmd).is_ok()
    }

    fn reply(&mut self) -> Option<Reply> {
        let n = self.workers.len();
        for i in 0..n {
            let w = (self.next_reply + i) % n;
            if let Some(r) = self.workers[w].replies.pop() {
                self.next_reply = (w + 1) % n;
                return Some(r);
            }
        }
        None
    }

    fn services(&self) -> Value {
        self.services.clone()
    }

    fn xdp(&self) -> Option<Value> {
        let counters = self.steering.counters().ok()?;
        Some(crate::report::xdp_json(&counters))
    }

    fn log_level(&self) -> String {
        self.log
            .as_ref()
            .map_or_else(|| "unknown".into(), |l| l.get())
    }

    fn set_log_level(&mut self, level: &str) -> Result<(), String> {
        match &self.log {
            Some(l) => l.set(level).map_err(|e| e.to_string()),
            None => Err("this daemon cannot change its log level".into()),
        }
    }

    fn shutdown(&mut self, grace: Option<Duration>) -> Duration {
        if let Some(g) = grace {
            self.grace_ms.store(g.as_millis() as u64, Ordering::Relaxed);
        }
        tracing::info!("shutdown requested on the management socket");
        self.lifecycle.set(State::Stopping);
        self.stop.store(true, Ordering::SeqCst);
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    fn state(&self) -> State {
        self.lifecycle.get()
    }

    fn set_state(&mut self, state: State) -> State {
        self.lifecycle.set(state)
    }
}
