//! The SVG plots of a report (plotters, SVG backend only: no font or system library).
//! Each plot is written even without data, with "(no measurements)" in its title, so
//! the set of files is always the same.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::report::{Report, Server};

/// One line: a name, a colour, a dash, and its (x, y) points.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const DP: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const KERNEL: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const NGINX: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const REFLECTOR: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);

/// A tick label: 10k, 100k, 1.5M rather than "10000.0".
fn human(v: f64) -> String {
    let a = v.abs();
    let (scaled, unit) = match a {
        _ if a >= 1e9 => (v / 1e9, "G"),
        _ if a >= 1e6 => (v / 1e6, "M"),
        _ if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let text = if scaled.fract().abs() < 1e-9 || scaled.abs() >= 10.0 {
        format!("{scaled:.0}")
    } else {
        format!("{scaled:.1}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    };
    format!("{text}{unit}")
}

/// A tick label on a logarithmic axis: powers of ten only, so that the axis's many
/// minor ticks do not print over each other.
fn decade(v: f64) -> String {
    let exp = v.log10();
    if v > 0.0 && (exp - exp.round()).abs() < 1e-6 {
        human(v)
    } else {
        String::new()
    }
}

fn color(s: Server) -> RGBColor {
    match s {
        Server::Dataplane => DP,
        Server::Kernel => KERNEL,
        Server::Nginx => NGINX,
        Server::Reflector => REFLECTOR,
    }
}

const SERVERS: [Server; 4] = [
    Server::Dataplane,
    Server::Kernel,
    Server::Nginx,
    Server::Reflector,
];

/// The axes of a plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    /// Logarithmic x, linear y from 0.
    LogX,
    /// Both logarithmic.
    LogXY,
    /// Both linear from 0 (time on x).
    Linear,
}

/// Draws `series` on `scale`'s axes.
fn draw(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    scale: Scale,
) -> anyhow::Result<()> {
    let pts = || series.iter().flat_map(|s| s.points.iter().copied());
    let empty = pts().next().is_none();
    let (mut x0, mut x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let mut y1 = pts().fold(0.0f64, |a, (_, y)| a.max(y));
    let mut y0 = pts().fold(f64::MAX, |a, (_, y)| a.min(y));
    if empty {
        (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
    }
    let (x0, x1) = if scale == Scale::Linear {
        (0.0, x1.max(1e-3) * 1.05)
    } else {
        (x0.max(1e-3) / 1.5, x1.max(1e-3) * 1.5)
    };
    let y1 = if y1 > 0.0 { y1 * 1.2 } else { 1.0 };
    let title = if empty {
        format!("{title} (no measurements)")
    } else {
        title.to_owned()
    };
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80);
    macro_rules! finish {
        ($chart:expr, $x_label:expr, $y_label:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_label_formatter(&|v| $x_label(*v))
                .y_label_formatter(&|v| $y_label(*v))
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 16))
                .draw()
                .map_err(|e| err(&e))?;
            for s in series.iter().filter(|s| !s.points.is_empty()) {
                let c = s.color;
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(|e| err(&e))?;
            }
            if !empty {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()
                    .map_err(|e| err(&e))?;
            }
        }};
    }
    match scale {
        Scale::LogXY => {
            let y0 = if y0 > 0.0 && y0 < f64::MAX {
                y0 / 1.5
            } else {
                0.1
            };
            finish!(
                b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                    .map_err(|e| err(&e))?,
                decade,
                decade
            );
        }
        Scale::LogX => finish!(
            b.build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
                .map_err(|e| err(&e))?,
            decade,
            human
        ),
        Scale::Linear => finish!(
            b.build_cartesian_2d(x0..x1, 0.0..y1).map_err(|e| err(&e))?,
            human,
            human
        ),
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn sorted(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Writes `rps.svg`, `latency.svg`, `cps.svg`, `memory.svg` and the push scenario's
/// `push-*.svg` into `dir`; returns their names. Every server that ran has its line (the reflector's is the ceiling).
pub(crate) fn write_all(r: &Report, dir: &Path) -> anyhow::Result<Vec<String>> {
    let proto = r.rps.first().map_or("http".to_owned(), |x| x.proto.clone());
    let rps_of = |s: Server, f: fn(&super::report::RpsOut) -> f64| {
        sorted(
            r.rps
                .iter()
                .filter(|x| x.server == Some(s) && x.proto == proto)
                .filter_map(|x| Some((x.conns as f64, f(x.measured.out.as_ref()?))))
                .collect(),
        )
    };
    let rps: Vec<Series> = SERVERS
        .iter()
        .map(|&s| Series {
            name: s.name().into(),
            color: color(s),
            points: rps_of(s, |o| o.rps),
        })
        .collect();
    draw(
        &dir.join("rps.svg"),
        &format!("Requests per second ({proto}) against concurrency"),
        "connections (log)",
        "requests/s",
        &rps,
        Scale::LogX,
    )?;

    let mut lat = Vec::new();
    for s in SERVERS {
        let light = |c: RGBColor| RGBColor(c.0 / 2 + 120, c.1 / 2 + 120, c.2 / 2 + 120);
        lat.push(Series {
            name: format!("{} p50", s.name()),
            color: light(color(s)),
            points: rps_of(s, |o| o.p50_us),
        });
        lat.push(Series {
            name: format!("{} p99", s.name()),
            color: color(s),
            points: rps_of(s, |o| o.p99_us),
        });
    }
    draw(
        &dir.join("latency.svg"),
        &format!("Latency percentiles ({proto}) against concurrency"),
        "connections (log)",
        "µs (log)",
        &lat,
        Scale::LogXY,
    )?;

    let cps: Vec<Series> = SERVERS
        .iter()
        .map(|&s| Series {
            name: s.name().into(),
            color: color(s),
            points: sorted(
                r.cps
                    .iter()
                    .filter(|x| x.server == Some(s))
                    .filter_map(|x| Some((x.concurrency as f64, x.measured.out.as_ref()?.cps)))
                    .collect(),
            ),
        })
        .collect();
    draw(
        &dir.join("cps.svg"),
        "New connections per second against connections in flight",
        "connections in flight (log)",
        "connections/s",
        &cps,
        Scale::LogX,
    )?;

    let mut mem = Vec::new();
    for s in [Server::Dataplane, Server::Kernel] {
        let of = |f: fn(&super::report::Held) -> Option<f64>| {
            sorted(
                r.held
                    .iter()
                    .filter(|h| h.server == Some(s) && h.error.is_none())
                    .filter_map(|h| Some((h.held? as f64, f(h)?)))
                    .collect(),
            )
        };
        let what = match s {
            Server::Dataplane => "reserved per slot",
            _ => "slab + buffers + RSS growth",
        };
        mem.push(Series {
            name: format!("{} ({what})", s.name()),
            color: color(s),
            points: of(|h| h.bytes_per_conn),
        });
        // The kernel's figure above already includes its processes' RSS growth (and
        // their RSS hardly grows: socket memory is the kernel's), so only the dataplane
        // gets a separate RSS line.
        if s == Server::Dataplane {
            let c = color(s);
            mem.push(Series {
                name: format!("{} (process RSS growth)", s.name()),
                color: RGBColor(c.0 / 2 + 120, c.1 / 2 + 120, c.2 / 2 + 120),
                points: of(|h| h.rss_bytes_per_conn),
            });
        }
    }
    draw(
        &dir.join("memory.svg"),
        "Memory per held connection against connections held",
        "connections held (log)",
        "bytes per connection",
        &mem,
        Scale::LogX,
    )?;
    let mut names = vec![
        "rps.svg".to_owned(),
        "latency.svg".into(),
        "cps.svg".into(),
        "memory.svg".into(),
    ];
    names.extend(push_plots(r, dir)?);
    Ok(names)
}

/// The push scenario's plots: connections over time, memory per connection against
/// connections, heartbeat round-trip percentiles, and the fan-out's deliveries against
/// time since the publish.
fn push_plots(r: &Report, dir: &Path) -> anyhow::Result<Vec<String>> {
    let runs = || {
        [Server::Dataplane, Server::Kernel]
            .into_iter()
            .filter_map(|s| Some((s, r.push.iter().find(|p| p.server == Some(s))?)))
    };
    let line = |s: Server, what: &str, points| Series {
        name: format!("{}{what}", s.name()),
        color: color(s),
        points,
    };
    let conns: Vec<Series> = runs()
        .map(|(s, p)| {
            line(
                s,
                "",
                p.samples.iter().map(|x| (x.secs, x.conns as f64)).collect(),
            )
        })
        .collect();
    draw(
        &dir.join("push-connections.svg"),
        "push: connections held over time",
        "seconds since the client started",
        "connections",
        &conns,
        Scale::Linear,
    )?;
    let mem: Vec<Series> = runs()
        .map(|(s, p)| {
            let what = match s {
                Server::Dataplane => " (process RSS growth)",
                _ => " (slab + buffers + RSS growth)",
            };
            let pts = p
                .samples
                .iter()
                .filter_map(|x| Some((x.conns as f64, x.bytes_per_conn?)));
            line(s, what, sorted(pts.collect()))
        })
        .collect();
    draw(
        &dir.join("push-memory.svg"),
        "push: memory per connection against connections",
        "connections held (log)",
        "bytes per connection",
        &mem,
        Scale::LogX,
    )?;
    let rtt: Vec<Series> = runs()
        .filter_map(|(s, p)| {
            let c = p.client.as_ref().filter(|c| c.heartbeat_rtt_samples > 0)?;
            let h = &c.heartbeat_rtt;
            let pts = [
                (2.0, h.p50_us),
                (10.0, h.p90_us),
                (100.0, h.p99_us),
                (1000.0, h.p999_us),
            ];
            Some(line(
                s,
                "",
                pts.iter().map(|&(x, y)| (x, y.max(1) as f64)).collect(),
            ))
        })
        .collect();
    draw(
        &dir.join("push-heartbeat-rtt.svg"),
        "push: heartbeat round trip (PING → PONG) percentiles",
        "1 / (1 − quantile): 2 = p50, 10 = p90, 100 = p99, 1k = p99.9",
        "µs (log)",
        &rtt,
        Scale::LogXY,
    )?;
    let fanout: Vec<Series> = runs()
        .filter_map(|(s, p)| {
            let c = p.client.as_ref()?;
            let mut sum = 0u64;
            let mut pts = vec![(0.0, 0.0)];
            for (b, n) in c.deliveries_per_100ms.iter().enumerate() {
                sum += n;
                pts.push(((b + 1) as f64 / 10.0, sum as f64));
            }
            (sum > 0).then(|| line(s, "", pts))
        })
        .collect();
    draw(
        &dir.join("push-fanout.svg"),
        "push: one publish, subscribers reached against time since it",
        "seconds since the publish",
        "subscribers with the MSG",
        &fanout,
        Scale::Linear,
    )?;
    Ok(vec![
        "push-connections.svg".into(),
        "push-memory.svg".into(),
        "push-heartbeat-rtt.svg".into(),
        "push-fanout.svg".into(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(human(10_000.0), "10k");
        assert_eq!(human(100_000.0), "100k");
        assert_eq!(human(1_000_000.0), "1M");
        assert_eq!(human(1_500_000.0), "1.5M");
        assert_eq!(human(250.0), "250");
        assert_eq!(human(0.5), "0.5");
        assert_eq!(human(12_345.0), "12k");
        assert_eq!(decade(1000.0), "1k");
        assert_eq!(decade(2000.0), "");
        assert_eq!(decade(0.1), "0.1");
    }
    use crate::compare::report::{Held, Measured, Rps, RpsOut};

    #[test]
    fn plots_are_svg_with_and_without_data() {
        let dir = std::env::temp_dir().join(format!("c10m-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = Report::default();
        let names = write_all(&empty, &dir).unwrap();
        for n in &names {
            let text = std::fs::read_to_string(dir.join(n)).unwrap();
            assert!(
                text.starts_with("<svg"),
                "{n}: {}",
                &text[..40.min(text.len())]
            );
            assert!(text.contains("no measurements"), "{n}");
        }
        let mut r = Report::default();
        for (c, v) in [(10, 1000.0), (100, 5000.0), (1000, 8000.0)] {
            r.rps.push(Rps {
                server: Some(Server::Dataplane),
                proto: "http".into(),
                conns: c,
                pipeline: 1,
                measured: Measured {
                    out: Some(RpsOut {
                        rps: v,
                        p50_us: 10.0,
                        p99_us: 30.0,
                        ..RpsOut::default()
                    }),
                    error: None,
                    cpu: None,
                    per_core_second: None,
                    per_server_work_second: None,
                },
            });
        }
        r.held.push(Held {
            server: Some(Server::Kernel),
            requested: 2000,
            held: Some(2000),
            bytes_per_conn: Some(3400.0),
            ..Held::default()
        });
        write_all(&r, &dir).unwrap();
        let text = std::fs::read_to_string(dir.join("rps.svg")).unwrap();
        assert!(
            text.contains("dataplane") && text.contains("<polyline"),
            "{text}"
        );
        // plotters writes each label's text on a line of its own.
        assert!(text.contains("\n1k\n") && text.contains("\n5k\n"), "{text}");
        assert!(
            !text.contains("1000.0") && !text.contains("\n5000\n"),
            "{text}"
        );
        let mem = std::fs::read_to_string(dir.join("memory.svg")).unwrap();
        assert!(!mem.contains("kernel (process RSS growth)"), "{mem}");
        r.cps.push(crate::compare::report::Cps {
            server: Some(Server::Reflector),
            proto: "http".into(),
            concurrency: 100,
            measured: Measured {
                out: Some(crate::compare::report::CpsOut {
                    cps: 90_000.0,
                    ..Default::default()
                }),
                error: None,
                cpu: None,
                per_core_second: None,
                per_server_work_second: None,
            },
        });
        write_all(&r, &dir).unwrap();
        let cps = std::fs::read_to_string(dir.join("cps.svg")).unwrap();
        assert!(
            cps.contains("reflector") && !cps.contains("no measurements"),
            "{cps}"
        );
        // The push plots: connections over time, the fan-out's cumulative deliveries.
        r.push.push(crate::compare::report::Push {
            server: Some(Server::Kernel),
            samples: vec![
                crate::compare::report::PushSample {
                    secs: 1.0,
                    conns: 5000,
                    bytes_per_conn: Some(3600.0),
                },
                crate::compare::report::PushSample {
                    secs: 2.0,
                    conns: 9000,
                    bytes_per_conn: Some(3650.0),
                },
            ],
            client: Some(crate::compare::report::PushOut {
                deliveries_per_100ms: vec![4000, 5000],
                heartbeat_rtt_samples: 10,
                heartbeat_rtt: crate::measure::Summary {
                    p50_us: 100,
                    p90_us: 200,
                    p99_us: 300,
                    p999_us: 400,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        });
        let names = write_all(&r, &dir).unwrap();
        assert_eq!(names.len(), 8, "{names:?}");
        for n in names.iter().filter(|n| n.starts_with("push-")) {
            let svg = std::fs::read_to_string(dir.join(n)).unwrap();
            assert!(
                svg.contains("kernel")
                    && svg.contains("<polyline")
                    && !svg.contains("no measurements"),
                "{n}"
            );
        }
        let fanout = std::fs::read_to_string(dir.join("push-fanout.svg")).unwrap();
        assert!(
            fanout.contains("\n9k\n"),
            "the curve reaches 9,000: {fanout}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
