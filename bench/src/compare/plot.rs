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

/// Draws `series` against a logarithmic x axis (and y axis if `log_y`).
fn draw(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log_y: bool,
) -> anyhow::Result<()> {
    let pts = || series.iter().flat_map(|s| s.points.iter().copied());
    let empty = pts().next().is_none();
    let (mut x0, mut x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let mut y1 = pts().fold(0.0f64, |a, (_, y)| a.max(y));
    let mut y0 = pts().fold(f64::MAX, |a, (_, y)| a.min(y));
    if empty {
        (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
    }
    let (x0, x1) = (x0.max(1e-3) / 1.5, x1.max(1e-3) * 1.5);
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
        ($chart:expr, $y_label:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_label_formatter(&|v| decade(*v))
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
    if log_y {
        let y0 = if y0 > 0.0 && y0 < f64::MAX {
            y0 / 1.5
        } else {
            0.1
        };
        finish!(
            b.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(|e| err(&e))?,
            decade
        );
    } else {
        finish!(
            b.build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
                .map_err(|e| err(&e))?,
            human
        );
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn sorted(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Writes `rps.svg`, `latency.svg`, `cps.svg` and `memory.svg` into `dir`; returns their
/// names. Every server that ran has its line (the reflector's is the ceiling).
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
        false,
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
        true,
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
        false,
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
        false,
    )?;
    Ok(vec![
        "rps.svg".into(),
        "latency.svg".into(),
        "cps.svg".into(),
        "memory.svg".into(),
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
