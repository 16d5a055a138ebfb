//! The `dns-servers` scenario: the node's DNS server list changes after
//! the pods' resolv.conf was written (AKS FAQ, "Benefits of Transparent
//! mode": in bridge mode the CNI "can't keep updating the custom DNS server
//! lists … picking up only the first instance of the DNS server list").
//!
//! The node's list is a file under a lab-owned node root (tracer reads it
//! there with `--node-root`; the machine's own /etc/resolv.conf is never
//! touched). The two DNS backend pods stand for the VNET's custom servers:
//! OLD (the first backend) and NEW (the second).
//!
//! 1. Before: the node lists [OLD, NEW]. The lab's CNI writes the pods'
//!    resolv.conf at "pod start": in bridge mode only the first server
//!    ([OLD], the FAQ's truncation), in transparent mode both.
//! 2. The change: the node lists [NEW]; OLD stops answering the pods that
//!    use it directly (an iptables DROP in its namespace; the DNS service
//!    it also backs keeps working).
//! 3. Transparent mode's CNI rewrites the resolv.conf of the pod it manages
//!    to [NEW]; bridge mode's does nothing. **This models the CNI behaviour
//!    the FAQ claims; the datapath itself does not change which server a
//!    pod queries.** A second pod whose resolv.conf no CNI writes (a
//!    `dnsPolicy: None` pod naming OLD, the same on both datapaths) is the
//!    control: it fails the same way on both.
//! 4. Lookups by glibc (`getent ahosts`, `timeout:1 attempts:2`) in the
//!    managed pod, the unmanaged pod and a ClusterFirst pod (the DNS
//!    service), traced; tshark at OLD's own `eth0` counts the queries that
//!    reached it, the ground truth for tracer's sends to OLD.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    DNS_SERVICE, DatapathRun, LOOKUP_NAME, LabError, LabOptions,
    compare::Metric,
    dns,
    topology::{Datapath, Pod, Topology},
    traffic, verify,
};
use crate::{dns::server_list::ListSources, report::Report};

/// Resolver options of the pods (failing lookups end in ~2 s).
pub const OPTIONS: &str = "options timeout:1 attempts:2\n";

/// What the lab's CNI model did, printed with the figures.
pub const MODEL_NOTE: &str = "dns-servers: the transparent CNI rewriting a pod's resolv.conf when the node's list changes is the lab's model of the AKS FAQ's claim; the datapath does not change which server a pod queries (the unmanaged pod, [OLD] on both datapaths and never rewritten, fails on both)";

/// Figures of one datapath.
#[derive(Debug, Default, Serialize)]
pub struct DnsServersFigures {
    /// The pod whose resolv.conf the lab's CNI manages.
    pub managed: PodLookups,
    /// The control: [OLD] on both datapaths, never rewritten.
    pub unmanaged: PodLookups,
    /// A ClusterFirst pod, through the DNS service.
    pub cluster_first: PodLookups,
    /// The managed pod's list before the change (bridge: only the first).
    pub managed_list_at_start: Vec<Ipv4Addr>,
    /// Whether the lab's CNI rewrote the managed pod's list on the change.
    pub cni_rewrote: bool,
    /// Query packets the managed and unmanaged pods sent to OLD: tracer
    /// (client ports) and tshark (OLD's own eth0).
    pub sends_to_old_tracer: u64,
    pub sends_to_old_tshark: u64,
    /// Pods tracer flagged: stale (a server outside the node's list), and
    /// only the first of the node's servers.
    pub pods_stale: u64,
    pub pods_first_only: u64,
}

/// One pod's lookups.
#[derive(Debug, Default, Serialize)]
pub struct PodLookups {
    pub lookups: u64,
    pub failed: u64,
    /// Wall time of each lookup (ms), successful or not.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl PodLookups {
    fn from_times(times: &[(bool, f64)]) -> Self {
        let all: Vec<f64> = times.iter().map(|t| t.1).collect();
        Self {
            lookups: times.len() as u64,
            failed: times.iter().filter(|t| !t.0).count() as u64,
            p50_ms: traffic::percentile(&all, 0.5),
            p99_ms: traffic::percentile(&all, 0.99),
        }
    }
}

/// Writes a resolv.conf in place (same inode: the bind mounts
/// `ip netns exec` made of it show the new text), with [`OPTIONS`].
pub fn write_resolv(path: &Path, servers: &[Ipv4Addr], search: &str) -> Result<(), LabError> {
    let mut text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    text.push_str(search);
    text.push_str(OPTIONS);
    fs::write(path, text).map_err(LabError::Io)
}

fn pod_resolv(pod: &Pod) -> PathBuf {
    Path::new(crate::dns::server_list::IP_NETNS_ETC)
        .join(&pod.netns)
        .join("resolv.conf")
}

/// The lab's node root and the pods' original resolv.conf, restored on drop;
/// the DROP rules in OLD's namespace, removed on drop.
struct Staging {
    root: PathBuf,
    saved: Vec<(PathBuf, String)>,
    drop_rules: Vec<(String, Vec<String>)>,
}

impl Staging {
    fn new(datapath: Datapath, pods: &[&Pod]) -> Result<Self, LabError> {
        let root = std::env::temp_dir().join(format!(
            "tracer-lab-node-root-{}-{}",
            std::process::id(),
            datapath.name()
        ));
        fs::create_dir_all(root.join("etc"))?;
        let mut saved = Vec::new();
        for pod in pods {
            let path = pod_resolv(pod);
            saved.push((path.clone(), fs::read_to_string(&path)?));
        }
        Ok(Self {
            root,
            saved,
            drop_rules: Vec::new(),
        })
    }

    fn node_list(&self, servers: &[Ipv4Addr]) -> Result<(), LabError> {
        write_resolv(&self.root.join("etc/resolv.conf"), servers, "")
    }

    /// OLD stops answering `client` (its queries are dropped on arrival).
    fn stop_answering(&mut self, server: &Pod, client: Ipv4Addr) -> Result<(), LabError> {
        let rule: Vec<String> = [
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "53",
            "-s",
            &client.to_string(),
            "-j",
            "DROP",
        ]
        .map(str::to_owned)
        .to_vec();
        iptables(&server.netns, "-I", &rule)?;
        self.drop_rules.push((server.netns.clone(), rule));
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for (netns, rule) in &self.drop_rules {
            let _ = iptables(netns, "-D", rule);
        }
        for (path, text) in &self.saved {
            let _ = fs::write(path, text);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn iptables(netns: &str, op: &str, rule: &[String]) -> Result<(), LabError> {
    let ok = Command::new("ip")
        .args(["netns", "exec", netns, "iptables", op])
        .args(rule)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if ok {
        Ok(())
    } else {
        Err(LabError::Verify(format!(
            "iptables {op} {} in {netns}",
            rule.join(" ")
        )))
    }
}

/// Runs the scenario on `topo` (backends `pods[0]` = OLD, `pods[1]` = NEW;
/// `clients`: at least three workload pods).
pub fn run(
    topo: &Topology,
    clients: &[Pod],
    opts: &LabOptions,
    run: &mut DatapathRun,
) -> Result<(), LabError> {
    let (old, new) = (&topo.pods[0], &topo.pods[1]);
    let (managed, unmanaged, cluster) = (&clients[0], &clients[1], &clients[2]);
    let transparent = topo.datapath == Datapath::Transparent;
    let mut staging = Staging::new(topo.datapath, &[managed, unmanaged, cluster])?;

    // Before the change.
    staging.node_list(&[old.ip, new.ip])?;
    let at_start = if transparent {
        vec![old.ip, new.ip]
    } else {
        vec![old.ip]
    };
    write_resolv(&pod_resolv(managed), &at_start, "")?;
    // The control: the same list on both datapaths, never rewritten.
    write_resolv(&pod_resolv(unmanaged), &[old.ip], "")?;
    let search = "search default.svc.cluster.local svc.cluster.local cluster.local\n";
    write_resolv(&pod_resolv(cluster), &[DNS_SERVICE], search)?;

    // The change.
    staging.node_list(&[new.ip])?;
    staging.stop_answering(old, managed.ip)?;
    staging.stop_answering(old, unmanaged.ip)?;
    if transparent {
        write_resolv(&pod_resolv(managed), &[new.ip], "")?;
    }

    let filter = format!(
        "udp dst port 53 and dst host {} and (src host {} or src host {})",
        old.ip, managed.ip, unmanaged.ip
    );
    let capture = verify::Capture::start(&old.netns, "eth0", &filter)?;
    let lists = ListSources {
        node_root: staging.root.clone(),
        proc_root: crate::pods::PROC_ROOT.into(),
        cluster_dns: vec![IpAddr::V4(DNS_SERVICE)],
    };
    let d = opts.duration;
    let (report, times) = super::trace_with(&topo.node, Some(lists), || {
        let workers: Vec<_> = [managed, unmanaged, cluster]
            .map(|p| {
                let ns = p.netns.clone();
                std::thread::spawn(move || lookups(&ns, d))
            })
            .into_iter()
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect::<Vec<_>>()
    })?;
    let (wire_to_old, _) = capture.stop()?;
    run.dns_servers = Some(figures(
        &report,
        &times,
        [managed, unmanaged, cluster],
        old.ip,
        wire_to_old,
        at_start,
        transparent,
    ));
    super::keep_findings(
        run,
        "dns-servers",
        &report,
        crate::verdict::Symptom::DnsServers,
    );
    Ok(())
}

/// Lookups one after the other for `d`: (succeeded, wall ms).
fn lookups(netns: &str, d: Duration) -> Vec<(bool, f64)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < d {
        let t = Instant::now();
        let ok = dns::getent(netns, LOOKUP_NAME).is_some();
        out.push((ok, t.elapsed().as_secs_f64() * 1000.0));
    }
    out
}

fn figures(
    report: &Report,
    times: &[Vec<(bool, f64)>],
    scenario_pods: [&Pod; 3],

    old: Ipv4Addr,
    wire_to_old: u64,
    managed_list_at_start: Vec<Ipv4Addr>,
    cni_rewrote: bool,
) -> DnsServersFigures {
    // The scenario's three pods (the backends' dnsmasq processes see the
    // machine's own resolv.conf, which is no part of the lab's node).
    let mine: Vec<_> = report
        .dns_servers
        .pods
        .iter()
        .filter(|p| scenario_pods.iter().any(|c| c.host_if == p.interface))
        .collect();
    let sends_to_old_tracer = mine
        .iter()
        .filter(|p| scenario_pods[..2].iter().any(|c| c.host_if == p.interface))
        .flat_map(|p| &p.servers)
        .filter(|s| s.server == IpAddr::V4(old))
        .map(|s| s.sends)
        .sum();
    let of = |i: usize| PodLookups::from_times(times.get(i).map_or(&[][..], Vec::as_slice));
    DnsServersFigures {
        managed: of(0),
        unmanaged: of(1),
        cluster_first: of(2),
        managed_list_at_start,
        cni_rewrote,
        sends_to_old_tracer,
        sends_to_old_tshark: wire_to_old,
        pods_stale: mine.iter().filter(|p| p.stale).count() as u64,
        pods_first_only: mine.iter().filter(|p| p.first_only).count() as u64,
    }
}

/// Picks one pod's lookups from a datapath's figures.
type PodOf = fn(&DnsServersFigures) -> &PodLookups;
type Read = fn(&DnsServersFigures) -> u64;

/// A run's figures of this scenario, if it ran.
fn of_run(r: &DatapathRun) -> Option<&DnsServersFigures> {
    r.dns_servers.as_ref()
}

/// The comparison rows' symptom.
const SYMPTOM: &str = "dns-servers";

/// The scenario's compared figures: each pod's failed lookups (the
/// symptom, per lookup) and lookup time, and what tracer saw of the stale
/// server.
pub fn metrics() -> Vec<Metric> {
    use super::compare::Kind::{Count, Measure, Volume};
    let pods: [(&'static str, &'static str, &'static str, PodOf); 3] = [
        (
            "managed pod lookups",
            "managed pod lookups failed",
            "managed pod p50 ms",
            |f| &f.managed,
        ),
        (
            "unmanaged pod lookups",
            "unmanaged pod lookups failed",
            "unmanaged pod p50 ms",
            |f| &f.unmanaged,
        ),
        (
            "ClusterFirst pod lookups",
            "ClusterFirst pod lookups failed",
            "ClusterFirst pod p50 ms",
            |f| &f.cluster_first,
        ),
    ];
    let mut out = Vec::new();
    for (volume, failed, p50, of) in pods {
        let lookups = move |r: &DatapathRun| Some(of(of_run(r)?).lookups as f64);
        out.push(Metric::new(SYMPTOM, volume, Volume, lookups));
        out.push(
            Metric::new(SYMPTOM, failed, Count, move |r| {
                Some(of(of_run(r)?).failed as f64)
            })
            .judged()
            .per("lookup", lookups),
        );
        out.push(Metric::new(SYMPTOM, p50, Measure, move |r| {
            Some(of(of_run(r)?).p50_ms)
        }));
    }
    let counts: [(&'static str, Read); 4] = [
        ("sends to OLD (tracer)", |f| f.sends_to_old_tracer),
        ("sends to OLD (tshark)", |f| f.sends_to_old_tshark),
        ("pods flagged stale", |f| f.pods_stale),
        ("pods flagged first only", |f| f.pods_first_only),
    ];
    out.extend(counts.map(|(figure, get)| {
        Metric::new(
            SYMPTOM,
            figure,
            Count,
            move |r| Some(get(of_run(r)?) as f64),
        )
    }));
    out
}
