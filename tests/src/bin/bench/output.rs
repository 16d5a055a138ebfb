//! Output: the Markdown table, results.json and RESULTS.md.

use super::*;

pub(crate) fn markdown(b: &Bench, machine: &Value, errors: &[String]) -> String {
    let mut md = String::from("## tracer benchmarks\n\n");
    let _ = writeln!(
        md,
        "Machine: {}, {} cores, kernel {}, {} MiB RAM. Other processes on it used {:.0} % \
         of a core when the run started{}. {} runs per figure (median, min–max), \
         configurations alternated within each run; total {:.0} s.\n",
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["memory_mib"],
        machine["background_busy_pct_of_core_at_start"]
            .as_f64()
            .unwrap_or(f64::NAN),
        b.others
            .iter()
            .map(|(phase, v)| format!(", {v:.0} % during the {phase} phase"))
            .collect::<String>(),
        b.args.runs,
        b.start.elapsed().as_secs_f64()
    );
    md.push_str("| figure | value | target | met? |\n|---|---|---|---|\n");
    for r in &b.rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", r.figure, r.value, r.target);
    }
    if !errors.is_empty() {
        md.push_str("\nNot measured:\n\n");
        for e in errors {
            let _ = writeln!(md, "- {e}");
        }
    }
    for d in &b.details {
        md.push('\n');
        md.push_str(d);
        md.push('\n');
    }
    md
}

pub(crate) fn run() -> Result<bool> {
    let args = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "bench needs root: it builds network namespaces and loads eBPF programs"
    );
    ensure!(
        args.tracer.exists(),
        "{} missing: cargo build --release -p tracer",
        args.tracer.display()
    );
    install_signal_handlers();
    // The flows phase and the generator open thousands of sockets.
    let nofile = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit reads a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) };
    let mut b = Bench {
        args,
        start: Instant::now(),
        rows: Vec::new(),
        details: Vec::new(),
        json: serde_json::Map::new(),
        others: Vec::new(),
    };
    // A watchdog: past the budget, stop between measurements.
    let budget = b.args.budget + Duration::from_secs(20);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("bench: time budget exceeded, stopping");
        STOP.store(true, Ordering::SeqCst);
    });
    let mut machine = machine();
    // What else runs here: the figures are only as quiet as the machine.
    // Wait a little for a quiet machine (2 s samples, at most --quiet-wait).
    let waited = Instant::now();
    let mut background = f64::NAN;
    while !STOP.load(Ordering::SeqCst) {
        if let Ok((busy, _)) = CpuWindow::start(None).and_then(|w| {
            std::thread::sleep(Duration::from_secs(2));
            w.end()
        }) {
            background = busy;
        }
        if background < QUIET_PCT || waited.elapsed() >= b.args.quiet_wait {
            break;
        }
        eprintln!("bench: other processes keep {background:.0} % of a core busy: waiting");
    }
    if let Value::Object(m) = &mut machine {
        m.insert(
            "background_busy_pct_of_core_at_start".into(),
            json!(background),
        );
        m.insert(
            "waited_for_quiet_s".into(),
            json!(waited.elapsed().as_secs_f64()),
        );
    }
    eprintln!("bench: {machine}");
    type Phase = fn(&mut Bench) -> Result<()>;
    let phases: [(&str, Phase); 5] = [
        ("programs", phase_programs),
        ("packet", phase_packet),
        ("dns", phase_dns),
        ("flows", phase_flows),
        ("startup", phase_startup),
    ];
    let mut errors = Vec::new();
    let mut timings = serde_json::Map::new();
    for (name, phase) in phases {
        if !b.wants(name) {
            continue;
        }
        if STOP.load(Ordering::SeqCst) {
            errors.push(format!("{name}: skipped (interrupted or out of time)"));
            continue;
        }
        eprintln!(
            "bench: phase {name} ({:.0} s elapsed)",
            b.start.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        if let Err(e) = phase(&mut b) {
            eprintln!("bench: phase {name} failed: {e:#}");
            errors.push(format!("{name}: {e:#}"));
        }
        timings.insert(name.into(), json!(t.elapsed().as_secs_f64()));
    }
    let md = markdown(&b, &machine, &errors);
    println!("{md}");
    std::fs::create_dir_all(&b.args.out)?;
    let rows: Vec<Value> = b
        .rows
        .iter()
        .map(|r| json!({"figure": r.figure, "value": r.value, "target": r.target, "met": r.met}))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("machine".into(), machine);
    out.insert("runs".into(), json!(b.args.runs));
    out.insert(
        "total_seconds".into(),
        json!(b.start.elapsed().as_secs_f64()),
    );
    out.insert("phase_seconds".into(), Value::Object(timings));
    out.insert("table".into(), Value::Array(rows));
    out.insert("errors".into(), json!(errors));
    out.extend(std::mem::take(&mut b.json));
    let json_path = b.args.out.join("results.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&Value::Object(out))?,
    )?;
    std::fs::write(b.args.out.join("RESULTS.md"), &md)?;
    eprintln!("bench: wrote {} and RESULTS.md", json_path.display());
    Ok(errors.is_empty())
}
