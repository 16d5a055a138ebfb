//! `tracer watch`: attach to the pod interfaces, follow pods that come and
//! go, trace until the duration ends or SIGINT/SIGTERM arrives, detach, and
//! report. Snapshots of the report can be published while it runs (live
//! view, metrics).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::Ebpf;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    area::InterfaceState,
    attach::{self, StaleFilterCleanup, TcAttachMode, TcAttachments, TcProgram},
    bridge_setup,
    conntrack::ConntrackCollector,
    counter,
    dns::{
        collector::{DnsCollector, DnsSettings},
        server_list::{self, ListSources},
    },
    drops::{self, DropsCollector},
    escape::Shown,
    flood::{self, collector::FloodCollector},
    hooks::{self, HookLinks, HookStatus},
    interfaces::{self, Interface, Kind, LinkEvent},
    kernel::KernelInfo,
    loss,
    pods::{DatapathInfo, PodIndex, Sources},
    probes::{self, ProbeSettings},
    report::{self, LossReport, Report},
    verdict,
};

/// The combined per-direction programs (`tracer-ebpf/src/tc.rs`): counter,
/// DNS and, on egress, the flood victim count, in one program per hook.
pub const TC_PROGRAMS: [TcProgram; 2] = [
    TcProgram {
        name: "tracer_ingress",
        attach_type: aya::programs::TcAttachType::Ingress,
    },
    TcProgram {
        name: "tracer_egress",
        attach_type: aya::programs::TcAttachType::Egress,
    },
];

/// What to trace and for how long.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Interfaces to attach to; empty = discover (and follow new pods).
    pub interfaces: Vec<String>,
    /// Stop after this long; `None` = until a signal.
    pub duration: Option<Duration>,
    /// How often to refresh snapshots, sweep and log progress.
    pub interval: Duration,
    /// Written once every probe is attached (for scripts and tests).
    pub ready_file: Option<PathBuf>,
    /// `--netns`, for the report.
    pub netns: Option<String>,
    /// Load-time settings of the probes.
    pub probes: ProbeSettings,
    /// DNS collector settings.
    pub dns: DnsSettings,
    /// Receives a fresh report every interval while tracing.
    pub snapshots: Option<tokio::sync::watch::Sender<Option<Arc<Report>>>>,
    /// Log a progress line every interval (off when a live view draws).
    pub progress: bool,
    /// Told once every probe is attached (in-process callers: the lab).
    pub ready: Option<std::sync::mpsc::SyncSender<()>>,
    /// Ends the trace when it turns true (in-process callers: the lab).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// How to attach the TC programs; `None` = by kernel version (TCX from
    /// v6.6). Tests force `Legacy` to run that path on new kernels.
    pub tc_attach: Option<TcAttachMode>,
    /// Where pod attribution reads the node's files (the real paths by
    /// default; tests point them at their own files).
    pub sources: Sources,
    /// Where the DNS server lists are read (`None`: the node's root, see
    /// [`ListSources::detect`]).
    pub dns_lists: Option<ListSources>,
}

/// Runs a trace and returns its report. Everything attached is detached
/// before returning, also on error.
pub async fn run(opts: WatchOptions) -> anyhow::Result<Report> {
    // Handlers first: a SIGINT/SIGTERM that arrives while the probes load or
    // right after the ready file appears must end the trace with a report,
    // not kill the process by the default action.
    let signals = Signals {
        int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
    };
    let kernel = probes::kernel_info();
    let mut ebpf = probes::load_full(&opts.probes, &kernel).context("loading eBPF programs")?;
    let mode = opts.tc_attach.unwrap_or_else(TcAttachMode::detect);
    let mut tc = TcAttachments::load_with_mode(&mut ebpf, &TC_PROGRAMS, mode)?;
    tracing::info!(
        "TC attach: {} ({})",
        mode.name(),
        match (mode, opts.tc_attach.is_some()) {
            (_, true) => "forced",
            (TcAttachMode::Tcx, false) => "TCX links, kernel 6.6 or later",
            (TcAttachMode::Legacy, false) => "clsact + cls_bpf filters, kernel before 6.6",
        }
    );
    // Before attaching: filters a killed tracer left on legacy TC still
    // run its programs (and would count every packet twice in its maps,
    // wasting time). Done in either mode: the dead one may have used legacy.
    let cleanup = attach::remove_stale_filters(&TC_PROGRAMS);
    if cleanup.removed > 0 {
        tracing::info!(
            "removed {} TC filters a dead tracer left behind, on {}",
            cleanup.removed,
            Shown(&cleanup.interfaces.join(" "))
        );
    }
    if let Some(why) = &cleanup.skipped {
        tracing::warn!("leftover TC filters not checked: {why}");
    }

    // Subscribe before listing, so no pod created in between is missed.
    let links = if opts.interfaces.is_empty() {
        Some(interfaces::monitor()?)
    } else {
        None
    };
    let all = interfaces::list().await?;
    let traced = interfaces::select(&all, &opts.interfaces)?;
    if traced.is_empty() && opts.interfaces.is_empty() {
        tracing::warn!(
            "no pod interface yet (no veth, no bridge with veth ports): waiting for pods"
        );
    }
    let result = Session::start(&mut ebpf, &kernel, &mut tc, cleanup, all, &traced, &opts)
        .await
        .map(|session| (session, links));
    let result = match result {
        Ok((mut session, links)) => session.run(&mut ebpf, &mut tc, links, signals, &opts).await,
        Err(err) => Err(err),
    };
    tc.detach_all(&mut ebpf);
    if let Some(path) = &opts.ready_file {
        let _ignored = std::fs::remove_file(path);
    }
    result
}

/// SIGINT and SIGTERM (end the trace), SIGHUP (re-read the node's
/// interfaces and pod files, as daemons reload; a closed terminal must not
/// kill the trace without its cleanup), caught from the start of a trace.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// The state of one trace.
struct Session {
    kernel: KernelInfo,
    hooks: Vec<HookStatus>,
    /// Keeps the fentry/fexit hooks attached for the trace.
    _hook_links: HookLinks,
    start: Instant,
    baseline: counter::Snapshot,
    /// Final counts of vanished interfaces, whose kernel counters were
    /// deleted ([`counter::forget`]).
    retired: counter::Snapshot,
    /// Every interface ever traced, by ifindex, with whether it vanished.
    traced: BTreeMap<u32, (Interface, bool)>,
    /// Every interface seen, for names.
    known: BTreeMap<u32, Interface>,
    dns: DnsCollector,
    conntrack: ConntrackCollector,
    floods: FloodCollector,
    drops: DropsCollector,
    /// Pod attribution and the node's datapath, refreshed as pods come and go.
    pods: PodIndex,
    datapath: DatapathInfo,
    /// New pods since the last refresh of `pods` (done at the next tick:
    /// one /proc walk for a burst of pods, not one per pod).
    pods_stale: bool,
    /// Pod attribution's current warnings (unreadable or malformed node
    /// files), each logged once when it appears, not at every refresh.
    warned: std::collections::BTreeSet<String>,
    tc_attach: TcAttachMode,
    tc_cleanup: StaleFilterCleanup,
    /// Follows a just-in-time bridge setup; `None` when its netlink
    /// subscription failed (logged; the report says it was not watched).
    bridge_setup: Option<bridge_setup::Watcher>,
}

impl Session {
    async fn start(
        ebpf: &mut Ebpf,
        kernel: &KernelInfo,
        tc: &mut TcAttachments,
        tc_cleanup: StaleFilterCleanup,
        all: Vec<Interface>,
        traced: &[Interface],
        opts: &WatchOptions,
    ) -> anyhow::Result<Self> {
        let names: Vec<&str> = traced.iter().map(|i| i.name.as_str()).collect();
        tc.attach_all(ebpf, &names)?;
        let names: Vec<&str> = tc.interfaces().collect();
        tracing::info!(
            "attached to {} interfaces: {}",
            names.len(),
            Shown(&names.join(" "))
        );
        // Which MAC sits behind each pod port, so flooded copies can be told
        // from frames addressed to the pod.
        let pod_macs = interfaces::peer_macs(traced).await?;
        flood::set_port_macs(ebpf, &pod_macs)?;
        // Before the collectors take their ring buffers out of `ebpf`: the
        // fentry/fexit programs are relocated against those maps.
        let mut drops = DropsCollector::new(kernel);
        let mut areas = vec!["conntrack", "flood"];
        match drops.available() {
            // Not attached without reasons: it would run for every freed skb
            // on the machine and learn nothing.
            Ok(()) => areas.push(drops::AREA),
            Err(why) => tracing::info!("drop reasons not traced: {why}"),
        }
        let (hooks, hook_links) = hooks::attach(ebpf, kernel, &areas);
        let (pods, datapath) = attribution(&all, &opts.sources).await;
        let traced_refs: Vec<&Interface> = traced.iter().collect();
        if let Err(err) = drops.rescope(ebpf, &traced_refs, &pods) {
            tracing::warn!("drop scope: {err}");
        }
        let mut warned = std::collections::BTreeSet::new();
        log_new_warnings(&mut warned, &pods);
        log_datapath(&datapath, &pods);
        let bridge_setup = bridge_setup::Watcher::start()
            .await
            .inspect_err(|err| tracing::warn!("bridge setup not watched: {err}"))
            .ok();
        let start_ns = monotonic_ns();
        let floods = FloodCollector::start(ebpf, start_ns, traced, &pods, &pod_macs).await?;
        let session = Self {
            kernel: kernel.clone(),
            hooks,
            _hook_links: hook_links,
            start: Instant::now(),
            baseline: counter::read(ebpf)?,
            retired: counter::Snapshot::new(),
            traced: traced
                .iter()
                .map(|i| (i.index, (i.clone(), false)))
                .collect(),
            known: all.into_iter().map(|i| (i.index, i)).collect(),
            dns: DnsCollector::new(ebpf, opts.dns)?,
            conntrack: ConntrackCollector::new(ebpf)?,
            floods,
            drops,
            pods,
            datapath,
            pods_stale: false,
            warned,
            tc_attach: tc.mode(),
            tc_cleanup,
            bridge_setup,
        };
        signal_ready(opts)?;
        Ok(session)
    }

    async fn run(
        &mut self,
        ebpf: &mut Ebpf,
        tc: &mut TcAttachments,
        mut links: Option<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>>,
        signals: Signals,
        opts: &WatchOptions,
    ) -> anyhow::Result<Report> {
        let Signals {
            int: mut sigint,
            term: mut sigterm,
            hup: mut sighup,
        } = signals;
        let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(opts.interval);
        ticker.tick().await;
        let mut stop = opts.stop.clone();
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sighup.recv() => {
                    tracing::info!("SIGHUP: re-reading interfaces and pod attribution; tracing continues");
                    self.pods_stale = true;
                    self.resync(ebpf, tc).await;
                }
                () = sleep_until(deadline) => break,
                result = self.dns.readable() => result?,
                result = self.conntrack.readable() => result?,
                result = self.floods.readable() => result?,
                Some(event) = next_link(&mut links) => {
                    let mut batch = vec![event];
                    if let Some(rx) = &mut links {
                        while batch.len() < LINK_BATCH_MAX
                            && let Ok(event) = rx.try_recv()
                        {
                            batch.push(event);
                        }
                    }
                    self.on_links(ebpf, tc, batch).await;
                }
                _ = ticker.tick() => self.tick(ebpf, tc, links.is_some(), opts).await?,
            }
        }
        self.dns.drain();
        self.dns.sweep(ebpf, monotonic_ns())?;
        self.conntrack.drain();
        self.report(ebpf, opts, true)
    }

    /// Every interval: catch up on links (when notifications are on),
    /// refresh pod attribution after new pods, sweep unanswered queries,
    /// close flood episodes, and hand a snapshot to the live view, the
    /// metrics server and the progress line.
    async fn tick(
        &mut self,
        ebpf: &mut Ebpf,
        tc: &mut TcAttachments,
        following_links: bool,
        opts: &WatchOptions,
    ) -> anyhow::Result<()> {
        if following_links {
            self.resync(ebpf, tc).await;
        }
        if std::mem::take(&mut self.pods_stale) {
            self.refresh_pods(ebpf, opts).await;
        }
        self.dns.sweep(ebpf, monotonic_ns())?;
        self.floods.tick(ebpf, monotonic_ns())?;
        if opts.snapshots.is_some() || opts.progress {
            let report = Arc::new(self.report(ebpf, opts, false)?);
            if opts.progress {
                tracing::info!("{}", report.progress_line());
            }
            if let Some(tx) = &opts.snapshots {
                let _ = tx.send(Some(report));
            }
        }
        Ok(())
    }

    /// Pod attribution anew (one /proc walk for a burst of new pods), and
    /// the kernel's flood and drop scopes pointed at the pods now there.
    async fn refresh_pods(&mut self, ebpf: &mut Ebpf, opts: &WatchOptions) {
        let all: Vec<Interface> = self.known.values().cloned().collect();
        (self.pods, self.datapath) = attribution(&all, &opts.sources).await;
        log_new_warnings(&mut self.warned, &self.pods);
        let traced: Vec<&Interface> = self
            .traced
            .values()
            .filter(|(_, gone)| !gone)
            .map(|(i, _)| i)
            .collect();
        // A failed update keeps the previous scope: events of the new pods'
        // namespaces are then not reported.
        if let Err(err) = self.floods.rescope(ebpf, &traced, &self.pods) {
            tracing::warn!("flood event scope: {err}");
        }
        if let Err(err) = self.drops.rescope(ebpf, &traced, &self.pods) {
            tracing::warn!("drop scope: {err}");
        }
    }

    /// Re-lists the links and replays what the notifications may have
    /// missed (a netlink socket drops notifications when they come faster
    /// than it is read): new veths are attached, deleted ones marked gone.
    async fn resync(&mut self, ebpf: &mut Ebpf, tc: &mut TcAttachments) {
        let Ok(now) = interfaces::list().await else {
            return;
        };
        let present: std::collections::BTreeSet<u32> = now.iter().map(|i| i.index).collect();
        let gone: Vec<(u32, String)> = self
            .traced
            .iter()
            .filter(|(index, (_, gone))| !gone && !present.contains(index))
            .map(|(index, (iface, _))| (*index, iface.name.clone()))
            .collect();
        let mut events: Vec<LinkEvent> = gone
            .into_iter()
            .map(|(index, name)| LinkEvent::Removed { index, name })
            .collect();
        for iface in now {
            let new = self.traced.get(&iface.index).is_none_or(|(_, gone)| *gone);
            if new && iface.kind == Kind::Veth {
                events.push(LinkEvent::Changed(iface));
            } else {
                self.follow_rename(tc, &iface);
                self.known.insert(iface.index, iface);
            }
        }
        self.on_links(ebpf, tc, events).await;
    }

    /// Follows pods: attaches to new veths (and to a bridge once it carries
    /// one), detaches from deleted ones, which stay in the report up to
    /// their last packet. A burst of events is one batch: the new
    /// interfaces are attached together (their TCX waits overlap).
    async fn on_links(&mut self, ebpf: &mut Ebpf, tc: &mut TcAttachments, events: Vec<LinkEvent>) {
        let mut candidates: Vec<Interface> = Vec::new();
        let mut vanished = BTreeSet::new();
        for event in events {
            match event {
                LinkEvent::Changed(iface) => {
                    self.follow_rename(tc, &iface);
                    let master = iface.master;
                    self.known.insert(iface.index, iface.clone());
                    if iface.kind == Kind::Veth {
                        candidates.push(iface);
                    }
                    if let Some(bridge) = master.and_then(|m| self.known.get(&m))
                        && bridge.kind == Kind::Bridge
                    {
                        candidates.push(bridge.clone());
                    }
                }
                LinkEvent::Removed { index, name } => {
                    tc.detach(ebpf, &name);
                    candidates.retain(|c| c.index != index);
                    if let Some((_, gone)) = self.traced.get_mut(&index)
                        && !*gone
                    {
                        *gone = true;
                        tracing::info!("pod interface {} vanished: detached", Shown(&name));
                        vanished.insert(index);
                    }
                }
            }
        }
        if !vanished.is_empty() {
            self.retire(ebpf, &vanished);
        }
        candidates.retain(|c| self.traced.get(&c.index).is_none_or(|(_, gone)| *gone));
        candidates.sort_by_key(|c| c.index);
        candidates.dedup_by_key(|c| c.index);
        self.attach_new(ebpf, tc, candidates).await;
    }

    async fn attach_new(&mut self, ebpf: &mut Ebpf, tc: &mut TcAttachments, new: Vec<Interface>) {
        if new.is_empty() {
            return;
        }
        let names: Vec<&str> = new.iter().map(|i| i.name.as_str()).collect();
        // Some may be gone again already (pod churn): not an error.
        if let Err(err) = tc.attach_all(ebpf, &names) {
            tracing::debug!("{err}");
        }
        let attached: Vec<Interface> = new
            .into_iter()
            .filter(|i| tc.is_attached(&i.name))
            .collect();
        if attached.is_empty() {
            return;
        }
        match interfaces::peer_macs(&attached).await {
            Ok(macs) => {
                if let Err(err) = flood::set_port_macs(ebpf, &macs) {
                    tracing::warn!("pod MACs: {err}");
                }
            }
            Err(err) => tracing::warn!("pod MACs: {err}"),
        }
        for iface in attached {
            tracing::info!("new pod interface {}: attached", Shown(&iface.name));
            self.traced.insert(iface.index, (iface, false));
        }
        self.pods_stale = true;
    }

    /// The report; `lists`: with the DNS lists one by one (the final
    /// report), or counts only (the per-second snapshots).
    fn report(&mut self, ebpf: &Ebpf, opts: &WatchOptions, lists: bool) -> anyhow::Result<Report> {
        let known = &self.known;
        let name_of = |ifindex: u32| {
            known
                .get(&ifindex)
                .map_or_else(|| format!("if{ifindex}"), |i| i.name.clone())
        };
        let area = |name: &str| {
            self.hooks
                .iter()
                .filter(|h| h.area == name)
                .cloned()
                .collect::<Vec<_>>()
        };
        let is_bridge = |ifindex: u32| known.get(&ifindex).is_some_and(|i| i.kind == Kind::Bridge);
        let traced_pod_ips: std::collections::HashSet<std::net::IpAddr> = self
            .traced
            .keys()
            .filter_map(|&ifindex| self.pods.pod_of_ifindex(ifindex))
            .flat_map(|pod| pod.ips.iter().copied())
            .collect();
        let traced_pod_ip = |ip: std::net::IpAddr| traced_pod_ips.contains(&ip);
        let mut dns = self.dns.report(
            ebpf,
            &crate::dns::collector::NodeView {
                name_of: &name_of,
                is_bridge: &is_bridge,
                traced_pod_ip: &traced_pod_ip,
            },
            lists,
        )?;
        let lists = opts
            .dns_lists
            .clone()
            .unwrap_or_else(|| ListSources::detect(None, Vec::new()));
        let dns_servers = server_list::assess(&dns.servers, &self.pods, &lists);
        let pods = &self.pods;
        let conntrack = self.conntrack.report(ebpf, area("conntrack"), &|ip| {
            pods.pod_of_ip(ip)
                .filter(|p| p.source != crate::pods::SOURCE_INTERFACE)
                .map(crate::pods::PodRef::label)
        })?;
        let flood = self
            .floods
            .report(ebpf, monotonic_ns(), area("flood"), &name_of)?;
        let view = drops::NodeView::new(&name_of, &self.pods);
        let drops = self.drops.report(ebpf, area(drops::AREA), &view)?;
        self.drops.annotate(ebpf, &mut dns.unanswered, &view)?;
        let mut losses: Vec<LossReport> = loss::read(ebpf)?
            .into_iter()
            .map(|(loss, count)| LossReport {
                reason: loss.name(),
                count,
            })
            .collect();
        losses.push(LossReport {
            reason: "dns_pending_evicted",
            count: dns.pending_evicted,
        });
        let interfaces = self.interface_rows(ebpf)?;
        let mut report = Report {
            schema_version: report::SCHEMA_VERSION,
            tracer_version: env!("CARGO_PKG_VERSION"),
            kernel: report::kernel_release(),
            netns: opts.netns.clone(),
            tc_attach: self.tc_attach,
            tc_stale_filters: self.tc_cleanup.clone(),
            datapath: self.datapath.mode,
            bridges: self.datapath.bridges.clone(),
            duration_seconds: self.start.elapsed().as_secs_f64(),
            findings: Vec::new(),
            interfaces,
            dns,
            dns_servers,
            conntrack,
            flood,
            bridge_setup: self
                .bridge_setup
                .as_ref()
                .map(|w| w.report(self.dns.loss_times()))
                .unwrap_or_default(),
            drops,
            kernel_offsets_missing: self.kernel.missing.clone(),
            losses,
        };
        let slow_ms = opts.probes.dns_slow.as_secs_f64() * 1000.0;
        report.findings = verdict::assess(&report.verdict_inputs(slow_ms));
        report
            .findings
            .push(server_list::finding(&report.dns_servers));
        Ok(report)
    }

    /// Every traced interface's counters since the start (the vanished
    /// ones' final counts included), with its pod.
    fn interface_rows(&self, ebpf: &Ebpf) -> anyhow::Result<Vec<report::InterfaceReport>> {
        let mut counts = counter::delta(&self.baseline, &counter::read(ebpf)?);
        counts.extend(self.retired.iter().map(|(k, v)| (*k, *v)));
        let traced: Vec<Interface> = self.traced.values().map(|(i, _)| i.clone()).collect();
        let all: Vec<Interface> = self.known.values().cloned().collect();
        let mut interfaces = report::interfaces(&traced, &all, &counts);
        for row in &mut interfaces {
            row.vanished = self.traced.get(&row.ifindex).is_some_and(|(_, gone)| *gone);
            if let Some(pod) = self.pods.pod_of_ifindex(row.ifindex) {
                row.pod_ips = pod.ips.iter().map(ToString::to_string).collect();
                if pod.source != crate::pods::SOURCE_INTERFACE {
                    row.pod = Some(pod.label());
                }
            }
        }
        Ok(interfaces)
    }
}

/// One line on what the node's datapath looks like at the start.
fn log_datapath(datapath: &DatapathInfo, pods: &PodIndex) {
    tracing::info!(
        "datapath: {:?}; bridges with pod ports: {}; routed pod veths: {}; pods attributed: {}",
        datapath.mode,
        datapath
            .bridges
            .iter()
            .map(|b| format!("{} ({} veth ports)", Shown(&b.name), b.veth_ports))
            .collect::<Vec<_>>()
            .join(", "),
        datapath.routed_veths.len(),
        pods.len()
    );
}

/// Tells whoever waits that tracing runs: the ready file (our PID), the
/// in-process channel.
fn signal_ready(opts: &WatchOptions) -> anyhow::Result<()> {
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    if let Some(ready) = &opts.ready {
        let _ = ready.try_send(());
    }
    Ok(())
}

/// Vanished interfaces kept in the report one by one (the most recent
/// ones): a node that runs pods for weeks must not grow without bound.
/// Older ones are folded into one row, [`OLDER_VANISHED`].
pub const VANISHED_KEPT: usize = 1024;

/// The report's row of the vanished interfaces past [`VANISHED_KEPT`]: an
/// ifindex no device has (the kernel numbers from 1), so every count stays
/// in the totals.
pub const OLDER_VANISHED: u32 = 0;
/// Its name in the report.
pub const OLDER_VANISHED_NAME: &str = "(older vanished interfaces)";

impl Session {
    /// Keeps the final counts of the interfaces that vanished in one batch
    /// of link events and frees their kernel entries (counters, DNS
    /// histograms, flood counters, drops) — one walk of each map for the
    /// whole batch, however many pods went at once; past [`VANISHED_KEPT`]
    /// vanished interfaces, the oldest (lowest ifindex: the kernel hands
    /// them out in order) are folded into [`OLDER_VANISHED`].
    fn retire(&mut self, ebpf: &mut Ebpf, gone: &BTreeSet<u32>) {
        if let Ok(now) = counter::read(ebpf) {
            for (key, count) in counter::delta(&self.baseline, &now) {
                if gone.contains(&key.0) {
                    self.retired.insert(key, count);
                }
            }
        }
        self.baseline.retain(|key, _| !gone.contains(&key.0));
        if let Err(err) = counter::forget(ebpf, gone) {
            tracing::debug!("forgetting the counters of ifindexes {gone:?}: {err}");
        }
        for area in self.areas() {
            if area.active()
                && let Err(err) = area.retire(ebpf, gone)
            {
                tracing::debug!("retiring ifindexes {gone:?} ({}): {err}", area.area());
            }
        }
        let gone: Vec<u32> = self
            .traced
            .iter()
            .filter(|(i, (_, gone))| *gone && **i != OLDER_VANISHED)
            .map(|(i, _)| *i)
            .collect();
        for &old in gone.iter().take(gone.len().saturating_sub(VANISHED_KEPT)) {
            self.fold_vanished(old);
        }
    }

    /// Folds vanished interface `old` into the [`OLDER_VANISHED`] row.
    fn fold_vanished(&mut self, old: u32) {
        let older = self.traced.entry(OLDER_VANISHED).or_insert_with(|| {
            let iface = Interface {
                index: OLDER_VANISHED,
                name: OLDER_VANISHED_NAME.to_owned(),
                kind: Kind::Veth,
                master: None,
                mac: None,
                peer: None,
            };
            (iface, true)
        });
        self.known.insert(OLDER_VANISHED, older.0.clone());
        self.traced.remove(&old);
        self.known.remove(&old);
        crate::rekey::fold(
            &mut self.retired,
            |k| k.0 == old,
            |k| (OLDER_VANISHED, k.1),
            |total, c| total.add(c),
        );
        for area in self.areas() {
            area.fold_interface(old, OLDER_VANISHED);
        }
    }

    /// The areas with per-interface state, for retiring vanished ones.
    fn areas(&mut self) -> [&mut dyn InterfaceState; 3] {
        [&mut self.dns, &mut self.floods, &mut self.drops]
    }

    /// An interface we trace got a new name (`ip link set … name …`): the
    /// attachment (by ifindex) stays; the report and our keys follow.
    fn follow_rename(&mut self, tc: &mut TcAttachments, iface: &Interface) {
        let Some((traced, false)) = self.traced.get_mut(&iface.index) else {
            return;
        };
        if traced.name == iface.name {
            return;
        }
        tracing::info!(
            "interface {} renamed to {}: still traced",
            Shown(&traced.name),
            Shown(&iface.name)
        );
        tc.rename(&traced.name, &iface.name);
        traced.name.clone_from(&iface.name);
        self.pods_stale = true;
    }
}

/// Logs each pod-attribution warning once, when it first appears (a broken
/// state file would otherwise repeat it at every pod change); a warning
/// that goes away and comes back is logged again.
fn log_new_warnings(warned: &mut std::collections::BTreeSet<String>, pods: &PodIndex) {
    let now: std::collections::BTreeSet<String> = pods.warnings().iter().cloned().collect();
    for warning in now.difference(warned) {
        tracing::warn!("pod attribution: {}", Shown(warning));
    }
    *warned = now;
}

/// Pod attribution and datapath detection for the current interfaces.
/// Failures degrade (logged), they never stop a trace.
async fn attribution(all: &[Interface], sources: &Sources) -> (PodIndex, DatapathInfo) {
    let routes = crate::pods::read_routes().await.unwrap_or_else(|err| {
        tracing::warn!("reading routes: {err}");
        Vec::new()
    });
    let datapath = crate::pods::detect_datapath(all, &routes);
    let index = PodIndex::build(all, &routes, sources).await;
    (index, datapath)
}

async fn stopped(stop: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

/// Link events handled as one batch at most.
const LINK_BATCH_MAX: usize = 256;

async fn next_link(
    links: &mut Option<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>>,
) -> Option<LinkEvent> {
    match links {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| {
            u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(ts.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
