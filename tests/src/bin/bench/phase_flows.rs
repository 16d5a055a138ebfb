//! Phase 4: 1 M distinct flows.

use super::*;

pub(crate) fn phase_flows(b: &mut Bench) -> Result<()> {
    let runs = b.runs_that_fit(Duration::from_secs(20), Duration::from_secs(110));
    ensure!(runs >= 1, "no time left for the flows phase");
    let lab = DnsLab::build()?;
    let mut rss_end = Series::default();
    let mut hwm = Series::default();
    let mut growth = Series::default();
    let mut qps = Series::default();
    let mut lost = Series::default();
    let mut unmatched = Series::default();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut trace: Vec<Value> = Vec::new();
    for run in 0..runs {
        check_stop()?;
        let tracer = TracerProc::start(&b.args.tracer, &lab.topo.node, &[])?;
        let pid = tracer.pid();
        let rss_ready = proc_kib(pid, "VmRSS")? as f64 / 1024.0;
        // Sample RSS against queries sent.
        let progress = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (progress, done) = (Arc::clone(&progress), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut points = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(kib) = proc_kib(pid, "VmRSS") {
                        points.push((progress.load(Ordering::Relaxed), kib as f64 / 1024.0));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                points
            })
        };
        let load = lab.load(
            Load {
                rate: None,
                duration: Some(Duration::from_secs(60)),
                total: Some(FLOWS),
                reopen_every: FLOWS_REOPEN,
            },
            Arc::clone(&progress),
        );
        // One more tick of the collector (sweep, snapshot) after the load.
        std::thread::sleep(Duration::from_millis(1500));
        done.store(true, Ordering::Relaxed);
        let points = sampler.join().unwrap_or_default();
        let load = load?;
        let end = proc_kib(pid, "VmRSS")? as f64 / 1024.0;
        let peak = proc_kib(pid, "VmHWM")? as f64 / 1024.0;
        let report = tracer.stop()?;
        let mut s = DnsSample::default();
        lab.read_report(&report, &mut s);
        // RSS once 10 % of the flows were sent, against the end.
        let early = points
            .iter()
            .find(|(n, _)| *n >= FLOWS / 10)
            .map_or(rss_ready, |(_, r)| *r);
        rss_end.push(end);
        hwm.push(peak);
        growth.push(end - early);
        qps.push(load.answer_rate());
        lost.push(s.losses.unwrap_or(0) as f64);
        for (r, n) in &s.loss_reasons {
            *reasons.entry(r.clone()).or_default() += n;
        }
        unmatched.push(s.unmatched.unwrap_or(0) as f64);
        eprintln!(
            "bench: flows run {}: {} queries in {:.1} s, RSS ready {rss_ready:.1} → end {end:.1} MiB, HWM {peak:.1} MiB",
            run + 1,
            load.sent,
            load.secs
        );
        trace.push(json!({
            "sent": load.sent,
            "answers": load.answers,
            "seconds": load.secs,
            "rss_ready_mib": rss_ready,
            "rss_end_mib": end,
            "vmhwm_mib": peak,
            "rss_by_queries_sent": points.iter().map(|(n, r)| json!([n, r])).collect::<Vec<_>>(),
            "lost_events": s.losses,
            "unmatched_answers": s.unmatched,
        }));
    }
    drop(lab);
    b.row(
        "collector RSS after 1 M distinct DNS flows (VmRSS; peak VmHWM)",
        format!("{}; peak {}", rss_end.show(mib), hwm.show(mib)),
        &format!("≤ {TARGET_RSS_MIB:.0} MiB"),
        hwm.max().map(|m| m <= TARGET_RSS_MIB),
    );
    b.row(
        "collector RSS growth from 100 k to 1 M flows",
        growth.show(mib),
        "flat",
        growth.max().map(|g| g <= 2.0),
    );
    b.detail(format!(
        "### 1 M distinct flows ({runs} runs)\n\nEach run: {FLOWS} queries at the generator's \
         top speed, {DNS_SOCKETS} sockets, each replaced by a new one (new source port) after \
         {FLOWS_REOPEN} queries, so every (source port, id) is new. Answered {} per run; lost \
         events {} (over all runs: {reasons:?}); unmatched answers {}.",
        qps.show(kqps),
        lost.show(count),
        unmatched.show(count)
    ));
    b.json.insert(
        "flows".into(),
        json!({
            "queries": FLOWS,
            "reopen_every": FLOWS_REOPEN,
            "rss_end_mib": rss_end.json(),
            "vmhwm_mib": hwm.json(),
            "rss_growth_10pct_to_end_mib": growth.json(),
            "answered_qps": qps.json(),
            "lost_events": lost.json(),
            "unmatched_answers": unmatched.json(),
            "runs": trace,
        }),
    );
    Ok(())
}
