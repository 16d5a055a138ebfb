//! Phase 2: packet path.

use super::*;

#[derive(Default)]
pub(crate) struct PathResults {
    /// Delivered pps per configuration, one value per run.
    pub(crate) pps: BTreeMap<&'static str, Series>,
    /// CPU ns per delivered packet (senders + ksoftirqd), per run.
    pub(crate) cpu_ns: BTreeMap<&'static str, Series>,
    /// CPU used by everything else on the machine, % of one core.
    pub(crate) other: Series,
    pub(crate) pps_ratio: Series,
    pub(crate) cpu_ratio: Series,
    /// ns per run, per program, from BPF_ENABLE_STATS.
    pub(crate) prog_ns: BTreeMap<&'static str, Series>,
    /// Program runs per delivered packet.
    pub(crate) prog_runs_per_pkt: BTreeMap<&'static str, Series>,
    pub(crate) interfaces: usize,
    pub(crate) windows: usize,
    pub(crate) toggle_ms: Series,
}

pub(crate) fn read_rx_packets(file: &mut File) -> Result<u64> {
    file.rewind()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == "eth0").then(|| rest.split_whitespace().nth(1)?.parse().ok())?
        })
        .context("no eth0 in /proc/net/dev")
}

/// (run ns, wait ns) of a task from `/proc/PID/schedstat`.
pub(crate) fn schedstat(path: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// `/proc/PID/schedstat` of every ksoftirqd.
pub(crate) fn ksoftirqd_paths() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let path = entry.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.starts_with("ksoftirqd/") {
                out.push(path.join("schedstat").display().to_string());
            }
        }
    }
    out
}

/// One measuring window's counters.
#[derive(Clone, Copy, Default)]
pub(crate) struct PathSample {
    pub(crate) rx: u64,
    pub(crate) cpu_ns: u64,
    pub(crate) busy_ticks: u64,
    pub(crate) at: Option<Instant>,
}

pub(crate) fn phase_packet(b: &mut Bench) -> Result<()> {
    const PAIRS: usize = 6;
    const WINDOW: Duration = Duration::from_millis(300);
    const GAP: Duration = Duration::from_millis(50);
    // Windows plus attach/detach (each TCX change waits an RCU grace period).
    let per_run = Duration::from_secs(9);
    let runs = b.runs_that_fit(per_run, Duration::from_secs(410));
    ensure!(runs >= 1, "no time left for the packet path");
    let topo = Topology::build(Datapath::Bridge, 4)?;
    let pods = topo.pods.clone();
    // Receivers: a bound socket (never read: the packet has crossed every
    // traced hook by then; a full queue drops it) and the receiving pod's
    // /proc/net/dev, opened inside the pod so it keeps showing that pod.
    let mut rx_files = Vec::new();
    let mut sinks = Vec::new();
    for pod in [&pods[1], &pods[3]] {
        let ip = pod.ip;
        let (sock, file) = netns::run_in(&pod.netns, move || -> io::Result<(UdpSocket, File)> {
            let s = UdpSocket::bind(SocketAddrV4::new(ip, SINK_PORT))?;
            let f = File::open("/proc/thread-self/net/dev")?;
            Ok((s, f))
        })??;
        sinks.push(sock);
        rx_files.push(file);
    }
    // Senders: pod0 → pod1 on CPU 0, pod2 → pod3 on CPU 1. Each reports its
    // thread id: its CPU time (softirqs run in its context) is read from
    // /proc/self/task/TID/schedstat.
    let stop = Arc::new(AtomicBool::new(false));
    struct StopSenders(Arc<AtomicBool>);
    impl Drop for StopSenders {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stop_guard = StopSenders(Arc::clone(&stop));
    let (tid_tx, tid_rx) = mpsc::channel();
    let mut senders = Vec::new();
    for (k, (from, to)) in [(0usize, 1usize), (2, 3)].into_iter().enumerate() {
        let to = SocketAddrV4::new(pods[to].ip, SINK_PORT);
        let stop = Arc::clone(&stop);
        let tid_tx = tid_tx.clone();
        senders.push(netns::spawn_in(&pods[from].netns, move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            blast(to, k, &stop)
        }));
    }
    let mut cpu_paths = ksoftirqd_paths();
    for _ in 0..2 {
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .context("sender did not start")?;
        cpu_paths.push(format!("/proc/self/task/{tid}/schedstat"));
    }

    let node = topo.node.clone();
    let result = netns::run_in(&node, move || -> Result<PathResults> {
        let programs = tc_programs();
        let mut ebpf = probes::load()?;
        let mut tc = TcAttachments::load(&mut ebpf, &programs)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let all = rt.block_on(interfaces::list())?;
        let traced = interfaces::select(&all, &[])?;
        let macs = rt.block_on(interfaces::peer_macs(&traced))?;
        flood::set_port_macs(&mut ebpf, &macs)?;
        let names: Vec<String> = traced.iter().map(|i| i.name.clone()).collect();
        let mut res = PathResults {
            interfaces: names.len(),
            ..PathResults::default()
        };
        let sample = |files: &mut Vec<File>| -> Result<PathSample> {
            let rx = files.iter_mut().map(read_rx_packets).sum::<Result<u64>>()?;
            let cpu_ns = cpu_paths.iter().map(|p| schedstat(p).0).sum();
            let busy_ticks = system_ticks()?.0;
            Ok(PathSample {
                rx,
                cpu_ns,
                busy_ticks,
                at: Some(Instant::now()),
            })
        };
        // Warm up: ARP, FDB learning, caches.
        std::thread::sleep(Duration::from_millis(500));
        for run in 0..runs {
            check_stop()?;
            // (packets, cpu ns, seconds) per configuration over the run.
            let mut sums: BTreeMap<bool, (u64, u64, f64)> = BTreeMap::new();
            let (mut busy, mut ours, mut elapsed) = (0u64, 0u64, 0.0);
            for k in 0..2 * PAIRS {
                // off on | on off | off on …: each pair starts with the other.
                let on = (k % 2 == 1) ^ ((k / 2 + run) % 2 == 1);
                let t = Instant::now();
                if on {
                    for name in &names {
                        tc.attach(&mut ebpf, name)?;
                    }
                } else {
                    tc.detach_all(&mut ebpf);
                }
                res.toggle_ms.push(t.elapsed().as_secs_f64() * 1e3);
                std::thread::sleep(GAP);
                let a = sample(&mut rx_files)?;
                std::thread::sleep(WINDOW);
                let z = sample(&mut rx_files)?;
                let dt = z.at.zip(a.at).map_or(0.0, |(z, a)| (z - a).as_secs_f64());
                let s = sums.entry(on).or_default();
                s.0 += z.rx - a.rx;
                s.1 += z.cpu_ns - a.cpu_ns;
                s.2 += dt;
                busy += z.busy_ticks - a.busy_ticks;
                ours += z.cpu_ns - a.cpu_ns;
                elapsed += dt;
                res.windows += 1;
            }
            let (off, on) = (sums[&false], sums[&true]);
            let pps = |s: (u64, u64, f64)| s.0 as f64 / s.2;
            let cpu = |s: (u64, u64, f64)| s.1 as f64 / s.0.max(1) as f64;
            res.pps.entry("probes off").or_default().push(pps(off));
            res.pps.entry("probes on").or_default().push(pps(on));
            res.cpu_ns.entry("probes off").or_default().push(cpu(off));
            res.cpu_ns.entry("probes on").or_default().push(cpu(on));
            res.pps_ratio.push(pps(on) / pps(off));
            res.cpu_ratio.push(cpu(off) / cpu(on));
            let busy_ns = busy as f64 * 1e9 / clock_ticks();
            res.other
                .push((busy_ns - ours as f64).max(0.0) / (elapsed * 1e9) * 100.0);
            // Per-program cost in place: BPF_ENABLE_STATS over two windows.
            for name in &names {
                tc.attach(&mut ebpf, name)?;
            }
            let stats_fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
            std::thread::sleep(GAP);
            let p0 = program_stats(&ebpf, &programs)?;
            let a = sample(&mut rx_files)?;
            std::thread::sleep(2 * WINDOW);
            let z = sample(&mut rx_files)?;
            let p1 = program_stats(&ebpf, &programs)?;
            drop(stats_fd);
            let delivered = (z.rx - a.rx).max(1) as f64;
            for p in &programs {
                let ((t0, c0), (t1, c1)) = (p0[p.name], p1[p.name]);
                let n = c1.saturating_sub(c0);
                if n > 0 {
                    res.prog_ns
                        .entry(p.name)
                        .or_default()
                        .push(t1.saturating_sub(t0) as f64 / n as f64);
                    res.prog_runs_per_pkt
                        .entry(p.name)
                        .or_default()
                        .push(n as f64 / delivered);
                }
            }
            eprintln!(
                "bench: packet run {}: off {:.0} pps {:.0} ns/pkt, on {:.0} pps {:.0} ns/pkt, other load {:.0} % of a core",
                run + 1,
                pps(off),
                cpu(off),
                pps(on),
                cpu(on),
                res.other.0.last().unwrap_or(&0.0)
            );
        }
        tc.detach_all(&mut ebpf);
        Ok(res)
    })?;
    drop(stop_guard);
    for s in senders {
        match s.join() {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("bench: sender: {e}"),
            Ok(Err(e)) => eprintln!("bench: sender netns: {e}"),
            Err(_) => eprintln!("bench: sender panicked"),
        }
    }
    drop(sinks);
    drop(topo);
    let res = result?;

    if let Some(m) = res.other.median() {
        b.others.push(("packet-path", m));
    }
    let off = res.pps.get("probes off").cloned().unwrap_or_default();
    let on = res.pps.get("probes on").cloned().unwrap_or_default();
    let cpu_off = res.cpu_ns.get("probes off").cloned().unwrap_or_default();
    let cpu_on = res.cpu_ns.get("probes on").cloned().unwrap_or_default();
    b.row(
        "packet path: pps with every TC probe ÷ none (64-byte UDP pod→pod, bridge)",
        res.pps_ratio.show(ratio),
        &format!("≥ {TARGET_PATH_RATIO}"),
        res.pps_ratio.median().map(|r| r >= TARGET_PATH_RATIO),
    );
    b.row(
        "packet path: packets per CPU-second with probes ÷ none (immune to other load)",
        res.cpu_ratio.show(ratio),
        &format!("≥ {TARGET_PATH_RATIO}"),
        res.cpu_ratio.median().map(|r| r >= TARGET_PATH_RATIO),
    );
    b.row(
        "packet path: pps without / with probes",
        format!("{} / {}", off.show(kpps), on.show(kpps)),
        "—",
        None,
    );
    let mut worst: Option<(&str, f64, Series)> = None;
    let rows: Vec<(&str, &Series, f64, f64)> = res
        .prog_ns
        .iter()
        .map(|(name, s)| {
            let per_pkt = res
                .prog_runs_per_pkt
                .get(name)
                .and_then(Series::median)
                .unwrap_or(0.0);
            (*name, s, s.median().unwrap_or(f64::NAN), per_pkt)
        })
        .collect();
    let sum_ns_per_pkt: f64 = rows.iter().map(|(_, _, m, n)| m * n).sum();
    let mut lines = String::new();
    for (name, s, m, per_pkt) in rows {
        let _ = writeln!(
            lines,
            "| {name} | {} | {per_pkt:.2} | {:.1} | {:.0} % |",
            s.show(|v| format!("{v:.1}")),
            m * per_pkt,
            m * per_pkt / sum_ns_per_pkt * 100.0
        );
        if worst.as_ref().is_none_or(|(_, w, _)| m > *w) {
            worst = Some((name, m, s.clone()));
        }
    }
    if let Some((name, m, s)) = &worst {
        b.row(
            &format!("packet path, BPF stats: slowest program per run ({name})"),
            s.show(ns),
            &format!("≤ {TARGET_NS_OTHER:.0} ns"),
            Some(*m <= TARGET_NS_OTHER),
        );
    }
    let (c_off, c_on) = (
        cpu_off.median().unwrap_or(f64::NAN),
        cpu_on.median().unwrap_or(f64::NAN),
    );
    let mut md = format!(
        "### Packet path (bridge, {} traced interfaces, 2 senders × sendmmsg pinned to CPU 0 \
         and 1, {PACKET_PAYLOAD}-byte payloads; per run {PAIRS} off/on pairs of {} ms windows, \
         order alternating; {} runs)\n\n\
         | configuration | delivered pps | CPU ns per packet (senders + ksoftirqd) |\n|---|---|---|\n",
        res.interfaces,
        WINDOW.as_millis(),
        res.pps_ratio.0.len()
    );
    for (label, s) in &res.pps {
        let c = res.cpu_ns.get(label).cloned().unwrap_or_default();
        let _ = writeln!(md, "| {label} | {} | {} |", s.show(kpps), c.show(ns));
    }
    let _ = writeln!(
        md,
        "\nEverything else on the machine used {} of a core meanwhile. \
         Attaching or detaching all programs took {} per toggle.\n\n\
         | program (BPF_ENABLE_STATS, in place) | ns per run | runs per packet | ns per packet \
         | share |\n|---|---|---|---|---|\n{lines}\nWhat the probes add: {:.0} ns of CPU per packet \
         ({c_off:.0} → {c_on:.0}). Their programs' own run time (stats, which add a clock read \
         per run) is {sum_ns_per_pkt:.0} ns per packet; the rest is TCX dispatch (one \
         retpolined indirect call per program) and cache misses.",
        res.other.show(pct),
        res.toggle_ms.show(|v| format!("{v:.1} ms")),
        c_on - c_off,
    );
    b.detail(md);
    let map = |m: &BTreeMap<&'static str, Series>| -> Value {
        Value::Object(m.iter().map(|(k, s)| ((*k).to_owned(), s.json())).collect())
    };
    b.json.insert(
        "packet_path".into(),
        json!({
            "interfaces": res.interfaces,
            "window_ms": WINDOW.as_millis() as u64,
            "pairs_per_run": PAIRS,
            "payload_bytes": PACKET_PAYLOAD,
            "pps": map(&res.pps),
            "cpu_ns_per_packet": map(&res.cpu_ns),
            "ratio_pps_on_off": res.pps_ratio.json(),
            "ratio_packets_per_cpu_on_off": res.cpu_ratio.json(),
            "other_load_pct_of_core": res.other.json(),
            "toggle_ms": res.toggle_ms.json(),
            "bpf_stats_ns_per_run": map(&res.prog_ns),
            "bpf_runs_per_packet": map(&res.prog_runs_per_pkt),
            "bpf_ns_per_packet": sum_ns_per_pkt,
        }),
    );
    Ok(())
}
