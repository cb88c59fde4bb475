//! `--publish-after`: publish once every connection is subscribed, through the server's
//! management socket on a thread of its own, and wait for the deliveries.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::Client;
use super::mgmt::{self, Published};

/// `--publish-after`: when to publish, and the server's answer.
#[derive(Default)]
pub(super) struct Fanout {
    /// Whether a publish was asked for.
    wanted: bool,
    message: String,
    /// The publish thread's answer, while it is awaited.
    answer: Option<mpsc::Receiver<anyhow::Result<Published>>>,
    /// Subscribers (that acknowledged their SUB) when the publish went.
    pub(super) published_to: u64,
    pub(super) server: Option<Published>,
    /// Since when every connection has been subscribed.
    all_in: Option<Instant>,
}

/// How long the deliveries may trail the server's answer.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for every SUB to be acknowledged before publishing anyway.
const SUB_WAIT: Duration = Duration::from_secs(10);

impl Fanout {
    pub(super) fn new(wanted: bool, message: &str) -> Fanout {
        Fanout {
            wanted,
            message: message.to_owned(),
            ..Fanout::default()
        }
    }

    /// Publishes once every connection is subscribed and `after` seconds have passed;
    /// takes the answer.
    pub(super) fn step(
        &mut self,
        c: &mut Client,
        mgmt: &[std::path::PathBuf],
        after: f64,
        hold_start: Instant,
        now: Instant,
    ) -> anyhow::Result<()> {
        let Some(p) = &mut c.push else { return Ok(()) };
        if p.published_at.is_none() {
            let all = p.c.subscribed >= c.r.established;
            if all && self.all_in.is_none() {
                self.all_in = Some(now);
            }
            let since = self.all_in.unwrap_or(hold_start);
            let due = now >= since + Duration::from_secs_f64(after);
            let late = now >= hold_start + SUB_WAIT + Duration::from_secs_f64(after);
            if (all && due) || late {
                if !all {
                    eprintln!(
                        "c10m-bench conns: publishing with {} of {} connections subscribed",
                        p.c.subscribed, c.r.established
                    );
                }
                self.published_to = p.c.subscribed;
                p.published_at = Some(now);
                let (topics, message) = (p.topics(), self.message.clone());
                self.answer = Some(mgmt::publish(mgmt.to_vec(), topics, message));
            }
        }
        if let Some(rx) = &self.answer {
            match rx.try_recv() {
                Ok(answer) => {
                    self.server = Some(answer?);
                    self.answer = None;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => bail!("the publish thread died"),
            }
        }
        Ok(())
    }

    /// Whether the hold may end: no publish asked, or its answer came and every
    /// subscriber got the message (or the grace after the answer is over).
    pub(super) fn settled(&self, c: &Client, now: Instant) -> bool {
        let Some(p) = &c.push else { return true };
        if !self.wanted {
            return true;
        }
        if p.published_at.is_none() {
            return false;
        }
        match self.server.and_then(|s| s.answered) {
            None => false,
            Some(at) => p.c.delivered >= self.published_to || now >= at + DELIVERY_GRACE,
        }
    }
}
