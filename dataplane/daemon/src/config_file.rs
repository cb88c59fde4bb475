//! The TOML configuration file of `c10m run --config FILE`: the flags' names with `_`
//! for `-`, every key optional; flags given on the command line override it. See
//! `dataplane/daemon/c10m.example.toml`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use c10m_dataplane::{
    DEFAULT_ON_STATE_TIMEOUT, OnState, Options, ZeroCopy, check_synack_retries, parse_any_cidr,
    parse_cores, parse_service, set_addrs,
};

/// The file's contents. Unknown keys are errors that name the key.
/// `addr`: one address, or a list (one IPv4 and one IPv6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Addrs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the flags of `c10m run` document these
pub(crate) struct FileConfig {
    pub(crate) iface: Option<String>,
    pub(crate) addr: Option<Addrs>,
    pub(crate) gateway: Option<String>,
    pub(crate) services: Option<Vec<String>>,
    pub(crate) queues: Option<u32>,
    pub(crate) cores: Option<String>,
    pub(crate) xdp_mode: Option<String>,
    pub(crate) zero_copy: Option<String>,
    pub(crate) idle: Option<String>,
    pub(crate) max_conns: Option<usize>,
    pub(crate) backlog: Option<u32>,
    pub(crate) syn_cookies: Option<String>,
    pub(crate) synack_retries: Option<u8>,
    /// Seconds; 0 for none.
    pub(crate) send_timeout: Option<f64>,
    /// 0 for no limit.
    pub(crate) max_conns_per_source: Option<u32>,
    pub(crate) rst_rate: Option<u32>,
    pub(crate) rx_buf: Option<usize>,
    pub(crate) tx_buf: Option<usize>,
    /// cubic, reno or none.
    pub(crate) congestion: Option<String>,
    pub(crate) umem_frames: Option<u32>,
    pub(crate) prefault: Option<bool>,
    pub(crate) timestamps: Option<bool>,
    pub(crate) frame_size: Option<u32>,
    /// Seconds.
    pub(crate) grace: Option<f64>,
    pub(crate) mgmt: Option<String>,
    pub(crate) metrics: Option<String>,
    pub(crate) log_level: Option<String>,
    /// The `--on-state` command.
    pub(crate) on_state: Option<String>,
    /// Seconds.
    pub(crate) on_state_timeout: Option<f64>,
    pub(crate) http_body: Option<usize>,
    /// Seconds; 0 for none.
    pub(crate) http_header_timeout: Option<f64>,
    /// Seconds; 0 for none.
    pub(crate) http_idle_timeout: Option<f64>,
    /// Seconds; 0 for none.
    pub(crate) echo_idle_timeout: Option<f64>,
    /// Seconds; 0 for none.
    pub(crate) push_idle_timeout: Option<f64>,
}

/// Names the key of a bad value.
fn field<E: std::fmt::Display>(name: &'static str) -> impl Fn(E) -> String {
    move |e| format!("config key `{name}`: {e}")
}

/// Keys that a SIGHUP applies without a restart.
pub(crate) const RELOADABLE: [&str; 2] = ["log_level", "grace"];

impl FileConfig {
    /// Reads and parses `path`; the error names the file and the bad key.
    pub(crate) fn load(path: &str) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
        parse(&text).map_err(|e| format!("{path}, {e}"))
    }

    /// Sets the options this file gives; errors name the key.
    pub(crate) fn apply(&self, o: &mut Options) -> Result<(), String> {
        if let Some(v) = &self.iface {
            o.iface = v.clone();
        }
        if let Some(v) = &self.addr {
            let list = match v {
                Addrs::One(a) => std::slice::from_ref(a),
                Addrs::Many(list) => list.as_slice(),
            };
            let addrs = list.iter().map(|a| parse_any_cidr(a));
            let addrs: Vec<_> = addrs.collect::<Result<_, _>>().map_err(field("addr"))?;
            set_addrs(o, &addrs).map_err(field("addr"))?;
        }
        if let Some(v) = &self.gateway {
            let g = v.parse().map_err(|_| format!("bad address {v:?}"));
            o.gateway = Some(g.map_err(field("gateway"))?);
        }
        if let Some(v) = &self.services {
            let s: Result<Vec<_>, _> = v.iter().map(|s| parse_service(s)).collect();
            o.services = s.map_err(field("services"))?;
        }
        if let Some(v) = self.queues {
            o.queues = v;
        }
        if let Some(v) = &self.cores {
            o.cores = Some(parse_cores(v).map_err(field("cores"))?);
        }
        if let Some(v) = &self.xdp_mode {
            o.xdp_mode = v.parse().map_err(field("xdp_mode"))?;
        }
        if let Some(v) = &self.zero_copy {
            o.zero_copy = parse_zero_copy(v).map_err(field("zero_copy"))?;
        }
        if let Some(v) = &self.idle {
            o.idle = v.parse().map_err(field("idle"))?;
        }
        if let Some(v) = &self.congestion {
            o.congestion = v
                .parse()
                .map_err(|e: c10m_stack::CongestionError| field("congestion")(e.to_string()))?;
        }
        if let Some(v) = &self.syn_cookies {
            o.syn_cookies = v
                .parse()
                .map_err(field::<c10m_stack::SynCookiesError>("syn_cookies"))?;
        }
        macro_rules! plain {
            ($($key:ident => $field:ident),*) => {$(
                if let Some(v) = self.$key { o.$field = v; }
            )*};
        }
        plain!(max_conns => max_conns, backlog => backlog, rx_buf => rx_buf, tx_buf => tx_buf,
               frame_size => frame_size, rst_rate => rst_rate);
        if self.umem_frames.is_some() {
            o.frames = self.umem_frames;
        }
        if let Some(v) = self.timestamps {
            o.timestamps = v;
        }
        if let Some(v) = self.prefault {
            o.prefault = Some(v);
        }
        let s = &mut o.settings;
        if let Some(v) = self.http_body {
            s.http.body_size = v;
        }
        let times = [
            (
                "http_header_timeout",
                self.http_header_timeout,
                &mut s.http.header_timeout,
            ),
            (
                "http_idle_timeout",
                self.http_idle_timeout,
                &mut s.http.idle_timeout,
            ),
            (
                "echo_idle_timeout",
                self.echo_idle_timeout,
                &mut s.echo.idle_timeout,
            ),
            (
                "push_idle_timeout",
                self.push_idle_timeout,
                &mut s.push.idle_timeout,
            ),
        ];
        for (key, secs, to) in times {
            if let Some(secs) = secs {
                *to = parse_timeout(secs, MAX_SERVICE_TIMEOUT).map_err(field(key))?;
            }
        }
        if let Some(n) = self.synack_retries {
            o.synack_retries = check_synack_retries(n).map_err(field("synack_retries"))?;
        }
        if let Some(s) = self.send_timeout {
            o.send_timeout = parse_timeout(s, max_send_timeout()).map_err(field("send_timeout"))?;
        }
        if let Some(n) = self.max_conns_per_source {
            o.max_conns_per_source = (n > 0).then_some(n);
        }
        if let Some(g) = self.grace {
            o.grace = parse_grace(g).map_err(field("grace"))?;
        }
        if let Some(v) = &self.mgmt {
            o.management.socket = (!v.is_empty()).then(|| v.into());
        }
        if let Some(cmd) = &self.on_state {
            o.management.on_state = (!cmd.trim().is_empty()).then(|| OnState {
                command: cmd.clone(),
                timeout: DEFAULT_ON_STATE_TIMEOUT,
            });
        }
        if let Some(t) = self.on_state_timeout {
            let t = parse_on_state_timeout(t).map_err(field("on_state_timeout"))?;
            match &mut o.management.on_state {
                Some(hook) => hook.timeout = t,
                None => return Err("config key `on_state_timeout`: no `on_state` command".into()),
            }
        }
        if let Some(v) = &self.metrics {
            let a = v
                .parse()
                .map_err(|_| format!("bad address {v:?}: use 127.0.0.1:PORT"));
            o.management.metrics = Some(a.map_err(field("metrics"))?);
        }
        Ok(())
    }

    /// The keys whose values differ between `self` and `other`.
    pub(crate) fn changed(&self, other: &FileConfig) -> Vec<String> {
        let (a, b) = (toml::Value::try_from(self), toml::Value::try_from(other));
        let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) = (a, b) else {
            return vec!["(unreadable)".into()];
        };
        let mut keys: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys.retain(|k| a.get(k) != b.get(k));
        keys
    }
}

/// Parses the file's text; the error gives the line and names the key.
fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_owned();
        let Some(span) = e.span() else { return msg };
        let start = span.start.min(text.len());
        let line_no = text[..start].matches('\n').count() + 1;
        let line = text.lines().nth(line_no - 1).unwrap_or("");
        match line.split_once('=') {
            Some((key, _)) => format!("line {line_no}: key `{}`: {msg}", key.trim()),
            None => format!("line {line_no}: {msg}"),
        }
    })
}

/// A grace period in seconds: 0 to 3600.
pub(crate) fn parse_grace(secs: f64) -> Result<Duration, String> {
    if (0.0..=3600.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("grace {secs} s: expected 0 to 3600 seconds"))
    }
}

/// An `--on-state` timeout in seconds: more than 0, at most 600.
pub(crate) fn parse_on_state_timeout(secs: f64) -> Result<Duration, String> {
    if secs > 0.0 && secs <= 600.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "on-state timeout {secs} s: expected more than 0, at most 600 seconds"
        ))
    }
}

/// The longest service timeout (`http_header_timeout` and the idle timeouts): a day.
pub(crate) const MAX_SERVICE_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A timeout in seconds, at most `max`: 0 turns it off (`None`).
pub(crate) fn parse_timeout(secs: f64, max: Duration) -> Result<Option<Duration>, String> {
    if (0.0..=max.as_secs_f64()).contains(&secs) {
        Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
    } else {
        Err(format!(
            "timeout {secs} s: expected 0 (none) to {} seconds",
            max.as_secs()
        ))
    }
}

/// The longest `send_timeout`: the stack's
/// [`MAX_SEND_TIMEOUT`](c10m_stack::MAX_SEND_TIMEOUT).
pub(crate) fn max_send_timeout() -> Duration {
    Duration::from_millis(c10m_stack::MAX_SEND_TIMEOUT.total_millis())
}

/// `auto`, `on` or `off`.
pub(crate) fn parse_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "on" => Ok(ZeroCopy::On),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!(
            "unknown zero-copy mode {s:?}: expected auto, on or off"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn parse(text: &str) -> Result<Options, String> {
        let f = super::parse(text)?;
        let mut o = Options::default();
        f.apply(&mut o)?;
        Ok(o)
    }

    #[test]
    fn the_sample_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/c10m.example.toml");
        let f = FileConfig::load(path).unwrap();
        let mut o = Options::default();
        f.apply(&mut o).unwrap();
        o.validate().unwrap();
        assert_eq!(o.iface, "dut0");
    }

    #[test]
    fn addr_is_one_address_or_one_of_each_family() {
        let o = parse("addr = \"198.18.0.10/24\"").unwrap();
        assert_eq!(
            (o.addr, o.addr6),
            ((Ipv4Addr::new(198, 18, 0, 10), 24), None)
        );
        let o = parse("addr = [\"198.18.0.10/24\", \"2001:2::10/64\"]").unwrap();
        let six: std::net::Ipv6Addr = "2001:2::10".parse().unwrap();
        assert_eq!(o.addr6, Some((six, 64)));
        assert_eq!(o.addr, (Ipv4Addr::new(198, 18, 0, 10), 24));
        // Checked before the services (none given here): a build without IPv6 says so.
        let e = o.validate().unwrap_err().to_string();
        let want = if c10m_stack::IPV6 {
            "no service"
        } else {
            "built without IPv6"
        };
        assert!(e.contains(want), "{e}");
        let e = parse("addr = [\"2001:2::10/64\", \"2001:2::11/64\"]").unwrap_err();
        assert!(
            e.contains("`addr`") && e.contains("at most one IPv4 and one IPv6"),
            "{e}"
        );
        let e = parse("addr = \"2001:2::10/129\"").unwrap_err();
        assert!(e.contains("`addr`") && e.contains("bad prefix"), "{e}");
        let e = parse("addr = \"ff02::1/64\"").unwrap_err();
        assert!(e.contains("unicast"), "{e}");
    }

    #[test]
    fn sets_tcp_timestamps() {
        assert!(parse("").unwrap().timestamps, "on by default");
        assert!(!parse("timestamps = false").unwrap().timestamps);
        let e = parse("timestamps = \"off\"").unwrap_err();
        assert!(e.contains("timestamps"), "{e}");
    }

    #[test]
    fn sets_the_service_timeouts() {
        let d = parse("").unwrap().settings;
        assert_eq!(d.http.header_timeout, Some(Duration::from_secs(30)));
        assert_eq!(d.http.idle_timeout, Some(Duration::from_secs(75)));
        assert_eq!(d.echo.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(d.push.idle_timeout, Some(Duration::from_secs(60)));
        let o = parse(
            "http_header_timeout = 5\nhttp_idle_timeout = 0\necho_idle_timeout = 1.5\npush_idle_timeout = 90",
        )
        .unwrap()
        .settings;
        assert_eq!(o.http.header_timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.http.idle_timeout, None, "0 turns it off");
        assert_eq!(o.echo.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.push.idle_timeout, Some(Duration::from_secs(90)));
        let e = parse("echo_idle_timeout = -1").unwrap_err();
        assert!(
            e.contains("`echo_idle_timeout`") && e.contains("0 (none)"),
            "{e}"
        );
    }

    #[test]
    fn sets_the_congestion_control() {
        use c10m_stack::Congestion;
        assert_eq!(parse("").unwrap().congestion, Congestion::Reno);
        assert_eq!(
            parse("congestion = \"none\"").unwrap().congestion,
            Congestion::None
        );
        #[cfg(feature = "cubic")]
        assert_eq!(
            parse("congestion = \"cubic\"").unwrap().congestion,
            Congestion::Cubic
        );
        #[cfg(not(feature = "cubic"))]
        {
            let e = parse("congestion = \"cubic\"").unwrap_err();
            assert!(
                e.contains("`congestion`") && e.contains("--features cubic"),
                "{e}"
            );
        }
        let e = parse("congestion = \"bbr\"").unwrap_err();
        assert!(
            e.contains("`congestion`") && e.contains("cubic, reno or none"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("queues = \"two\"").unwrap_err();
        assert!(e.contains("key `queues`"), "{e}");
        let e = parse("addr = \"198.18.0.10/40\"").unwrap_err();
        assert!(e.contains("`addr`"), "{e}");
        let e = parse("services = [\"smtp:25\"]").unwrap_err();
        assert!(e.contains("`services`") && e.contains("echo"), "{e}");
        let e = parse("grace = -1.0").unwrap_err();
        assert!(e.contains("`grace`"), "{e}");
        let e = parse("colour = \"blue\"").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let o = parse("on_state = \"/usr/local/bin/announce\"\non_state_timeout = 2").unwrap();
        let hook = o.management.on_state.unwrap();
        assert_eq!(hook.command, "/usr/local/bin/announce");
        assert_eq!(hook.timeout, Duration::from_secs(2));
        let e = parse("on_state_timeout = 2").unwrap_err();
        assert!(e.contains("`on_state_timeout`"), "{e}");
        let e = parse("on_state = \"x\"\non_state_timeout = 0").unwrap_err();
        assert!(e.contains("`on_state_timeout`"), "{e}");
        let o = parse("grace = 2.5\nmetrics = \"127.0.0.1:9100\"").unwrap();
        assert_eq!(o.grace, Duration::from_millis(2500));
        assert_eq!(o.management.metrics.unwrap().port(), 9100);
    }

    #[test]
    fn sets_the_http_body_size() {
        assert_eq!(
            parse("").unwrap().settings.http.body_size,
            13,
            "the default"
        );
        assert_eq!(
            parse("http_body = 1000").unwrap().settings.http.body_size,
            1000
        );
        let e = parse("http_body = -1").unwrap_err();
        assert!(e.contains("key `http_body`"), "{e}");
    }

    #[test]
    fn sets_the_hostile_traffic_limits() {
        let o = parse("").unwrap();
        assert_eq!(o.synack_retries, 3);
        assert_eq!(o.send_timeout, Some(Duration::from_secs(60)));
        assert_eq!((o.max_conns_per_source, o.rst_rate), (None, 1000));
        let o =
            parse("synack_retries = 5\nsend_timeout = 0\nmax_conns_per_source = 8\nrst_rate = 50")
                .unwrap();
        assert_eq!(o.synack_retries, 5);
        assert_eq!(o.send_timeout, None);
        assert_eq!((o.max_conns_per_source, o.rst_rate), (Some(8), 50));
        assert_eq!(
            parse("max_conns_per_source = 0")
                .unwrap()
                .max_conns_per_source,
            None
        );
        let e = parse("synack_retries = 16").unwrap_err();
        assert!(e.contains("key `synack_retries`"), "{e}");
        let e = parse("send_timeout = -1").unwrap_err();
        assert!(e.contains("key `send_timeout`"), "{e}");
    }

    #[test]
    fn sets_syn_cookies() {
        use c10m_stack::SynCookies;
        assert_eq!(
            parse("").unwrap().syn_cookies,
            SynCookies::Auto,
            "the default"
        );
        assert_eq!(
            parse("syn_cookies = \"always\"").unwrap().syn_cookies,
            SynCookies::Always
        );
        assert_eq!(
            parse("syn_cookies = \"off\"").unwrap().syn_cookies,
            SynCookies::Off
        );
        let e = parse("syn_cookies = \"maybe\"").unwrap_err();
        assert!(e.contains("key `syn_cookies`") && e.contains("auto"), "{e}");
    }

    #[test]
    fn reports_changed_keys() {
        let a: FileConfig = toml::from_str("queues = 1\nlog_level = \"info\"").unwrap();
        let b: FileConfig = toml::from_str("queues = 2\nlog_level = \"debug\"").unwrap();
        assert_eq!(a.changed(&b), ["log_level", "queues"]);
    }
}
