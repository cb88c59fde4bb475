use super::*;

fn rps(server: Server, conns: u64, rps: f64, p50: f64, p99: f64) -> Rps {
    Rps {
        server: Some(server),
        proto: "http".into(),
        conns,
        pipeline: 1,
        measured: Measured {
            out: Some(RpsOut {
                rps,
                p50_us: p50,
                p99_us: p99,
                ..RpsOut::default()
            }),
            error: None,
            cpu: None,
            per_core_second: None,
            per_server_work_second: None,
        },
    }
}

fn cps(server: Server, cps: f64) -> Cps {
    Cps {
        server: Some(server),
        proto: "http".into(),
        concurrency: 100,
        measured: Measured {
            out: Some(CpsOut {
                cps,
                ..CpsOut::default()
            }),
            error: None,
            cpu: None,
            per_core_second: None,
            per_server_work_second: None,
        },
    }
}

fn held(server: Server, n: u64, bytes: f64) -> Held {
    Held {
        server: Some(server),
        requested: n,
        processes: 1,
        held: Some(n),
        bytes_per_conn: Some(bytes),
        ..Held::default()
    }
}

fn sample() -> Report {
    let mut r = Report {
        held: vec![
            held(Server::Dataplane, 100_000, 1000.0),
            held(Server::Kernel, 100_000, 3400.0),
            held(Server::Dataplane, 10_000, 1000.0),
        ],
        rps: vec![
            rps(Server::Dataplane, 10, 300_000.0, 20.0, 40.0),
            rps(Server::Kernel, 10, 100_000.0, 50.0, 90.0),
            rps(Server::Dataplane, 100, 200_000.0, 60.0, 120.0),
            rps(Server::Kernel, 100, 100_000.0, 100.0, 200.0),
        ],
        cps: vec![
            cps(Server::Dataplane, 100_000.0),
            cps(Server::Kernel, 10_000.0),
        ],
        ..Report::default()
    };
    r.goals = goals(&r);
    r
}

#[test]
fn ratio_needs_both_and_a_positive_divisor() {
    assert_eq!(ratio(Some(6.0), Some(2.0)), Some(3.0));
    assert_eq!(ratio(Some(6.0), Some(0.0)), None);
    assert_eq!(ratio(None, Some(2.0)), None);
    assert_eq!(ratio(Some(1.0), None), None);
    assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
}

#[test]
fn group_separates_thousands() {
    assert_eq!(group(0.0, 0), "0");
    assert_eq!(group(999.0, 0), "999");
    assert_eq!(group(1000.0, 0), "1,000");
    assert_eq!(group(1234567.891, 1), "1,234,567.9");
    assert_eq!(group(-12345.0, 0), "-12,345");
    assert_eq!(group(-0.2, 0), "0");
}

#[test]
fn rows_pair_the_servers_by_scenario() {
    let r = sample();
    let rows = rows(&r);
    let names: Vec<&str> = rows.iter().map(|x| x.scenario.as_str()).collect();
    assert_eq!(names[0], "held 10,000: connections held");
    assert_eq!(names[1], "held 10,000: bytes/conn");
    assert_eq!(names[2], "held 100,000: connections held");
    let rps10 = rows
        .iter()
        .find(|x| x.scenario == "http c=10: requests/s")
        .unwrap();
    assert_eq!(rps10.ratio(), Some(3.0));
    // The kernel did not run at 10,000 held: missing, not failed.
    assert_eq!(rows[0].kernel, Cell::Missing);
    let cps = rows
        .iter()
        .find(|x| x.scenario == "http c=100: connections/s")
        .unwrap();
    assert_eq!(cps.ratio(), Some(10.0));
}

#[test]
fn a_failed_scenario_shows_as_failed() {
    let mut r = sample();
    r.rps[1].measured.out = None;
    r.rps[1].measured.error = Some("exit status 1: no such subcommand".into());
    let rows = rows(&r);
    let x = rows
        .iter()
        .find(|x| x.scenario == "http c=10: requests/s")
        .unwrap();
    assert_eq!(x.kernel, Cell::Failed);
    assert_eq!(x.ratio(), None);
    assert!(table(&r).contains("failed"));
    assert!(markdown(&r).contains("no such subcommand"));
}

#[test]
fn goals_are_judged_at_every_level() {
    let g = sample().goals;
    assert_eq!(g.len(), 6);
    // 3× at c=10 but 2× at c=100.
    assert_eq!(g[0].met, Some(false), "{:?}", g[0]);
    assert!(g[0].measured.contains("c=100: 2.00×"), "{:?}", g[0]);
    assert_eq!(g[1].met, Some(true), "{:?}", g[1]);
    // p99 40 ≤ 50 at c=10 but 120 > 100 at c=100.
    assert_eq!(g[2].met, Some(false), "{:?}", g[2]);
    // No reflector in the sample: its goals are not judged.
    assert_eq!((g[3].met, g[4].met), (None, None), "{g:?}");
    // 1000 bytes at the biggest dataplane count.
    assert_eq!(g[5].met, Some(true), "{:?}", g[5]);
    assert!(g[5].measured.contains("100,000 held"), "{:?}", g[5]);
}

#[test]
fn goals_without_measurements_are_not_judged() {
    let g = goals(&Report::default());
    assert!(g.iter().all(|g| g.met.is_none()), "{g:?}");
    assert!(g.iter().all(|g| g.measured == "not measured"));
}

#[test]
fn markdown_names_the_machine_settings_and_notes() {
    let mut r = sample();
    r.machine.cpu_model = "Test CPU".into();
    r.machine.kernel = "Linux 6.18".into();
    r.settings = vec![("rps seconds".into(), "5".into())];
    r.sysctls = vec![Sysctl {
        namespace: "c10m-dut".into(),
        name: "net.core.somaxconn".into(),
        before: "4096".into(),
        set: "65535".into(),
    }];
    r.notes = vec!["RLIMIT_NOFILE is 20,000".into()];
    r.plots = vec!["rps.svg".into()];
    let md = markdown(&r);
    for want in [
        "Test CPU",
        "Linux 6.18",
        "| rps seconds | 5 |",
        "net.core.somaxconn | 4096 | 65535",
        "RLIMIT_NOFILE is 20,000",
        "![rps.svg](rps.svg)",
        "| http c=10: requests/s | 300,000 | 100,000 | 3.00× |",
        "| CPS ≥ 10× the kernel | met |",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
}

#[test]
fn the_report_round_trips_through_json() {
    let r = sample();
    let text = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["held"][0]["server"], "dataplane");
}

#[test]
fn the_child_contract_parses_integers_and_floats() {
    let o: RpsOut = serde_json::from_str(
        r#"{"target":"198.18.0.10:80","proto":"http","conns":10,"pipeline":1,"secs":5.0,
            "connected":10,"requests":1000,"rps":200.5,"errors":0,"p50_us":12,"p99_us":40.5,
            "p999_us":50,"max_us":60,"mean_us":15.2}"#,
    )
    .unwrap();
    assert_eq!(o.rps, 200.5);
    assert_eq!(o.p50_us, 12.0);
    let c: CpsOut = serde_json::from_str(r#"{"cps":1000,"p99_us":5}"#).unwrap();
    assert_eq!(c.cps, 1000.0);
    assert!(serde_json::from_str::<RpsOut>(r#"{"p50_us":1}"#).is_err());
}

#[test]
fn the_reflector_is_the_third_column_and_its_goals_are_judged() {
    let mut r = sample();
    assert!(
        !table(&r).contains("dp/reflector"),
        "no column when it did not run"
    );
    r.rps
        .push(rps(Server::Reflector, 10, 400_000.0, 10.0, 20.0));
    r.rps
        .push(rps(Server::Reflector, 100, 250_000.0, 30.0, 60.0));
    r.cps.push(cps(Server::Reflector, 200_000.0));
    r.rps.push(rps(Server::Nginx, 10, 150_000.0, 40.0, 80.0));
    r.goals = goals(&r);
    let rows = rows(&r);
    let x = rows
        .iter()
        .find(|x| x.scenario == "http c=100: requests/s")
        .unwrap();
    assert_eq!(x.reflector, Cell::Value(250_000.0));
    assert_eq!((x.ratio(), x.of_reflector()), (Some(2.0), Some(0.8)));
    let c = rows
        .iter()
        .find(|x| x.scenario == "http c=100: connections/s")
        .unwrap();
    assert_eq!(c.of_reflector(), Some(0.5));
    // Not beside nginx, nor in rows of other kinds.
    let n = rows
        .iter()
        .find(|x| x.scenario == "http c=10: requests/s vs nginx")
        .unwrap();
    assert_eq!(n.reflector, Cell::Missing);
    assert!(
        rows.iter()
            .filter(|x| x.scenario.starts_with("held"))
            .all(|x| x.reflector == Cell::Missing)
    );
    let t = table(&r);
    assert!(
        t.lines()
            .next()
            .unwrap()
            .ends_with("reflector  dp/reflector"),
        "{t}"
    );
    assert!(t.contains("250,000") && t.contains("0.80×"), "{t}");
    let md = markdown(&r);
    assert!(md.contains("| dataplane / reflector |"), "{md}");
    assert!(md.contains("| 250,000 | 0.80× |"), "{md}");
    assert!(md.contains("| 200,000 | 0.50× |"), "{md}");
    // RPS: 0.8× at c=100 (c=10 is not judged); CPS: 0.5× < 0.6.
    assert_eq!(r.goals[3].met, Some(true), "{:?}", r.goals[3]);
    assert_eq!(r.goals[3].measured, "c=100: 0.80×");
    assert_eq!(r.goals[4].met, Some(false), "{:?}", r.goals[4]);
}

#[test]
fn nginx_rows_follow_the_kernel_rows_when_it_ran() {
    let mut r = sample();
    assert!(!rows(&r).iter().any(|x| x.scenario.contains("nginx")));
    r.rps.push(rps(Server::Nginx, 10, 150_000.0, 40.0, 80.0));
    let rows = rows(&r);
    let x = rows
        .iter()
        .find(|x| x.scenario == "http c=10: requests/s vs nginx")
        .unwrap();
    assert_eq!(x.ratio(), Some(2.0));
    // Only the levels nginx ran at.
    assert!(
        !rows
            .iter()
            .any(|x| x.scenario == "http c=100: requests/s vs nginx")
    );
}

fn with_cpu(server: f64, generator: f64) -> Cpu {
    let core = |busy: f64| CoreUse {
        busy,
        user: busy / 2.0,
        system: busy / 4.0,
        irq: 0.0,
        softirq: busy / 4.0,
    };
    Cpu {
        server_core: Some(core(server)),
        generator_core: Some(core(generator)),
        server_process_cpu_secs: Some(server / 100.0 * 5.0),
        generator_idle: None,
        server_work: Some(server * 0.9),
        window_secs: 5.0,
        window: "measured".into(),
    }
}

#[test]
fn cpu_rows_and_the_efficiency_ratio() {
    let mut r = sample();
    // Dataplane 300k at 50% of its core, kernel 100k at 100%: 600k vs 100k per busy second.
    r.rps[0].measured.cpu = Some(with_cpu(50.0, 99.0));
    r.rps[0].measured.per_core_second = Some(600_000.0);
    r.rps[1].measured.cpu = Some(with_cpu(100.0, 60.0));
    r.rps[1].measured.per_core_second = Some(100_000.0);
    r.rps[0].measured.per_server_work_second = Some(400_000.0);
    r.rps[1].measured.per_server_work_second = Some(200_000.0);
    let rows = rows(&r);
    let work = rows
        .iter()
        .find(|x| x.scenario == "http c=10: requests per server-work second (est.)")
        .unwrap();
    assert_eq!(work.ratio(), Some(2.0));
    let per = rows
        .iter()
        .find(|x| x.scenario == "http c=10: requests per server-core second")
        .unwrap();
    assert_eq!(per.ratio(), Some(6.0));
    let busy = rows
        .iter()
        .find(|x| x.scenario == "http c=10: server core busy % (rps)")
        .unwrap();
    assert_eq!(busy.dataplane, Cell::Value(50.0));
    assert_eq!(busy.ratio(), None, "no ratio of busy shares");
    let gen_busy = rows
        .iter()
        .find(|x| x.scenario == "http c=10: generator core busy % (rps)")
        .unwrap();
    assert_eq!(gen_busy.kernel, Cell::Value(60.0));
    // No CPU figures at c=100: missing, not failed.
    let per100 = rows
        .iter()
        .find(|x| x.scenario == "http c=100: requests per server-core second")
        .unwrap();
    assert_eq!(per100.dataplane, Cell::Missing);
    assert!(
        rows.iter()
            .any(|x| x.scenario == "http c=100: connections per server-core second")
    );
    // The existing rows keep their names and order.
    let names: Vec<&str> = rows.iter().map(|x| x.scenario.as_str()).collect();
    let i = names
        .iter()
        .position(|n| *n == "http c=10: requests/s")
        .unwrap();
    assert_eq!(names[i + 1], "http c=10: p50 µs");
    assert_eq!(names[i + 2], "http c=10: p99 µs");
}

#[test]
fn cpu_notes_name_what_bounds_each_run() {
    let mut r = sample();
    assert!(cpu_notes(&r, 1, 0).is_empty(), "no CPU figures, no notes");
    r.rps[0].measured.cpu = Some(with_cpu(50.0, 99.0));
    r.rps[1].measured.cpu = Some(with_cpu(100.0, 60.0));
    let notes = cpu_notes(&r, 1, 0).join("\n");
    for want in [
        "dataplane rps http c=10: generator core (server core 50%, generator core 99%)",
        "kernel rps http c=10: server core (server core 100%, generator core 60%)",
        "understate the server's capacity",
        "256 empty loop rounds",
        "Server work (est.)",
        "cpu1",
    ] {
        assert!(notes.contains(want), "missing {want:?} in\n{notes}");
    }
    assert!(!notes.contains("not quiet"), "{notes}");
    // Another process took half the server core: the notes say so.
    let mut busy_neighbour = with_cpu(100.0, 100.0);
    busy_neighbour.server_process_cpu_secs = Some(2.5);
    r.rps[2].measured.cpu = Some(busy_neighbour);
    let notes = cpu_notes(&r, 1, 0).join("\n");
    assert!(
        notes.contains("in: dataplane rps http c=100 (50%)") && notes.contains("not quiet"),
        "{notes}"
    );
    r.notes = cpu_notes(&r, 1, 0);
    let md = markdown(&r);
    assert!(md.contains("## CPU use"), "{md}");
    assert!(
        md.contains(
            "| dataplane | rps http c=10 | 300,000 | 5.00 | 50.0 | 25.0 | 12.5 | 12.5 | 99.0 |"
        ),
        "{md}"
    );
    assert!(table(&r).contains("requests per server-core second"));
}

#[test]
fn cpu_figures_round_trip_with_their_json_names() {
    let mut r = sample();
    r.cps[0].measured.cpu = Some(with_cpu(80.0, 100.0));
    r.cps[0].measured.per_core_second = Some(125_000.0);
    let v = serde_json::to_value(&r).unwrap();
    let c = &v["cps"][0];
    assert_eq!(c["per_core_second"], 125_000.0);
    assert_eq!(c["cpu"]["server_core"]["busy"], 80.0);
    for f in ["busy", "user", "system", "softirq"] {
        assert!(c["cpu"]["generator_core"][f].is_number(), "{f}: {c}");
    }
    assert_eq!(c["cpu"]["server_process_cpu_secs"], 4.0);
    // Reports written before CPU figures still parse.
    let mut old = v.clone();
    old["cps"][0].as_object_mut().unwrap().remove("cpu");
    old["cps"][0]
        .as_object_mut()
        .unwrap()
        .remove("per_core_second");
    let back: Report = serde_json::from_value(old).unwrap();
    assert_eq!(back.cps[0].measured.cpu, None);
}

#[test]
fn markdown_tables_the_rps_and_cps_runs() {
    let mut r = sample();
    r.rps[1].measured.out = None;
    r.rps[1].measured.error = Some("exit | 1".into());
    let md = markdown(&r);
    for line in [
        "| dataplane | http | 10 | 1 | 0 | 300,000 | 0 | 20.0 | 40.0 | 0.0 | 0.0 |  |",
        "| kernel | http | 10 | 1 | - | - | - | - | - | - | - | exit \\| 1 |",
        "| dataplane | http | 100 | 0 | 0 | 100,000 | 0.0 | 0.0 |  |",
    ] {
        assert!(md.lines().any(|l| l == line), "{line}\n{md}");
    }
}

#[test]
fn the_progress_summaries_give_the_rate_and_latencies() {
    let r = sample();
    let o = r.rps[0].measured.out.as_ref().unwrap();
    assert_eq!(o.summary(), "300,000 requests/s, p50 20.0 µs, p99 40.0 µs");
    let c = CpsOut {
        cps: 12_345.0,
        p99_us: 7.25,
        ..CpsOut::default()
    };
    assert_eq!(c.summary(), "12,345 connections/s, p99 7.2 µs");
}

fn flooded(server: Server, ok: u64, rst: u64, during: f64) -> Flood {
    Flood {
        server: Some(server),
        generator: Some(FloodOut {
            kind: "syn".into(),
            target: "198.18.0.10:7".into(),
            secs: 10.0,
            sent: 1_500_000,
            rate_achieved: 150_000.0,
            replies: flood::RepliesOut {
                syn_ack: 4096,
                rst,
                other: 0,
            },
            ..FloodOut::default()
        }),
        during: Attempts {
            attempted: 200,
            ok,
            refused: 200 - ok,
            ..Attempts::default()
        },
        after: Attempts {
            attempted: 20,
            ok: 20,
            ..Attempts::default()
        },
        rtt_before: Some(10_000.0),
        rtt_during: Some(during),
        rss_before: Some(1_000_000),
        rss_after: Some(1_010_000),
        ..Flood::default()
    }
}

#[test]
fn flood_rows_put_the_servers_side_by_side() {
    let mut r = sample();
    r.flood = vec![
        flooded(Server::Dataplane, 0, 681_278, 7_000.0),
        Flood {
            error: Some("the kernel server exited".into()),
            ..flooded(Server::Kernel, 200, 0, 8_000.0)
        },
    ];
    let rows = rows(&r);
    let find = |name: &str| {
        rows.iter()
            .find(|x| x.scenario == format!("flood: {name}"))
            .unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
    };
    let ok = find("new connections ok, %");
    assert_eq!(ok.dataplane, Cell::Value(0.0));
    assert_eq!(ok.kernel, Cell::Failed);
    assert_eq!(ok.ratio(), None, "flood rows have no ratio");
    assert_eq!(
        find("echo round trips kept, %").dataplane,
        Cell::Value(70.0)
    );
    assert_eq!(
        find("RSTs to spoofed sources").dataplane,
        Cell::Value(681_278.0)
    );
    assert_eq!(find("SYN cookies sent").dataplane, Cell::Missing);
    let Cell::Value(g) = find("server RSS growth, %").dataplane else {
        panic!("no RSS growth")
    };
    assert!((g - 1.0).abs() < 1e-9, "{g}");
    let md = markdown(&r);
    assert!(md.contains("## SYN flood"), "{md}");
    assert!(
        md.contains("| dataplane | 1,500,000 | 150,000 | - | 0 / 200 (200, 0, 0; 0) |"),
        "{md}"
    );
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn the_server_process_share_of_its_busy_core() {
    let c = Cpu {
        server_core: Some(CoreUse {
            busy: 100.0,
            ..CoreUse::default()
        }),
        server_process_cpu_secs: Some(2.5),
        window_secs: 5.0,
        ..Cpu::default()
    };
    assert_eq!(c.process_share(), Some(50.0));
    assert_eq!(Cpu::default().process_share(), None);
}

#[test]
fn the_bound_is_the_saturated_core() {
    let cpu = |s: f64, g: f64| Cpu {
        server_core: Some(CoreUse {
            busy: s,
            ..CoreUse::default()
        }),
        generator_core: Some(CoreUse {
            busy: g,
            ..CoreUse::default()
        }),
        ..Cpu::default()
    };
    assert_eq!(cpu(60.0, 99.0).bound(), "generator core");
    assert_eq!(cpu(99.0, 60.0).bound(), "server core");
    assert_eq!(cpu(99.0, 97.0).bound(), "both cores");
    assert_eq!(cpu(50.0, 50.0).bound(), "neither core");
    assert_eq!(Cpu::default().bound(), "unknown");
    // A spinning generator: its core is full but its loop waited on the server.
    let spinning = Cpu {
        generator_idle: Some(30.0),
        ..cpu(100.0, 100.0)
    };
    assert_eq!(spinning.bound(), "server core");
    let working = Cpu {
        generator_idle: Some(1.0),
        ..cpu(100.0, 100.0)
    };
    assert_eq!(working.bound(), "both cores");
}
