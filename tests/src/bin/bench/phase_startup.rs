//! Phase 5: startup with 100 pods.

use super::*;

pub(crate) fn phase_startup(b: &mut Bench) -> Result<()> {
    ensure!(
        b.time_left() > Duration::from_secs(60),
        "no time left for the startup phase"
    );
    let t = Instant::now();
    let topo = Topology::build(Datapath::Transparent, STARTUP_PODS)?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("bench: built {STARTUP_PODS} pods in {build_s:.1} s");
    let mut startup = Series::default();
    let mut attached = Vec::new();
    // Each run attaches and detaches 505 TCX links, about 17 s, then starts
    // once more with legacy TC, a few seconds.
    let runs = b.runs_that_fit(Duration::from_secs(22), Duration::from_secs(25));
    let mut stop_failures: Vec<String> = Vec::new();
    for _ in 0..runs.max(1) {
        check_stop()?;
        let tracer = TracerProc::start(&b.args.tracer, &topo.node, &[])?;
        startup.push(tracer.startup.as_secs_f64());
        let line = lines_of(&tracer.stderr)
            .into_iter()
            .find(|l| l.contains("attached to"));
        // tracer writes its ready file before it installs its SIGINT
        // handler: a signal right away can kill it (seen once in 25 runs).
        std::thread::sleep(Duration::from_millis(300));
        match tracer.stop() {
            Ok(report) => attached.push(report["interfaces"].as_array().map_or(0, Vec::len)),
            Err(e) => {
                eprintln!("bench: stopping tracer: {e:#}");
                stop_failures.push(format!("{e:#}").lines().next().unwrap_or("").to_owned());
            }
        }
        if let Some(line) = line {
            let n: String = line
                .split("attached to ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            eprintln!(
                "bench: startup {:.2} s, attached to {n}",
                startup.0.last().unwrap_or(&0.0)
            );
        }
    }
    // The same start with legacy TC (clsact + cls_bpf), which attaches
    // without an RCU grace period per program: the other side of the
    // trade-off README's performance section describes.
    let mut legacy = Series::default();
    for _ in 0..runs.max(1) {
        check_stop()?;
        let tracer =
            TracerProc::start_with(&b.args.tracer, &topo.node, &[], &["--tc-attach", "legacy"])?;
        legacy.push(tracer.startup.as_secs_f64());
        std::thread::sleep(Duration::from_millis(300));
        if let Err(e) = tracer.stop() {
            stop_failures.push(
                format!("legacy: {e:#}")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    // Where the time goes, in this process, the way watch does it.
    let node = topo.node.clone();
    let (breakdown, attachments) = netns::run_in(
        &node,
        move || -> Result<(Vec<(&'static str, f64)>, usize)> {
            let mut steps = Vec::new();
            let mut t = Instant::now();
            let mut lap = |name: &'static str, steps: &mut Vec<(&'static str, f64)>| {
                steps.push((name, t.elapsed().as_secs_f64()));
                t = Instant::now();
            };
            let kernel = probes::kernel_info();
            lap("read kernel BTF", &mut steps);
            let mut ebpf = probes::load_full(&ProbeSettings::default(), &kernel)?;
            lap("parse + create maps", &mut steps);
            let programs = tc_programs();
            let mut tc = TcAttachments::load(&mut ebpf, &programs)?;
            lap("verify TC programs", &mut steps);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let all = rt.block_on(interfaces::list())?;
            let traced = interfaces::select(&all, &[])?;
            lap("list interfaces", &mut steps);
            for iface in &traced {
                tc.attach(&mut ebpf, &iface.name)?;
            }
            lap("attach TC programs", &mut steps);
            let macs = rt.block_on(interfaces::peer_macs(&traced))?;
            flood::set_port_macs(&mut ebpf, &macs)?;
            lap("peer MACs", &mut steps);
            let _hooks = hooks::attach(&mut ebpf, &kernel, &["conntrack", "flood"]);
            lap("load + attach tracing hooks", &mut steps);
            tc.detach_all(&mut ebpf);
            Ok((steps, traced.len() * programs.len()))
        },
    )??;
    let t = Instant::now();
    drop(topo);
    let teardown_s = t.elapsed().as_secs_f64();
    b.row(
        &format!(
            "startup: `tracer watch` spawn → ready with {STARTUP_PODS} pod veths (transparent)"
        ),
        startup.show(secs),
        "—",
        None,
    );
    b.row(
        &format!("startup with --tc-attach legacy ({STARTUP_PODS} pod veths)"),
        legacy.show(secs),
        "—",
        None,
    );
    let total: f64 = breakdown.iter().map(|(_, s)| s).sum();
    let attach_s = breakdown
        .iter()
        .find(|(n, _)| *n == "attach TC programs")
        .map_or(0.0, |(_, s)| *s);
    let per_attach_ms = attach_s * 1e3 / attachments.max(1) as f64;
    let steps = breakdown
        .iter()
        .map(|(n, s)| format!("{n} {:.0} ms ({:.0} %)", s * 1e3, s / total * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    b.detail(format!(
        "### Startup ({STARTUP_PODS} pods, transparent; building them took {build_s:.1} s, \
         deleting {teardown_s:.1} s)\n\nReports listed {} interfaces. The same steps in this \
         process: {steps}. {attachments} TCX attachments, {per_attach_ms:.1} ms each: the kernel \
         swaps the hook's program array and waits for an RCU grace period \
         (`tcx_entry_sync()`, under rtnl) on every attach.{}",
        attached
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        if stop_failures.is_empty() {
            String::new()
        } else {
            format!(
                " Stopping tracer failed {} times: {}",
                stop_failures.len(),
                stop_failures.join("; ")
            )
        },
    ));
    b.json.insert(
        "startup".into(),
        json!({
            "pods": STARTUP_PODS,
            "spawn_to_ready_s": startup.json(),
            "legacy_tc_spawn_to_ready_s": legacy.json(),
            "interfaces_in_report": attached,
            "stop_failures": stop_failures,
            "topology_build_s": build_s,
            "topology_delete_s": teardown_s,
            "tcx_attachments": attachments,
            "ms_per_attachment": per_attach_ms,
            "steps_s": breakdown.iter().map(|(n, s)| ((*n).to_owned(), json!(s))).collect::<serde_json::Map<_, _>>(),
        }),
    );
    Ok(())
}
