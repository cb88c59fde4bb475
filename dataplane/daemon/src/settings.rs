//! The built-in services' flags, shared by `c10m run` and `c10m kernel`: the http body
//! and the timeouts that close slow and silent peers. Unset flags keep what the config
//! file (`c10m run`) or the services' defaults say.

use std::time::Duration;

use c10m_apps::services::Settings;

#[derive(clap::Args)]
pub(crate) struct ServiceArgs {
    /// Response body bytes of the http service (default 13: `Hello, World!`).
    #[arg(long)]
    http_body: Option<usize>,
    /// Seconds the http service waits for a whole request head, from the accept or the
    /// request's first byte (default 30; 0: no limit).
    #[arg(long, value_parser = timeout)]
    http_header_timeout: Option<Timeout>,
    /// Seconds an http keep-alive connection may stay silent (default 75; 0: no limit).
    #[arg(long, value_parser = timeout)]
    http_idle_timeout: Option<Timeout>,
    /// Seconds an echo connection may stay silent (default 300; 0: no limit).
    #[arg(long, value_parser = timeout)]
    echo_idle_timeout: Option<Timeout>,
    /// Seconds a push subscriber may stay silent (default 60; 0: no limit).
    #[arg(long, visible_alias = "push-idle", value_parser = timeout)]
    push_idle_timeout: Option<Timeout>,
}

/// A timeout flag's value: `None` for 0.
#[derive(Clone, Copy)]
struct Timeout(Option<Duration>);

fn timeout(s: &str) -> Result<Timeout, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    crate::config_file::parse_timeout(secs, crate::config_file::MAX_SERVICE_TIMEOUT).map(Timeout)
}

impl ServiceArgs {
    /// Overrides `s` with the flags given.
    pub(crate) fn apply(&self, s: &mut Settings) {
        if let Some(b) = self.http_body {
            s.http.body_size = b;
        }
        let times = [
            (self.http_header_timeout, &mut s.http.header_timeout),
            (self.http_idle_timeout, &mut s.http.idle_timeout),
            (self.echo_idle_timeout, &mut s.echo.idle_timeout),
            (self.push_idle_timeout, &mut s.push.idle_timeout),
        ];
        for (flag, to) in times {
            if let Some(Timeout(t)) = flag {
                *to = t;
            }
        }
    }
}
