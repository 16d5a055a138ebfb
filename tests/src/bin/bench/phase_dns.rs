//! Phase 3: DNS capacity, collector, peer.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observer {
    Nothing,
    /// `tracer watch`: every pod veth and the bridge.
    Tracer,
    /// `tracer watch -i <client veth>`: what tcpdump watches.
    TracerOneVeth,
    Tcpdump,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct DnsConfig {
    pub(crate) label: &'static str,
    pub(crate) observer: Observer,
    pub(crate) rate: Option<u64>,
    pub(crate) secs: u64,
    /// BPF_ENABLE_STATS during the load (tracer's programs' real cost).
    pub(crate) bpf_stats: bool,
}

pub(crate) const DNS_CONFIGS: [DnsConfig; 8] = [
    DnsConfig {
        label: "nothing @ max",
        observer: Observer::Nothing,
        rate: None,
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "tracer @ 10k",
        observer: Observer::Tracer,
        rate: Some(10_000),
        secs: 5,
        bpf_stats: true,
    },
    DnsConfig {
        label: "tracer @ 50k",
        observer: Observer::Tracer,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: true,
    },
    DnsConfig {
        label: "tracer @ max",
        observer: Observer::Tracer,
        rate: None,
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "tracer -i veth @ 50k",
        observer: Observer::TracerOneVeth,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: true,
    },
    DnsConfig {
        label: "tcpdump @ 50k",
        observer: Observer::Tcpdump,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "tcpdump @ max",
        observer: Observer::Tcpdump,
        rate: None,
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "nothing @ 50k",
        observer: Observer::Nothing,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: false,
    },
];

/// One measurement of one configuration.
#[derive(Clone, Debug, Default)]
pub(crate) struct DnsSample {
    pub(crate) load: LoadResult,
    /// A fixed-rate run whose generator fell short of the rate (the
    /// machine was busy): not a measurement at that rate, left out.
    pub(crate) short: bool,
    pub(crate) system_cpu: f64,
    pub(crate) observer_cpu: Option<f64>,
    /// From the observer's threads' schedstat (ns precision), % of a core.
    pub(crate) observer_cpu_precise: Option<f64>,
    /// CPU used by other processes meanwhile (machine busy minus the DNS
    /// path and the observer), % of a core.
    pub(crate) others_cpu: f64,
    /// CPU of generator, responder and ksoftirqd per answered query: the
    /// whole DNS path, kernel included, wherever the softirqs ran.
    pub(crate) path_ns_per_query: f64,
    /// The observer process's CPU per answered query.
    pub(crate) observer_ns_per_query: Option<f64>,
    // tracer only
    pub(crate) startup_s: Option<f64>,
    pub(crate) hwm_mib: Option<f64>,
    pub(crate) losses: Option<u64>,
    pub(crate) loss_reasons: BTreeMap<String, u64>,
    pub(crate) unmatched: Option<u64>,
    pub(crate) matched_client: Option<u64>,
    pub(crate) queries_seen: Option<u64>,
    pub(crate) events: Option<u64>,
    /// ns per run of tracer's programs (BPF stats), by name.
    /// tracer's programs over the load: (ns per run, runs per answered
    /// query, ns per answered query), by name.
    pub(crate) prog: BTreeMap<String, (f64, f64, f64)>,
    /// All of tracer's programs, ns per answered query (BPF stats).
    pub(crate) bpf_ns_per_query: Option<f64>,
    // tcpdump only
    pub(crate) tcpdump_captured: Option<u64>,
    pub(crate) tcpdump_dropped: Option<u64>,
}

/// (id, name, run_time ns, run_count) of tracer's programs: the TC ones on
/// `ifaces` (asked of the kernel through TCX in `node`), and its tracing
/// hooks (by name, loaded since `since`).
pub(crate) fn tracer_programs(
    node: &str,
    ifaces: &[String],
    since: SystemTime,
) -> Result<Vec<(u32, String, u64, u64)>> {
    let ifaces = ifaces.to_vec();
    let mut out: BTreeMap<u32, (String, u64, u64)> = netns::run_in(node, move || {
        let mut out = BTreeMap::new();
        for iface in &ifaces {
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                let Ok((_, progs)) = SchedClassifier::query_tcx(iface, dir) else {
                    continue;
                };
                for p in progs {
                    out.insert(
                        p.id(),
                        (
                            p.name_as_str().unwrap_or("?").to_owned(),
                            u64::try_from(p.run_time().as_nanos()).unwrap_or(0),
                            p.run_count(),
                        ),
                    );
                }
            }
        }
        out
    })?;
    let since = since - Duration::from_secs(1);
    let hook_names: Vec<&str> = hooks::HOOKS
        .iter()
        .flat_map(|h| h.chain)
        .flat_map(|a| a.programs.iter().copied())
        .collect();
    for p in aya::programs::loaded_programs().flatten() {
        let name = p.name_as_str().unwrap_or("").to_owned();
        // Kernel names are cut at 15 bytes.
        let ours = hook_names
            .iter()
            .any(|h| !name.is_empty() && h.starts_with(name.as_str()));
        if ours && p.loaded_at().is_some_and(|t| t >= since) {
            out.insert(
                p.id(),
                (
                    name,
                    u64::try_from(p.run_time().as_nanos()).unwrap_or(0),
                    p.run_count(),
                ),
            );
        }
    }
    Ok(out
        .into_iter()
        .map(|(id, (name, t, c))| (id, name, t, c))
        .collect())
}

pub(crate) struct DnsLab {
    pub(crate) topo: Topology,
    pub(crate) responder: Responder,
    pub(crate) ksoftirqd: Vec<String>,
    pub(crate) server: SocketAddrV4,
    pub(crate) client_netns: String,
    pub(crate) client_if: String,
    pub(crate) server_if: String,
}

impl DnsLab {
    pub(crate) fn build() -> Result<Self> {
        let topo = Topology::build(Datapath::Bridge, 2)?;
        let (server_pod, client_pod) = (topo.pods[0].clone(), topo.pods[1].clone());
        let responder = Responder::start(&server_pod.netns, server_pod.ip, 1)?;
        let lab = Self {
            server: SocketAddrV4::new(server_pod.ip, 53),
            client_netns: client_pod.netns.clone(),
            client_if: client_pod.host_if.clone(),
            server_if: server_pod.host_if.clone(),
            topo,
            responder,
            ksoftirqd: ksoftirqd_paths(),
        };
        // Warm up: ARP, FDB, socket caches.
        let warm = lab.load(
            Load {
                rate: Some(5_000),
                duration: Some(Duration::from_millis(500)),
                total: None,
                reopen_every: 0,
            },
            Arc::new(AtomicU64::new(0)),
        )?;
        ensure!(
            warm.answers > 0,
            "the DNS responder answered nothing during warm-up ({warm:?})"
        );
        Ok(lab)
    }

    /// The tasks that carry the DNS path besides the generator: the
    /// responder's thread and every ksoftirqd (schedstat paths).
    pub(crate) fn path_tasks(&self) -> Vec<String> {
        let mut v = self.ksoftirqd.clone();
        v.push(self.responder.schedstat.clone());
        v
    }

    pub(crate) fn load(&self, load: Load, progress: Arc<AtomicU64>) -> Result<LoadResult> {
        generate(&self.client_netns, self.server, load, 0, progress)
    }

    pub(crate) fn measure(&self, bin: &Path, cfg: DnsConfig) -> Result<DnsSample> {
        let mut sample = DnsSample::default();
        let tracer = match cfg.observer {
            Observer::Tracer => Some(TracerProc::start(bin, &self.topo.node, &[])?),
            Observer::TracerOneVeth => Some(TracerProc::start(
                bin,
                &self.topo.node,
                &[self.client_if.as_str()],
            )?),
            _ => None,
        };
        let tcpdump = match cfg.observer {
            Observer::Tcpdump => Some(Tcpdump::start(&self.topo.node, &self.client_if)?),
            _ => None,
        };
        let pid = tracer
            .as_ref()
            .map(TracerProc::pid)
            .or(tcpdump.as_ref().map(Tcpdump::pid));
        let ifaces = vec![self.client_if.clone(), self.server_if.clone()];
        let stats_fd = if cfg.bpf_stats {
            Some(enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?)
        } else {
            None
        };
        let progs0 = match (&tracer, cfg.bpf_stats) {
            (Some(t), true) => Some(tracer_programs(&self.topo.node, &ifaces, t.spawned_at)?),
            _ => None,
        };
        let window = CpuWindow::start(pid)?;
        let path0: u64 = self.path_tasks().iter().map(|p| schedstat(p).0).sum();
        let obs0 = pid.map(process_cpu_ns);
        let load = self.load(
            Load {
                rate: cfg.rate,
                duration: Some(Duration::from_secs(cfg.secs)),
                total: None,
                reopen_every: 0,
            },
            Arc::new(AtomicU64::new(0)),
        )?;
        let (system_cpu, observer_cpu) = window.end()?;
        let path1: u64 = self.path_tasks().iter().map(|p| schedstat(p).0).sum();
        let obs1 = pid.map(process_cpu_ns);
        sample.path_ns_per_query =
            (path1 - path0 + load.cpu_ns) as f64 / load.answers.max(1) as f64;
        if let (Some(a), Some(z)) = (obs0, obs1) {
            sample.observer_ns_per_query =
                Some(z.saturating_sub(a) as f64 / load.answers.max(1) as f64);
            sample.observer_cpu_precise = Some(z.saturating_sub(a) as f64 / load.secs / 1e7);
        }
        let ours = (path1 - path0 + load.cpu_ns) as f64 / load.secs / 1e7
            + sample.observer_cpu_precise.unwrap_or(0.0);
        sample.others_cpu = (system_cpu - ours).max(0.0);
        sample.load = load;
        sample.system_cpu = system_cpu;
        sample.observer_cpu = observer_cpu;
        if let (Some(t), Some(before)) = (&tracer, progs0) {
            let after = tracer_programs(&self.topo.node, &ifaces, t.spawned_at)?;
            let mut total = 0u64;
            let queries = load.answers.max(1) as f64;
            for (id, name, t1, c1) in &after {
                if let Some((_, _, t0, c0)) = before.iter().find(|p| p.0 == *id) {
                    let runs = c1.saturating_sub(*c0);
                    let dt = t1.saturating_sub(*t0);
                    total += dt;
                    if runs > 0 {
                        sample.prog.insert(
                            name.clone(),
                            (
                                dt as f64 / runs as f64,
                                runs as f64 / queries,
                                dt as f64 / queries,
                            ),
                        );
                    }
                }
            }
            sample.bpf_ns_per_query = Some(total as f64 / queries);
        }
        drop(stats_fd);
        if let Some(t) = tracer {
            sample.startup_s = Some(t.startup.as_secs_f64());
            sample.hwm_mib = Some(proc_kib(t.pid(), "VmHWM")? as f64 / 1024.0);
            let report = t.stop()?;
            self.read_report(&report, &mut sample);
        }
        if let Some(d) = tcpdump {
            let (captured, dropped) = d.stop();
            sample.tcpdump_captured = Some(captured);
            sample.tcpdump_dropped = Some(dropped);
        }
        Ok(sample)
    }

    pub(crate) fn read_report(&self, report: &Value, sample: &mut DnsSample) {
        let mut losses = 0;
        if let Some(list) = report["losses"].as_array() {
            for l in list {
                let n = l["count"].as_u64().unwrap_or(0);
                losses += n;
                if n > 0 {
                    sample
                        .loss_reasons
                        .insert(l["reason"].as_str().unwrap_or("?").to_owned(), n);
                }
            }
        }
        sample.losses = Some(losses);
        let counters = &report["dns"]["counters"];
        sample.unmatched = counters["unmatched_answers"].as_u64();
        sample.queries_seen = counters["queries"].as_u64();
        sample.events = report["dns"]["events_total"].as_u64();
        sample.matched_client = report["dns"]["latency"].as_array().map(|l| {
            l.iter()
                .filter(|e| e["interface"].as_str() == Some(self.client_if.as_str()))
                .filter_map(|e| e["answers"].as_u64())
                .sum()
        });
    }
}

pub(crate) fn phase_dns(b: &mut Bench) -> Result<()> {
    // Loads, plus about 2.5 s to start and stop each tracer.
    let per_cycle = Duration::from_secs(DNS_CONFIGS.iter().map(|c| c.secs + 2).sum::<u64>());
    let runs = b.runs_that_fit(per_cycle, Duration::from_secs(210));
    ensure!(runs >= 1, "no time left for the DNS phase");
    let lab = DnsLab::build()?;
    let mut samples: BTreeMap<&'static str, Vec<DnsSample>> = BTreeMap::new();
    let mut short_runs: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut disturbed = 0usize;
    let mut tracer_vs_tcpdump_cpu = Series::default();
    let mut tracer_vs_tcpdump_sys = Series::default();
    let mut tracer_vs_tcpdump_qps = Series::default();
    let mut cost_tracer = Series::default();
    let mut cost_tcpdump = Series::default();
    let mut cost_one_veth = Series::default();
    let mut delta_tracer = Series::default();
    let mut delta_ratio = Series::default();
    let mut per_cpu_vs_tcpdump = Series::default();
    let mut per_cpu_vs_nothing = Series::default();
    let mut one_veth_vs_tcpdump = Series::default();
    let mut tracer_vs_nothing_qps = Series::default();
    for run in 0..runs {
        let mut this: BTreeMap<&'static str, DnsSample> = BTreeMap::new();
        for k in 0..DNS_CONFIGS.len() {
            check_stop()?;
            let cfg = DNS_CONFIGS[(run + k) % DNS_CONFIGS.len()];
            let mut s = lab
                .measure(&b.args.tracer, cfg)
                .with_context(|| format!("DNS run {}: {}", run + 1, cfg.label))?;
            s.short = cfg
                .rate
                .is_some_and(|r| s.load.answer_rate() < 0.95 * r as f64);
            if s.short {
                *short_runs.entry(cfg.label).or_default() += 1;
            }
            eprintln!(
                "bench: dns run {} {:<14} sent {:>7.0}/s answered {:>7.0}/s cpu {:>5.1} % obs {:?}",
                run + 1,
                cfg.label,
                s.load.sent_rate(),
                s.load.answer_rate(),
                s.system_cpu,
                s.observer_cpu.map(|c| (c * 100.0).round() / 100.0)
            );
            this.insert(cfg.label, s);
        }
        // Ratios compare CPU between configurations: a sample during which
        // other processes took a real share of the machine is left out.
        let get = |l: &str| {
            this.get(l)
                .filter(|s| !s.short && s.others_cpu < DISTURBED_PCT)
        };
        disturbed += this
            .values()
            .filter(|s| !s.short && s.others_cpu >= DISTURBED_PCT)
            .count();
        if let (Some(t), Some(d)) = (get("tracer @ 50k"), get("tcpdump @ 50k")) {
            if let (Some(tc), Some(dc)) = (t.observer_cpu_precise, d.observer_cpu_precise) {
                tracer_vs_tcpdump_cpu.push(tc / dc.max(1e-9));
            }
            // Whole cost per query: what the DNS path's CPU grew by over no
            // observer, plus the observer process itself.
            if let Some(n) = get("nothing @ 50k") {
                let cost = |x: &DnsSample| {
                    x.path_ns_per_query - n.path_ns_per_query
                        + x.observer_ns_per_query.unwrap_or(0.0)
                };
                // tracer's kernel side is known exactly (BPF stats, its
                // own clock reads included); tcpdump's only as the growth
                // of the path's CPU over no observer.
                let exact = |x: &DnsSample| {
                    x.bpf_ns_per_query.unwrap_or(0.0) + x.observer_ns_per_query.unwrap_or(0.0)
                };
                let (ct, cd) = (exact(t), cost(d));
                cost_tracer.push(ct);
                cost_tcpdump.push(cd);
                delta_tracer.push(cost(t));
                if cd > 0.0 {
                    tracer_vs_tcpdump_sys.push(ct / cd);
                    delta_ratio.push(cost(t).max(0.0) / cd);
                }
                if let Some(o) = get("tracer -i veth @ 50k") {
                    let co = exact(o);
                    cost_one_veth.push(co);
                    if cd > 0.0 {
                        one_veth_vs_tcpdump.push(co / cd);
                    }
                }
            }
        }
        // At max: answered q/s (what the issue asks, at the mercy of other
        // load), and queries per CPU-second of the path (immune to it).
        if let (Some(t), Some(d)) = (get("tracer @ max"), get("tcpdump @ max")) {
            tracer_vs_tcpdump_qps.push(t.load.answer_rate() / d.load.answer_rate());
            per_cpu_vs_tcpdump.push(d.path_ns_per_query / t.path_ns_per_query);
        }
        if let (Some(t), Some(n)) = (get("tracer @ max"), get("nothing @ max")) {
            tracer_vs_nothing_qps.push(t.load.answer_rate() / n.load.answer_rate());
            per_cpu_vs_nothing.push(n.path_ns_per_query / t.path_ns_per_query);
        }
        for (label, s) in this {
            samples.entry(label).or_default().push(s);
        }
    }
    drop(lab);

    let series = |label: &str, f: &dyn Fn(&DnsSample) -> Option<f64>| -> Series {
        let mut s = Series::default();
        for x in samples
            .get(label)
            .into_iter()
            .flatten()
            .filter(|x| !x.short)
        {
            if let Some(v) = f(x) {
                s.push(v);
            }
        }
        s
    };
    // Capacity rows.
    for label in ["tracer @ 10k", "tracer @ 50k", "tracer @ max"] {
        let answered = series(label, &|s| Some(s.load.answer_rate()));
        let sent = series(label, &|s| Some(s.load.sent_rate()));
        let lost = series(label, &|s| s.losses.map(|v| v as f64));
        let unmatched = series(label, &|s| s.unmatched.map(|v| v as f64));
        let matched = series(label, &|s| {
            s.matched_client
                .map(|m| m as f64 / s.load.sent.max(1) as f64)
        });
        let target = if label == "tracer @ 50k" {
            "0 lost"
        } else {
            "—"
        };
        let met = (label == "tracer @ 50k").then(|| lost.max() == Some(0.0));
        b.row(
            &format!("DNS {label}: sent / answered q/s; lost events; unmatched answers; matched ÷ sent (client veth)"),
            format!(
                "{} / {}; {}; {}; {}",
                sent.show(kqps),
                answered.show(kqps),
                lost.show(count),
                unmatched.show(count),
                matched.show(|v| format!("{v:.4}"))
            ),
            target,
            met,
        );
    }
    let nothing_max = series("nothing @ max", &|s| Some(s.load.answer_rate()));
    b.row(
        "DNS at max: answered q/s with no observer; tracer ÷ none in q/s; in queries per CPU-second",
        format!(
            "{}; {}; {}",
            nothing_max.show(kqps),
            tracer_vs_nothing_qps.show(ratio),
            per_cpu_vs_nothing.show(ratio)
        ),
        "—",
        None,
    );
    // Collector.
    let cpu10 = series("tracer @ 10k", &|s| s.observer_cpu);
    let cpu10_precise = series("tracer @ 10k", &|s| s.observer_cpu_precise);
    b.row(
        "collector CPU at 10k q/s (% of one core): utime+stime; threads' schedstat",
        format!("{}; {}", cpu10.show(pct), cpu10_precise.show(pct)),
        &format!("≤ {TARGET_CPU_PCT} %"),
        cpu10
            .median()
            .zip(cpu10_precise.median())
            .map(|(a, b)| a.max(b) <= TARGET_CPU_PCT),
    );
    let hwm10 = series("tracer @ 10k", &|s| s.hwm_mib);
    b.row(
        "collector peak RSS at 10k q/s (VmHWM)",
        hwm10.show(mib),
        &format!("≤ {TARGET_RSS_MIB:.0} MiB"),
        hwm10.max().map(|m| m <= TARGET_RSS_MIB),
    );
    // Peer.
    b.row(
        "peer: process CPU tracer ÷ tcpdump at 50k q/s (user space only)",
        tracer_vs_tcpdump_cpu.show(ratio),
        &format!("≤ {TARGET_PEER_RATIO}"),
        tracer_vs_tcpdump_cpu
            .median()
            .map(|m| m <= TARGET_PEER_RATIO),
    );
    b.row(
        "peer: CPU per query tracer ÷ tcpdump at 50k q/s (process + kernel: tracer's BPF time; tcpdump's path growth over none)",
        format!(
            "{} ({} vs {} per query)",
            tracer_vs_tcpdump_sys.show(ratio),
            cost_tracer.show(ns),
            cost_tcpdump.show(ns)
        ),
        &format!("≤ {TARGET_PEER_RATIO}"),
        tracer_vs_tcpdump_sys
            .median()
            .map(|m| m <= TARGET_PEER_RATIO),
    );
    b.row(
        "peer: the same, tracer on tcpdump's one veth only (`-i`)",
        format!(
            "{} ({} vs {} per query)",
            one_veth_vs_tcpdump.show(ratio),
            cost_one_veth.show(ns),
            cost_tcpdump.show(ns)
        ),
        &format!("≤ {TARGET_PEER_RATIO}"),
        one_veth_vs_tcpdump.median().map(|m| m <= TARGET_PEER_RATIO),
    );
    b.row(
        "peer: at max, tracer ÷ tcpdump: answered q/s; queries per CPU-second",
        format!(
            "{}; {}",
            tracer_vs_tcpdump_qps.show(ratio),
            per_cpu_vs_tcpdump.show(ratio)
        ),
        "≥ 1",
        per_cpu_vs_tcpdump.median().map(|m| m >= 1.0),
    );

    // Details.
    let mut md = format!(
        "### DNS ({} runs; built-in responder pinned to CPU 1, generator pinned to CPU 0, \
         {DNS_SOCKETS} client sockets each with one query in flight, a new id per query)\n\n\
         | configuration | sent q/s | answered q/s | path CPU per query | observer CPU per \
         query | observer CPU (% of a core) | other processes (% of a core) | lost events | \
         unmatched | tracer startup |\n|---|---|---|---|---|---|---|---|---|---|\n",
        runs
    );
    for cfg in DNS_CONFIGS {
        let l = cfg.label;
        let _ = writeln!(
            md,
            "| {l} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            series(l, &|s| Some(s.load.sent_rate())).show(kqps),
            series(l, &|s| Some(s.load.answer_rate())).show(kqps),
            series(l, &|s| Some(s.path_ns_per_query)).show(ns),
            series(l, &|s| s.observer_ns_per_query).show(ns),
            series(l, &|s| s.observer_cpu_precise).show(|v| format!("{v:.2}")),
            series(l, &|s| Some(s.others_cpu)).show(|v| format!("{v:.0}")),
            series(l, &|s| s.losses.map(|v| v as f64)).show(count),
            series(l, &|s| s.unmatched.map(|v| v as f64)).show(count),
            series(l, &|s| s.startup_s).show(secs),
        );
    }
    let mut others = Series::default();
    for x in samples.values().flatten() {
        others.push(x.others_cpu);
    }
    if let Some(m) = others.median() {
        b.others.push(("DNS", m));
    }
    let tcpdump_drops = series("tcpdump @ max", &|s| s.tcpdump_dropped.map(|v| v as f64));
    let tcpdump_capt = series("tcpdump @ max", &|s| s.tcpdump_captured.map(|v| v as f64));
    let _ = writeln!(
        md,
        "\ntcpdump @ max: {} packets captured, {} dropped by kernel per run.",
        tcpdump_capt.show(count),
        tcpdump_drops.show(count)
    );
    let _ = writeln!(
        md,
        "\nThe ratios pair configurations of the same run; {disturbed} of {} samples were \
         left out of them because other processes used ≥ {DISTURBED_PCT:.0} % of a core \
         meanwhile.",
        runs * DNS_CONFIGS.len()
    );
    if !short_runs.is_empty() {
        let _ = writeln!(
            md,
            "\nLeft out (the generator fell short of the rate, the machine being busy): \
             {short_runs:?}."
        );
    }
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples.values().flatten() {
        for (r, n) in &s.loss_reasons {
            *reasons.entry(r.clone()).or_default() += n;
        }
    }
    if !reasons.is_empty() {
        let _ = writeln!(md, "\nLoss reasons over every tracer run: {reasons:?}.");
    }
    // Programs under DNS load (tracer's own, BPF stats).
    let _ = writeln!(
        md,
        "\nDifferential cost per query at 50k q/s (path CPU with tracer − without, plus \
         the process; BPF stats were on in the tracer runs): tracer {}, ratio to tcpdump {} \
         — noisier than BPF stats, same conclusion.",
        delta_tracer.show(ns),
        delta_ratio.show(ratio)
    );
    let mut prog: BTreeMap<String, Series> = BTreeMap::new();
    let mut prog_table = String::new();
    for label in ["tracer @ 10k", "tracer @ 50k"] {
        let mut per: BTreeMap<String, [Series; 3]> = BTreeMap::new();
        for s in samples.get(label).into_iter().flatten() {
            for (name, (run, runs, per_q)) in &s.prog {
                let e = per.entry(name.clone()).or_default();
                e[0].push(*run);
                e[1].push(*runs);
                e[2].push(*per_q);
            }
        }
        let total = series(label, &|s| s.bpf_ns_per_query);
        let _ = writeln!(
            prog_table,
            "\ntracer's programs at {} (BPF_ENABLE_STATS; all together {} per query):\n\n\
             | program | ns per run | runs per query | ns per query | share |\n|---|---|---|---|---|",
            &label[9..],
            total.show(ns)
        );
        let all = total.median().unwrap_or(f64::NAN);
        for (name, [run, runs, per_q]) in &per {
            let _ = writeln!(
                prog_table,
                "| {name} | {} | {} | {} | {:.0} % |",
                run.show(|v| format!("{v:.0}")),
                runs.show(|v| format!("{v:.2}")),
                per_q.show(|v| format!("{v:.0}")),
                per_q.median().unwrap_or(0.0) / all * 100.0
            );
            if label == "tracer @ 10k" {
                prog.insert(name.clone(), run.clone());
            }
        }
    }
    md.push_str(&prog_table);
    let bpf_share = series("tracer @ 10k", &|s| {
        s.bpf_ns_per_query.map(|v| v * 1e4 / 1e7)
    });
    let slowest_dns = prog
        .iter()
        .filter(|(k, _)| k.starts_with("dns_"))
        .max_by(|a, b| {
            a.1.median()
                .unwrap_or(0.0)
                .total_cmp(&b.1.median().unwrap_or(0.0))
        });
    if let Some((name, s)) = slowest_dns {
        let m = s.median().unwrap_or(f64::NAN);
        b.row(
            &format!("DNS load 10k q/s, BPF stats: slowest DNS program per run ({name})"),
            s.show(ns),
            &format!("≤ {TARGET_NS_DNS:.0} ns"),
            Some(m <= TARGET_NS_DNS),
        );
    }
    b.detail(md);

    let mut j = serde_json::Map::new();
    for cfg in DNS_CONFIGS {
        let l = cfg.label;
        j.insert(
            l.into(),
            json!({
                "rate": cfg.rate,
                "seconds": cfg.secs,
                "sent_qps": series(l, &|s| Some(s.load.sent_rate())).json(),
                "answered_qps": series(l, &|s| Some(s.load.answer_rate())).json(),
                "send_errors": series(l, &|s| Some(s.load.errors as f64)).json(),
                "machine_cpu_pct_of_core": series(l, &|s| Some(s.system_cpu)).json(),
                "other_processes_pct_of_core": series(l, &|s| Some(s.others_cpu)).json(),
                "path_cpu_ns_per_query": series(l, &|s| Some(s.path_ns_per_query)).json(),
                "observer_cpu_ns_per_query": series(l, &|s| s.observer_ns_per_query).json(),
                "observer_cpu_pct_of_core_schedstat": series(l, &|s| s.observer_cpu_precise).json(),
                "timeouts": series(l, &|s| Some(s.load.timeouts as f64)).json(),
                "observer_cpu_pct_of_core": series(l, &|s| s.observer_cpu).json(),
                "lost_events": series(l, &|s| s.losses.map(|v| v as f64)).json(),
                "unmatched_answers": series(l, &|s| s.unmatched.map(|v| v as f64)).json(),
                "matched_client_veth": series(l, &|s| s.matched_client.map(|v| v as f64)).json(),
                "queries_seen_all_veths": series(l, &|s| s.queries_seen.map(|v| v as f64)).json(),
                "dns_events": series(l, &|s| s.events.map(|v| v as f64)).json(),
                "tracer_startup_s": series(l, &|s| s.startup_s).json(),
                "tracer_vmhwm_mib": series(l, &|s| s.hwm_mib).json(),
                "tcpdump_captured": series(l, &|s| s.tcpdump_captured.map(|v| v as f64)).json(),
                "tcpdump_dropped": series(l, &|s| s.tcpdump_dropped.map(|v| v as f64)).json(),
            }),
        );
    }
    j.insert(
        "ratios".into(),
        json!({
            "tracer_vs_tcpdump_process_cpu_50k": tracer_vs_tcpdump_cpu.json(),
            "tracer_vs_tcpdump_cpu_per_query_50k": tracer_vs_tcpdump_sys.json(),
            "tracer_cost_ns_per_query_50k": cost_tracer.json(),
            "tcpdump_cost_ns_per_query_50k": cost_tcpdump.json(),
            "tracer_one_veth_vs_tcpdump_cpu_per_query_50k": one_veth_vs_tcpdump.json(),
            "tracer_one_veth_cost_ns_per_query_50k": cost_one_veth.json(),
            "tracer_vs_tcpdump_max_answered_qps": tracer_vs_tcpdump_qps.json(),
            "tracer_vs_nothing_max_answered_qps": tracer_vs_nothing_qps.json(),
            "tracer_vs_nothing_max_queries_per_cpu_second": per_cpu_vs_nothing.json(),
            "tracer_vs_tcpdump_max_queries_per_cpu_second": per_cpu_vs_tcpdump.json(),
            "tracer_differential_cost_ns_per_query_50k": delta_tracer.json(),
            "tracer_vs_tcpdump_differential_50k": delta_ratio.json(),
        }),
    );
    j.insert(
        "tracer_programs_ns_per_run_10k".into(),
        prog.iter()
            .map(|(k, s)| (k.clone(), s.json()))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    j.insert("tracer_programs_pct_of_core_10k".into(), bpf_share.json());
    j.insert("loss_reasons".into(), json!(reasons));
    j.insert("short_runs_left_out".into(), json!(short_runs));
    j.insert(
        "samples_left_out_of_ratios_other_load".into(),
        json!(disturbed),
    );
    b.json.insert("dns".into(), Value::Object(j));
    Ok(())
}
