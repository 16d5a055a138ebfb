//! The DNS servers pods query, against the servers they should query.
//!
//! Azure CNI in bridge mode wrote the VNET/NIC's custom DNS servers once
//! and kept only the first (AKS FAQ, "Benefits of Transparent mode";
//! azure-container-networking #713): pods kept a stale or truncated list
//! after the list changed. Whatever the CNI, a pod's `/etc/resolv.conf` is
//! written when the pod starts, so a pod started before a change keeps the
//! old servers until it restarts.
//!
//! Three lists are compared, all read when the report is built:
//! - the node's **current** upstream list: `<root>/etc/resolv.conf` and,
//!   when systemd-resolved runs, its upstream list
//!   `<root>/run/systemd/resolve/resolv.conf` (kubelet hands that one to
//!   `dnsPolicy: Default` pods; loopback stubs such as 127.0.0.53 are not
//!   upstreams). `<root>` is `/`, or `/host` in a debug pod that mounts the
//!   node's root there;
//! - the **cluster DNS** addresses (kube-dns service, NodeLocal DNSCache):
//!   `--cluster-dns`, kubelet's `clusterDNS` in
//!   `<root>/var/lib/kubelet/config.yaml`, and the nameservers of pods whose
//!   search list names `svc.` domains (kubelet writes that for
//!   `dnsPolicy: ClusterFirst`). A pod querying these is not stale: CoreDNS
//!   forwards to the node's list, and CoreDNS pods are checked as pods;
//! - each pod's own `/etc/resolv.conf`, reached through a process of its
//!   network namespace (`/proc/<pid>/root/etc/resolv.conf`), or for a
//!   namespace pinned by `ip netns` with no process, `/etc/netns/<name>/`.
//!
//! The traffic side comes from [`super::server_use`]: per pod port and
//! server, query packets sent and answered.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{role::Side, server_use::ServerUse};
use crate::{
    escape,
    pods::{PodIndex, PodRef},
    verdict::{Answer, Finding, Severity, Symptom},
};

/// Largest resolv.conf or kubelet config read (a pod chooses its file).
const READ_CAP: u64 = 64 * 1024;
/// Pods listed in the finding's evidence; the JSON lists all.
const EVIDENCE_PODS: usize = 8;

/// The node's resolver file.
pub const RESOLV_CONF: &str = "etc/resolv.conf";
/// systemd-resolved's list of upstream servers (not its 127.0.0.53 stub).
pub const RESOLVED_UPSTREAMS: &str = "run/systemd/resolve/resolv.conf";
/// kubelet's configuration file (`clusterDNS`).
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// Where `ip netns exec <name>` takes a namespace's resolver files from.
pub const IP_NETNS_ETC: &str = "/etc/netns";
/// Where a debug pod (`kubectl debug node/…`) mounts the node's root.
pub const DEBUG_POD_HOST_ROOT: &str = "/host";

/// Where the lists are read; [`ListSources::detect`] is the real node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSources {
    /// The node's root: `/`, or `/host` in a debug pod.
    pub node_root: PathBuf,
    /// `/proc` of the node's PID namespace.
    pub proc_root: PathBuf,
    /// `--cluster-dns` addresses.
    pub cluster_dns: Vec<IpAddr>,
}

impl ListSources {
    /// `/host` when it holds a node's root with a resolv.conf (a debug pod),
    /// else `/`; `node_root` overrides.
    pub fn detect(node_root: Option<PathBuf>, cluster_dns: Vec<IpAddr>) -> Self {
        let host = Path::new(DEBUG_POD_HOST_ROOT);
        let node_root = node_root.unwrap_or_else(|| {
            if host.join(RESOLV_CONF).is_file() && host.join("proc").is_dir() {
                host.to_path_buf()
            } else {
                PathBuf::from("/")
            }
        });
        Self {
            node_root,
            proc_root: crate::pods::PROC_ROOT.into(),
            cluster_dns,
        }
    }
}

/// The parts of a resolv.conf the comparison needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    /// Search domains, escaped (the pod wrote them).
    pub search: Vec<String>,
    /// `nameserver` lines that are no address, escaped.
    pub invalid: Vec<String>,
}

/// Parses resolv.conf as glibc does: `nameserver <ip>` lines (glibc keeps
/// the first three, MAXNS), the last `search`/`domain` line wins; `#`
/// and `;` start comments.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut out = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let word = words.next().unwrap_or("");
                // A scoped IPv6 address (fe80::1%eth0) names its interface.
                match word.split('%').next().unwrap_or("").parse::<IpAddr>() {
                    Ok(ip) => out.nameservers.push(ip),
                    Err(_) => out.invalid.push(escape::terminal(word)),
                }
            }
            Some("search" | "domain") => {
                out.search = words.map(escape::terminal).collect();
            }
            _ => {}
        }
    }
    out
}

/// One file of the node's list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeFile {
    pub path: String,
    pub nameservers: Vec<IpAddr>,
}

/// Reads a small file, `None` when it is absent or unreadable.
fn read_small(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(READ_CAP)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The node's current upstream servers: the non-loopback nameservers of
/// its resolv.conf, then of systemd-resolved's upstream list, in order.
pub fn node_list(root: &Path) -> (Vec<NodeFile>, Vec<IpAddr>) {
    let mut files = Vec::new();
    let mut servers: Vec<IpAddr> = Vec::new();
    for rel in [RESOLV_CONF, RESOLVED_UPSTREAMS] {
        let path = root.join(rel);
        let Some(text) = read_small(&path) else {
            continue;
        };
        let conf = parse_resolv_conf(&text);
        for ip in &conf.nameservers {
            if !ip.is_loopback() && !servers.contains(ip) {
                servers.push(*ip);
            }
        }
        files.push(NodeFile {
            path: escape::terminal(&path.to_string_lossy()),
            nameservers: conf.nameservers,
        });
    }
    (files, servers)
}

/// kubelet's `clusterDNS:` addresses (a YAML list, block or flow style).
pub fn kubelet_cluster_dns(text: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut in_list = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("clusterDNS:") {
            in_list = true;
            out.extend(
                rest.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
                    .split(',')
                    .filter_map(|w| w.trim().trim_matches(['"', '\'']).parse::<IpAddr>().ok()),
            );
            continue;
        }
        if in_list {
            match trimmed.strip_prefix('-') {
                Some(item) => {
                    out.extend(item.trim().trim_matches(['"', '\'']).parse::<IpAddr>().ok())
                }
                None if trimmed.is_empty() => {}
                None => in_list = false,
            }
        }
    }
    out
}

/// A pod's resolv.conf and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodConfig {
    pub source: String,
    pub conf: ResolvConf,
}

/// The resolv.conf a pod's processes see: the first process (by PID) whose
/// root has one with a nameserver (a pod's pause container may have none),
/// else the `ip netns` file of its named namespace.
pub fn pod_config(pod: &PodRef, proc_root: &Path) -> Option<PodConfig> {
    let netns = pod.netns.as_ref()?;
    // The PIDs were listed when the pods were attributed: one reused since
    // by a process of another namespace must not lend its file.
    let from_pids = netns
        .pids
        .iter()
        .map(|pid| proc_root.join(pid.to_string()))
        .filter(|dir| fs::metadata(dir.join("ns/net")).is_ok_and(|m| m.ino() == netns.inode))
        .map(|dir| dir.join("root").join(RESOLV_CONF));
    let from_name = netns
        .name
        .iter()
        .map(|name| Path::new(IP_NETNS_ETC).join(name).join("resolv.conf"));
    from_pids.chain(from_name).find_map(|path| {
        let conf = parse_resolv_conf(&read_small(&path)?);
        (!conf.nameservers.is_empty()).then(|| PodConfig {
            source: escape::terminal(&path.to_string_lossy()),
            conf,
        })
    })
}

/// What a server is to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerClass {
    /// The cluster's DNS service (CoreDNS behind it forwards to the node's
    /// list), or a node-local cache.
    ClusterDns,
    /// In the node's current upstream list.
    NodeList,
    /// A loopback address: a resolver inside the pod's own namespace (a
    /// cache sidecar), never the node's.
    PodLocal,
    /// Neither: a server the node no longer (or never) used.
    NotInNodeList,
}

impl ServerClass {
    /// The JSON spelling (also the table's and the metrics label's).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ClusterDns => "cluster_dns",
            Self::NodeList => "node_list",
            Self::PodLocal => "pod_local",
            Self::NotInNodeList => "not_in_node_list",
        }
    }
}

/// One server of one pod: configured, queried, or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodServer {
    pub server: IpAddr,
    pub class: ServerClass,
    /// Listed in the pod's resolv.conf.
    pub configured: bool,
    /// Query packets the pod sent to it (0: configured, not queried).
    pub sends: u64,
    pub answered: u64,
    pub unanswered_sends: u64,
}

/// One pod's servers and the verdict on them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodServers {
    /// `namespace/name`, or the interface name; escaped.
    pub pod: String,
    pub interface: String,
    pub ifindex: u32,
    /// Where the pod's resolv.conf was read; `None` when no process or
    /// named namespace gave one.
    pub config_source: Option<String>,
    pub configured: Vec<IpAddr>,
    pub servers: Vec<PodServer>,
    /// It queries or lists a server that is neither cluster DNS nor in the
    /// node's current list.
    pub stale: bool,
    /// Its list outside cluster DNS is only the first of the node's several
    /// servers (the truncation the FAQ describes).
    pub first_only: bool,
}

/// The `dns_servers` section of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DnsServersReport {
    /// The node's root the files were read under.
    pub node_root: String,
    pub node_files: Vec<NodeFile>,
    /// The node's current upstreams (loopback stubs left out).
    pub node_servers: Vec<IpAddr>,
    /// Cluster DNS addresses and where each list came from.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_dns_sources: Vec<String>,
    /// Pods that queried or configured a DNS server, stale ones first.
    pub pods: Vec<PodServers>,
}

/// Reads the lists and compares them with the traffic (`uses`: the
/// client-side rows of the DNS report).
pub fn assess(uses: &[ServerUse], pods: &PodIndex, src: &ListSources) -> DnsServersReport {
    let (node_files, node_servers) = node_list(&src.node_root);
    let configs: Vec<(u32, &PodRef, Option<PodConfig>)> = pods
        .by_ifindex()
        .into_iter()
        .map(|(ifindex, pod)| (ifindex, pod, pod_config(pod, &src.proc_root)))
        .collect();
    let (cluster_dns, cluster_dns_sources) = cluster_dns(src, &configs);
    let class = |ip: IpAddr| {
        if cluster_dns.contains(&ip) {
            ServerClass::ClusterDns
        } else if node_servers.contains(&ip) {
            ServerClass::NodeList
        } else if ip.is_loopback() {
            ServerClass::PodLocal
        } else {
            ServerClass::NotInNodeList
        }
    };
    let mut out: Vec<PodServers> = configs
        .iter()
        .filter_map(|(ifindex, pod, config)| {
            let mine: Vec<&ServerUse> = uses
                .iter()
                .filter(|u| u.ifindex == *ifindex && u.side == Side::Client)
                .collect();
            pod_servers(*ifindex, pod, config.as_ref(), &mine, &class, &node_servers)
        })
        .collect();
    out.sort_by(|a, b| (b.stale, b.first_only, &a.pod).cmp(&(a.stale, a.first_only, &b.pod)));
    DnsServersReport {
        node_root: escape::terminal(&src.node_root.to_string_lossy()),
        node_files,
        node_servers,
        cluster_dns,
        cluster_dns_sources,
        pods: out,
    }
}

/// `--cluster-dns`, kubelet's `clusterDNS`, and the nameservers of
/// ClusterFirst pods (a `svc.` search domain).
fn cluster_dns(
    src: &ListSources,
    configs: &[(u32, &PodRef, Option<PodConfig>)],
) -> (Vec<IpAddr>, Vec<String>) {
    let mut ips: Vec<IpAddr> = src.cluster_dns.clone();
    let mut sources = Vec::new();
    if !src.cluster_dns.is_empty() {
        sources.push("--cluster-dns".to_owned());
    }
    let kubelet = src.node_root.join(KUBELET_CONFIG);
    if let Some(text) = read_small(&kubelet) {
        let found = kubelet_cluster_dns(&text);
        if !found.is_empty() {
            sources.push(escape::terminal(&kubelet.to_string_lossy()));
            ips.extend(found);
        }
    }
    let inferred: BTreeSet<IpAddr> = configs
        .iter()
        .filter_map(|(_, _, c)| c.as_ref())
        .filter(|c| c.conf.search.iter().any(|d| d.contains("svc.")))
        .flat_map(|c| c.conf.nameservers.iter().copied())
        .collect();
    if !inferred.is_empty() {
        sources.push("pods with a svc. search domain (dnsPolicy ClusterFirst)".to_owned());
        ips.extend(inferred);
    }
    let mut seen = BTreeSet::new();
    ips.retain(|ip| seen.insert(*ip));
    (ips, sources)
}

/// One pod's row; `None` when it neither queried nor configured a server.
fn pod_servers(
    ifindex: u32,
    pod: &PodRef,
    config: Option<&PodConfig>,
    uses: &[&ServerUse],
    class: &dyn Fn(IpAddr) -> ServerClass,
    node_servers: &[IpAddr],
) -> Option<PodServers> {
    let configured: Vec<IpAddr> = config
        .map(|c| c.conf.nameservers.clone())
        .unwrap_or_default();
    let mut ips: Vec<IpAddr> = configured.clone();
    for u in uses {
        if !ips.contains(&u.server) {
            ips.push(u.server);
        }
    }
    if ips.is_empty() {
        return None;
    }
    let servers: Vec<PodServer> = ips
        .iter()
        .map(|&ip| {
            let used = uses.iter().filter(|u| u.server == ip);
            PodServer {
                server: ip,
                class: class(ip),
                configured: configured.contains(&ip),
                sends: used.clone().map(|u| u.sends).sum(),
                answered: used.clone().map(|u| u.answered).sum(),
                unanswered_sends: used.map(|u| u.unanswered_sends).sum(),
            }
        })
        .collect();
    // Without a node list nothing can be called stale.
    let stale = !node_servers.is_empty()
        && servers
            .iter()
            .any(|s| s.class == ServerClass::NotInNodeList && (s.configured || s.sends > 0));
    let upstreams: Vec<IpAddr> = configured
        .iter()
        .copied()
        .filter(|&ip| !matches!(class(ip), ServerClass::ClusterDns | ServerClass::PodLocal))
        .collect();
    let first_only = node_servers.len() > 1 && upstreams == node_servers[..1];
    Some(PodServers {
        pod: escape::terminal(&pod.label()),
        interface: escape::terminal(pod.host_if.as_deref().unwrap_or("")),
        ifindex,
        config_source: config.map(|c| c.source.clone()),
        configured,
        servers,
        stale,
        first_only,
    })
}

/// The `dns_servers` finding.
pub fn finding(r: &DnsServersReport) -> Finding {
    let stale: Vec<&PodServers> = r.pods.iter().filter(|p| p.stale).collect();
    let first_only = r.pods.iter().filter(|p| p.first_only).count();
    let detected = !stale.is_empty() || first_only > 0;
    let failing: u64 = stale
        .iter()
        .flat_map(|p| &p.servers)
        .filter(|s| s.class == ServerClass::NotInNodeList)
        .map(|s| s.unanswered_sends)
        .sum();
    let mut evidence = vec![
        ev("node_servers", list(&r.node_servers)),
        ev("cluster_dns", list(&r.cluster_dns)),
        ev("pods_checked", r.pods.len()),
        ev("pods_stale", stale.len()),
        ev("pods_first_server_only", first_only),
    ];
    for p in r
        .pods
        .iter()
        .filter(|p| p.stale || p.first_only)
        .take(EVIDENCE_PODS)
    {
        let servers: Vec<String> = p
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{} {}{}: {} sent, {} answered",
                    s.server,
                    s.class.name(),
                    if s.configured { ", configured" } else { "" },
                    s.sends,
                    s.answered
                )
            })
            .collect();
        evidence.push(ev(&format!("pod {}", p.pod), servers.join("; ")));
    }
    let summary = if r.node_servers.is_empty() {
        format!(
            "node's DNS server list unknown (no resolv.conf under {}): no pod checked",
            r.node_root
        )
    } else if detected {
        format!(
            "{} of {} pods use or list a DNS server outside the node's list {} ({} of their sends unanswered); {} list only its first server",
            stale.len(),
            r.pods.len(),
            list(&r.node_servers),
            failing,
            first_only
        )
    } else {
        format!(
            "{} pods query the cluster DNS or the node's list {}",
            r.pods.len(),
            list(&r.node_servers)
        )
    };
    Finding {
        symptom: Symptom::DnsServers,
        detected,
        severity: match (detected, failing > 0) {
            (false, _) => Severity::Ok,
            (true, true) => Severity::Warning,
            (true, false) => Severity::Info,
        },
        summary,
        evidence,
        bridge_related: if detected { Answer::Partly } else { Answer::No },
        transparent_mode_resolves: if detected { Answer::Partly } else { Answer::No },
        why: "a pod's resolv.conf is written when it starts; the AKS FAQ says Azure CNI in bridge mode could not keep custom DNS lists updated and kept only the first server, and that transparent mode fixes this because the CNI no longer touches eth0. The datapath does not change which server a pod queries: pods started before a list change keep their list in either mode until restarted.".to_owned(),
        remedies: if detected {
            vec![
                "restart the listed pods (or roll their deployments) so kubelet writes the node's current list".to_owned(),
                "prefer dnsPolicy ClusterFirst: CoreDNS reads the node's list (restart CoreDNS after a change; its forward plugin does not re-read resolv.conf)".to_owned(),
                "on Azure CNI bridge mode with custom VNET DNS servers: transparent mode, per the AKS FAQ".to_owned(),
            ]
        } else {
            Vec::new()
        },
    }
}

fn ev(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

fn list(ips: &[IpAddr]) -> String {
    let items: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolv_conf_is_parsed_as_glibc_reads_it() {
        let c = parse_resolv_conf(
            "# generated\nnameserver 10.0.0.10\nnameserver fe80::1%eth0 ; scoped\nnameserver bogus\x1b]2;x\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
        );
        assert_eq!(c.nameservers, vec![ip("10.0.0.10"), ip("fe80::1")]);
        assert_eq!(c.invalid, vec!["bogus\\027]2"]);
        assert_eq!(c.search.len(), 2);
    }

    #[test]
    fn kubelet_cluster_dns_in_both_yaml_styles() {
        let block = "kind: KubeletConfiguration\nclusterDNS:\n  - 10.0.0.10\n  - \"169.254.20.10\"\nclusterDomain: cluster.local\n";
        assert_eq!(
            kubelet_cluster_dns(block),
            vec![ip("10.0.0.10"), ip("169.254.20.10")]
        );
        assert_eq!(
            kubelet_cluster_dns("clusterDNS: [10.0.0.10, fd00::a]\n"),
            vec![ip("10.0.0.10"), ip("fd00::a")]
        );
    }

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: Some("default".into()),
            name: name.into(),
            uid: None,
            ips: Vec::new(),
            host_if: Some(format!("veth-{name}")),
            source: crate::pods::SOURCE_INTERFACE,
            netns: None,
        }
    }

    fn config(servers: &[&str]) -> PodConfig {
        PodConfig {
            source: "test".into(),
            conf: ResolvConf {
                nameservers: servers.iter().map(|s| ip(s)).collect(),
                ..ResolvConf::default()
            },
        }
    }

    fn used(server: &str, sends: u64, answered: u64) -> ServerUse {
        ServerUse {
            interface: "veth".into(),
            ifindex: 1,
            side: Side::Client,
            server: ip(server),
            sends,
            answered,
            unanswered_sends: sends - answered,
            pending: 0,
        }
    }

    fn row(config_servers: &[&str], uses: &[ServerUse]) -> PodServers {
        let node = [ip("10.1.0.2"), ip("10.1.0.3")];
        let cluster = [ip("10.0.0.10")];
        let class = |s: IpAddr| {
            if cluster.contains(&s) {
                ServerClass::ClusterDns
            } else if node.contains(&s) {
                ServerClass::NodeList
            } else {
                ServerClass::NotInNodeList
            }
        };
        let uses: Vec<&ServerUse> = uses.iter().collect();
        let c = config(config_servers);
        pod_servers(1, &pod("p"), Some(&c), &uses, &class, &node).unwrap()
    }

    #[test]
    fn cluster_dns_and_the_node_list_are_not_stale() {
        let r = row(&["10.0.0.10"], &[used("10.0.0.10", 4, 4)]);
        assert!(!r.stale && !r.first_only);
        let r = row(&["10.1.0.2", "10.1.0.3"], &[used("10.1.0.2", 2, 2)]);
        assert!(!r.stale && !r.first_only);
    }

    #[test]
    fn an_old_server_is_stale_configured_or_queried() {
        let r = row(&["10.1.0.9"], &[]);
        assert!(r.stale);
        assert_eq!(r.servers[0].sends, 0);
        let r = row(&["10.0.0.10"], &[used("10.1.0.9", 3, 0)]);
        assert!(r.stale);
        assert_eq!(r.servers[1].class, ServerClass::NotInNodeList);
        assert_eq!(r.servers[1].unanswered_sends, 3);
    }

    #[test]
    fn only_the_first_of_several_is_flagged() {
        let r = row(&["10.1.0.2"], &[used("10.1.0.2", 1, 1)]);
        assert!(r.first_only && !r.stale);
        // A ClusterFirst pod lists only the cluster DNS: not truncated.
        assert!(!row(&["10.0.0.10"], &[]).first_only);
    }

    #[test]
    fn finding_names_the_pod_and_the_server() {
        let report = DnsServersReport {
            node_servers: vec![ip("10.1.0.2"), ip("10.1.0.3")],
            pods: vec![row(&["10.1.0.9"], &[used("10.1.0.9", 3, 0)])],
            ..DnsServersReport::default()
        };
        let f = finding(&report);
        assert!(f.detected);
        assert_eq!(f.severity, Severity::Warning);
        let pod = f
            .evidence
            .iter()
            .find(|(k, _)| k == "pod default/p")
            .unwrap();
        assert!(
            pod.1
                .contains("10.1.0.9 not_in_node_list, configured: 3 sent, 0 answered")
        );
        let quiet = DnsServersReport {
            node_servers: vec![ip("10.1.0.2")],
            pods: vec![row(&["10.0.0.10"], &[used("10.0.0.10", 2, 2)])],
            ..DnsServersReport::default()
        };
        assert!(!finding(&quiet).detected);
    }
}
