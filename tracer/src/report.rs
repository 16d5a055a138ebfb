//! The report `tracer watch` prints at the end: per interface counters and
//! every loss, as a table or as versioned JSON.

pub mod rank;

use std::fmt::Write as _;

use serde::Serialize;
use tracer_common::{
    counter::{Direction, IfaceCounters},
    dns::DnsStat,
};

use crate::{
    counter::Snapshot,
    dns::{exchanges::LossLocation, question},
    escape::Shown,
    flood::cause::CauseKind,
    interfaces::Interface,
    verdict::{DnsDropFigure, Inputs},
};

/// Bumped on any incompatible change of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tracer_version: &'static str,
    pub kernel: String,
    /// `--netns` if given.
    pub netns: Option<String>,
    /// How the TC programs were attached: `tcx` (v6.6+) or `legacy`
    /// (clsact + cls_bpf filters).
    pub tc_attach: crate::attach::TcAttachMode,
    /// Legacy TC filters a dead tracer had left, removed at start.
    pub tc_stale_filters: crate::attach::StaleFilterCleanup,
    /// The node's datapath, as found from its interfaces and routes.
    pub datapath: crate::verdict::NodeDatapath,
    /// Bridges carrying pod veths.
    pub bridges: Vec<crate::pods::BridgeInfo>,
    pub duration_seconds: f64,
    /// Per symptom: detected or not, evidence, and whether transparent mode
    /// would resolve it.
    pub findings: Vec<crate::verdict::Finding>,
    pub interfaces: Vec<InterfaceReport>,
    /// DNS latency, unanswered queries, retries, parallel pairs.
    pub dns: crate::dns::collector::DnsReport,
    /// The DNS servers each pod queries and lists, against the node's
    /// current list and the cluster DNS.
    pub dns_servers: crate::dns::server_list::DnsServersReport,
    /// conntrack insert drops and clashes.
    pub conntrack: crate::conntrack::ConntrackReport,
    /// Unknown-unicast floods, their victims and causes.
    pub flood: crate::flood::collector::FloodReport,
    /// Just-in-time bridge setup: bridges created, the uplink enslaved, the
    /// windows without the node's address or default route, and the DNS
    /// queries lost or delayed in them.
    pub bridge_setup: crate::bridge_setup::BridgeSetupReport,
    /// Why packets died (kernel drop reasons, v5.17+).
    pub drops: crate::drops::DropsReport,
    /// Kernel struct members BTF did not have (their readers are degraded).
    pub kernel_offsets_missing: Vec<String>,
    /// Every loss counter, zeros included.
    pub losses: Vec<LossReport>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceReport {
    pub name: String,
    pub ifindex: u32,
    pub kind: crate::interfaces::Kind,
    /// Bridge (or other controller) this interface is a port of.
    pub master: Option<String>,
    /// TC ingress: on a host-side pod veth, what the pod sent.
    pub ingress: Counts,
    /// TC egress: on a host-side pod veth, what was delivered to the pod.
    pub egress: Counts,
    /// The interface was deleted during the trace (counts up to then).
    pub vanished: bool,
    /// `namespace/name` of the pod behind it, when known.
    pub pod: Option<String>,
    /// The pod's addresses, when known.
    pub pod_ips: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

impl From<IfaceCounters> for Counts {
    fn from(c: IfaceCounters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LossReport {
    pub reason: &'static str,
    pub count: u64,
}

/// Builds per-interface rows for the traced interfaces from a counter delta.
pub fn interfaces(
    traced: &[Interface],
    all: &[Interface],
    counts: &Snapshot,
) -> Vec<InterfaceReport> {
    let get = |index, dir| {
        counts
            .get(&(index, dir))
            .copied()
            .unwrap_or_default()
            .into()
    };
    traced
        .iter()
        .map(|iface| InterfaceReport {
            name: iface.name.clone(),
            ifindex: iface.index,
            kind: iface.kind.clone(),
            master: iface
                .master
                .and_then(|m| all.iter().find(|i| i.index == m))
                .map(|m| m.name.clone()),
            ingress: get(iface.index, Direction::Ingress),
            egress: get(iface.index, Direction::Egress),
            vanished: false,
            pod: None,
            pod_ips: Vec::new(),
        })
        .collect()
}

impl Report {
    /// Human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tracer {} · kernel {}{} · {:.1} s",
            self.tracer_version,
            self.kernel,
            self.netns
                .as_deref()
                .map(|n| format!(" · netns {}", Shown(n)))
                .unwrap_or_default(),
            self.duration_seconds
        );
        self.findings_table(&mut out);
        let _ = writeln!(
            out,
            "\n{:<28} {:<16} {:<8} {:<10} {:>12} {:>14} {:>12} {:>14}",
            "POD", "INTERFACE", "KIND", "MASTER", "IN PKTS", "IN BYTES", "OUT PKTS", "OUT BYTES"
        );
        // The pods that suffer most come first (crate::report::rank).
        for (row, _) in crate::report::rank::by_trouble(self) {
            let kind = row.kind.label();
            let _ = writeln!(
                out,
                "{:<28} {:<16} {:<8} {:<10} {:>12} {:>14} {:>12} {:>14}",
                Shown(crate::report::rank::pod(row)),
                Shown(&row.name),
                Shown(kind),
                Shown(row.master.as_deref().unwrap_or("-")),
                row.ingress.packets,
                row.ingress.bytes,
                row.egress.packets,
                row.egress.bytes
            );
        }
        self.dns_table(&mut out);
        self.dns_servers_table(&mut out);
        self.conntrack_table(&mut out);
        self.flood_table(&mut out);
        self.drops_table(&mut out);
        let losses: Vec<String> = self
            .losses
            .iter()
            .map(|l| format!("{}={}", l.reason, l.count))
            .collect();
        let _ = writeln!(out, "losses: {}", losses.join(" "));
        out
    }
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl Report {
    /// Per pod: each DNS server it lists or queries, what it is to the
    /// node, and its sends.
    fn dns_servers_table(&self, out: &mut String) {
        let d = &self.dns_servers;
        let ips = |v: &[std::net::IpAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "\nDNS servers: node list [{}] (from {}), cluster DNS [{}]",
            ips(&d.node_servers),
            Shown(&d.node_root),
            ips(&d.cluster_dns)
        );
        if d.pods.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "{:<28} {:<40} {:<17} {:>7} {:>9}  FLAG",
            "POD", "SERVER", "CLASS", "SENT", "ANSWERED"
        );
        for p in &d.pods {
            let flag = match (p.stale, p.first_only) {
                (true, true) => "stale, first only",
                (true, false) => "stale",
                (false, true) => "first only",
                (false, false) => "",
            };
            for s in &p.servers {
                let _ = writeln!(
                    out,
                    "{:<28} {:<40} {:<17} {:>7} {:>9}  {}",
                    Shown(&p.pod),
                    format!(
                        "{}{}",
                        s.server,
                        if s.configured { " (resolv.conf)" } else { "" }
                    ),
                    s.class.name(),
                    s.sends,
                    s.answered,
                    flag
                );
            }
        }
    }

    fn dns_table(&self, out: &mut String) {
        self.dns_summary(out);
        self.dns_latency_table(out);
        self.dns_lists(out);
        self.dns_not_parsed(out);
    }

    /// The kernel's counts and the exchanges, each once.
    fn dns_summary(&self, out: &mut String) {
        let dns = &self.dns;
        let c = |stat: DnsStat| dns.counters[stat];
        let _ = writeln!(
            out,
            "\nDNS: {} queries, {} answers ({} matched, {} unmatched), {} re-sent, {} parallel pairs, {} unanswered, {} slow",
            c(DnsStat::Queries),
            c(DnsStat::Answers),
            c(DnsStat::Matched),
            c(DnsStat::Unmatched),
            c(DnsStat::Resent),
            c(DnsStat::ParallelPairs),
            dns.unanswered.len() as u64 + dns.unanswered_not_listed,
            c(DnsStat::Slow),
        );
        let x = &dns.exchanges;
        let lost: Vec<String> = x
            .lost_at
            .iter()
            .map(|(at, n)| format!("{n} {}", at.describe()))
            .collect();
        let _ = writeln!(
            out,
            "DNS exchanges (each once, {} side): {} answered, {} pairs, {} re-sent, {} unanswered sends ({} never answered){}",
            x.observed_at.name(),
            x.answers,
            x.tally.parallel_pairs,
            x.tally.retries,
            x.tally.lost_sends,
            x.tally.never_answered,
            if lost.is_empty() {
                String::new()
            } else {
                format!(": {}", lost.join(", "))
            },
        );
    }

    /// Latency per (interface, server, side).
    fn dns_latency_table(&self, out: &mut String) {
        let dns = &self.dns;
        if !dns.latency.is_empty() {
            let _ = writeln!(
                out,
                "{:<16} {:<24} {:<6} {:>8} {:>9} {:>9} {:>9} {:>9}",
                "INTERFACE", "SERVER", "SIDE", "ANSWERS", "P50 MS", "P90 MS", "P99 MS", "MAX MS"
            );
            for l in &dns.latency {
                let _ = writeln!(
                    out,
                    "{:<16} {:<24} {:<6} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    Shown(&l.interface),
                    l.server,
                    l.side.name(),
                    l.answers,
                    l.p50_ms,
                    l.p90_ms,
                    l.p99_ms,
                    l.max_ms
                );
            }
        }
    }

    /// Per-interface tallies, rcodes, slow names, unanswered queries.
    fn dns_lists(&self, out: &mut String) {
        let dns = &self.dns;
        for i in &dns.per_interface {
            let r = &i.retry_modes;
            let _ = writeln!(
                out,
                "{:<16} parallel pairs {}, re-sent {} (~5s {}, ~10s {}, ~15s {}, other {}), unanswered sends {} ({} never answered), slow {}",
                Shown(&i.interface),
                i.parallel_pairs,
                i.resent,
                r.around_5s,
                r.around_10s,
                r.around_15s,
                r.other,
                i.unanswered_sends,
                i.abandoned,
                i.slow_answers
            );
        }
        if !dns.rcodes.is_empty() {
            let rcodes: Vec<String> = dns.rcodes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "rcodes: {}", rcodes.join(" "));
        }
        for s in &dns.top_slow_names {
            let _ = writeln!(
                out,
                "slow: {} {} ×{} (max {:.1} ms)",
                Shown(&s.name),
                Shown(&s.qtype),
                s.count,
                s.max_ms
            );
        }
        for u in dns.unanswered.iter().take(10) {
            let _ = writeln!(
                out,
                "unanswered: {} {} {} → {} ({} sends, on {}){}",
                Shown(&u.query.question.name),
                Shown(&u.query.question.qtype),
                u.query.client,
                u.query.server,
                u.query.sends,
                Shown(&u.interface),
                u.drop
                    .as_ref()
                    .map(|d| format!(
                        "; {} dropped ×{}: {} at {}",
                        d.packet, d.count, d.reason, d.location
                    ))
                    .unwrap_or_default()
            );
        }
    }

    /// The packets the probes could not parse whole, by outcome.
    fn dns_not_parsed(&self, out: &mut String) {
        let c = |stat: DnsStat| self.dns.counters[stat];
        let odd: Vec<String> = crate::dns::counts::NOT_FULLY_PARSED
            .into_iter()
            .filter(|&s| c(s) > 0)
            .map(|s| format!("{}={}", s.name(), c(s)))
            .collect();
        if !odd.is_empty() {
            let _ = writeln!(out, "DNS packets not fully parsed: {}", odd.join(" "));
        }
    }
}

impl Report {
    fn drops_table(&self, out: &mut String) {
        let d = &self.drops;
        if let Some(why) = &d.unavailable {
            let _ = writeln!(out, "\ndrop reasons: not available ({why})");
            return;
        }
        let reasons: Vec<String> = d
            .by_reason
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        let _ = writeln!(
            out,
            "\ndrops (kernel reasons): {} ({} DNS){}{}",
            d.total,
            d.dns,
            if reasons.is_empty() { "" } else { ": " },
            reasons.join(" ")
        );
        if d.rows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "{:<24} {:<28} {:<16} {:<5} {:<8} {:<7} {:>10}",
            "REASON", "POD", "INTERFACE", "SIDE", "PROTO", "DNS", "PACKETS"
        );
        for r in d.rows.iter().take(20) {
            let _ = writeln!(
                out,
                "{:<24} {:<28} {:<16} {:<5} {:<8} {:<7} {:>10}",
                Shown(&r.reason),
                Shown(r.pod.as_deref().unwrap_or("-")),
                Shown(r.interface.as_deref().unwrap_or("-")),
                r.side,
                r.protocol,
                r.dns_packet.unwrap_or("-"),
                r.count
            );
        }
        for l in d.locations.iter().take(10) {
            let _ = writeln!(
                out,
                "drop location: {} {} ×{}",
                l.reason, l.location, l.count
            );
        }
    }

    fn conntrack_table(&self, out: &mut String) {
        let ct = &self.conntrack;
        let t = |name: &str| ct.tracer.get(name).copied().unwrap_or(0);
        let _ = write!(
            out,
            "\nconntrack ({} mode): tracer saw {} insert drops, {} clashes resolved, {} unconfirmed netfilter drops",
            ct.mode,
            t("insert_drops"),
            t("clashes_resolved"),
            t("unconfirmed_drops")
        );
        match &ct.kernel {
            Some(k) => {
                let _ = writeln!(
                    out,
                    "; kernel counters: insert_failed +{}, drop +{}, clash_resolve +{}, early_drop +{}",
                    k.insert_failed,
                    k.drop,
                    k.clash_resolved
                        .map_or_else(|| "n/a".to_owned(), |v| v.to_string()),
                    k.early_drop
                );
            }
            None => {
                let _ = writeln!(out, "; kernel counters unavailable");
            }
        }
        unattached_hooks(out, &ct.hooks);
        for c in &ct.clients {
            let _ = writeln!(
                out,
                "  {}{}{}: {} insert drops, {} clashes resolved, {} unconfirmed drops",
                c.client,
                c.pod
                    .as_deref()
                    .map(|p| format!(" ({})", Shown(p)))
                    .unwrap_or_default(),
                if c.dns { " DNS" } else { "" },
                c.insert_drops,
                c.clashes_resolved,
                c.unconfirmed_drops
            );
        }
    }

    fn flood_table(&self, out: &mut String) {
        let f = &self.flood;
        let _ = writeln!(
            out,
            "\nflooding: {} unknown-unicast episodes, {} FDB removals, {} neighbour failures",
            f.episodes.len(),
            f.fdb_deletes,
            f.neighbour_failures.iter().map(|n| n.count).sum::<u64>()
        );
        unattached_hooks(out, &f.hooks);
        for e in &f.episodes {
            let _ = writeln!(
                out,
                "  {:.1}-{:.1} s: {} -> {} {} {}:{} {} frames ({:.0} pps) copied to {} ports [{}]; cause: {}",
                e.start_s,
                e.end_s,
                e.src_mac,
                e.dst_mac,
                e.protocol,
                e.dst_ip.as_deref().unwrap_or("-"),
                e.dport,
                e.packets,
                e.pps,
                e.victims.len(),
                Shown(&e.victims.join(" ")),
                Shown(&e.cause.detail)
            );
        }
        for p in &f.victims {
            let _ = writeln!(
                out,
                "  victim {}: {} flooded copies ({} bytes), {} broadcast, {} multicast",
                Shown(&p.interface),
                p.victim_packets,
                p.victim_bytes,
                p.broadcast_packets,
                p.multicast_packets
            );
        }
    }
}

impl Report {
    /// The verdicts, first thing in the table.
    fn findings_table(&self, out: &mut String) {
        let _ = writeln!(out, "datapath: {:?}", self.datapath);
        for f in &self.findings {
            let mark = f.severity.mark();
            let _ = writeln!(out, "[{mark}] {}", f.summary);
            if f.detected {
                let _ = writeln!(
                    out,
                    "       bridge-related: {:?}; transparent mode would resolve it: {:?} — {}",
                    f.bridge_related, f.transparent_mode_resolves, f.why
                );
                for r in &f.remedies {
                    let _ = writeln!(out, "       remedy: {r}");
                }
            }
        }
    }

    /// One line for periodic progress output.
    pub fn progress_line(&self) -> String {
        let packets: u64 = self
            .interfaces
            .iter()
            .map(|i| i.ingress.packets + i.egress.packets)
            .sum();
        let c = |stat: DnsStat| self.dns.counters[stat];
        let p99 = self
            .dns
            .latency
            .iter()
            .map(|l| l.p99_ms)
            .fold(0.0_f64, f64::max);
        let copies: u64 = self.flood.victims.iter().map(|v| v.victim_packets).sum();
        format!(
            "{:>6.1} s: {packets} pkts on {} ifaces · DNS {} q, p99 {p99:.1} ms, {} slow, {} re-sent · conntrack drops {} · flood copies {copies}",
            self.duration_seconds,
            self.interfaces.len(),
            c(DnsStat::Queries),
            c(DnsStat::Slow),
            c(DnsStat::Resent),
            self.conntrack.kernel.map_or(0, |k| k.insert_failed),
        )
    }
}

impl Report {
    /// One line for node-problem-detector, and whether it is a problem
    /// (any finding at warning or worse).
    pub fn check_line(&self) -> (String, bool) {
        use crate::verdict::Severity;
        let worst: Vec<&crate::verdict::Finding> = self
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .collect();
        if worst.is_empty() {
            let summaries: Vec<&str> = self.findings.iter().map(|f| f.summary.as_str()).collect();
            return (
                format!(
                    "OK: {:.0} s traced; {}",
                    self.duration_seconds,
                    summaries.join("; ")
                ),
                false,
            );
        }
        let problems: Vec<String> = worst
            .iter()
            .map(|f| {
                format!(
                    "{} (transparent mode resolves: {:?})",
                    f.summary, f.transparent_mode_resolves
                )
            })
            .collect();
        // Name the pods: people look for their pods, not for veths.
        let pods = crate::report::rank::most_affected(self, 3);
        let pods = if pods.is_empty() {
            String::new()
        } else {
            format!("; most affected: {}", pods.join(", "))
        };
        (format!("PROBLEM: {}{pods}", problems.join("; ")), true)
    }
}

/// One line per hook: the mechanism that attached (and what was refused
/// before it), or that none did, with the reasons.
fn unattached_hooks(out: &mut String, hooks: &[crate::hooks::HookStatus]) {
    for h in hooks {
        let refused: Vec<String> = h
            .refused
            .iter()
            .map(|r| format!("{} refused: {}", r.kind.name(), r.error))
            .collect();
        let mut line = match h.mechanism {
            Some(m) => format!(
                "  hook {} via {} {}{}",
                h.hook,
                m.name(),
                h.target,
                h.btf_object
                    .as_deref()
                    .map(|o| format!(" (BTF of {o})"))
                    .unwrap_or_default()
            ),
            None => format!(
                "  hook {} ({} on {}) not attached",
                h.hook, h.program, h.target
            ),
        };
        if !refused.is_empty() {
            let _ = write!(line, "; {}", refused.join("; "));
        }
        if let Some(note) = &h.note {
            let _ = write!(line, "; {note}");
        }
        let _ = writeln!(out, "{line}");
    }
}

impl Report {
    /// The figures the verdict rules read (`verdict::assess`), from this
    /// report: the model is read here, so the rules depend on no output.
    /// `slow_ms` is the DNS slow threshold the probes used.
    pub fn verdict_inputs(&self, slow_ms: f64) -> Inputs {
        let r = self;
        let dns = &r.dns;
        let c = |stat: DnsStat| dns.counters[stat];
        let x = &dns.exchanges;
        let observed = x.observed_at;
        let worst = dns
            .latency
            .iter()
            .filter(|l| l.side == observed)
            .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        let lost = |at: LossLocation| x.lost_at.get(&at).copied().unwrap_or(0);
        let ct_kernel = r.conntrack.kernel;
        let ct_dns_drops = r
            .conntrack
            .clients
            .iter()
            .filter(|c| c.dns)
            .map(|c| c.insert_drops + c.unconfirmed_drops)
            .sum();
        let flood = &r.flood;
        Inputs {
            datapath: r.datapath,
            kernel: r.kernel.clone(),
            dns_observed_at: observed.name(),
            dns_answers: x.answers,
            dns_client_p99_ms: worst.map_or(0.0, |l| l.p99_ms),
            dns_client_p50_ms: worst.map_or(0.0, |l| l.p50_ms),
            dns_server_p50_ms: x.server_latency.as_ref().map(|l| l.p50_ms),
            dns_slow: x.tally.slow_answers,
            dns_unanswered_sends: x.tally.lost_sends,
            dns_abandoned: x.tally.never_answered,
            dns_retries_5s_modes: {
                let m = x.tally.retry_modes;
                m.around_5s + m.around_10s + m.around_15s
            },
            dns_parallel_pairs: x.tally.parallel_pairs,
            dns_lost_before_server: lost(LossLocation::BeforeServerPort),
            dns_lost_in_server: lost(LossLocation::InServer),
            dns_lost_after_server: lost(LossLocation::AfterServerPort),
            dns_lost_unlocated: lost(LossLocation::Unknown) + dns.losses_unlocated,
            dns_nxdomain: dns
                .rcodes
                .get(&question::rcode_name(question::RCODE_NXDOMAIN))
                .copied()
                .unwrap_or(0),
            dns_answers_seen: c(DnsStat::Answers),
            dns_truncated: c(DnsStat::Truncated),
            dns_slow_threshold_ms: slow_ms,
            ct_insert_failed: ct_kernel.map_or(0, |k| k.insert_failed),
            ct_drop: ct_kernel.map_or(0, |k| k.drop),
            ct_clash_resolved: ct_kernel.and_then(|k| k.clash_resolved),
            ct_dns_drops,
            ct_mode: r.conntrack.mode.to_owned(),
            flood_episodes: flood.episodes.len() as u64,
            flood_frames: flood.episodes.iter().map(|e| e.packets).sum(),
            flood_victim_copies: flood.victims.iter().map(|v| v.victim_packets).sum(),
            flood_victim_ports: flood
                .victims
                .iter()
                .filter(|v| v.victim_packets > 0)
                .count() as u64,
            flood_fdb_aged_causes: flood
                .episodes
                .iter()
                .filter(|e| e.cause.kind == CauseKind::AgedOut)
                .count() as u64,
            flood_causes: cause_counts(flood.episodes.iter().map(|e| e.cause.kind)),
            flood_max_pps: flood.episodes.iter().map(|e| e.pps).fold(0.0, f64::max),
            neighbour_failures: flood.neighbour_failures.iter().map(|n| n.count).sum(),
            bridge_setup: r.bridge_setup.clone(),
            dns_drops: dns_drop_figures(&r.drops),
            drops_unavailable: r.drops.unavailable.clone(),
        }
    }
}

/// DNS drops by (reason, direction), the most frequent first.
fn dns_drop_figures(drops: &crate::drops::DropsReport) -> Vec<DnsDropFigure> {
    let mut by: std::collections::BTreeMap<(String, bool), u64> = Default::default();
    for row in drops.rows.iter().filter(|r| r.dns) {
        *by.entry((row.reason.clone(), row.dns_packet == Some("answer")))
            .or_default() += row.count;
    }
    let mut out: Vec<DnsDropFigure> = by
        .into_iter()
        .map(|((reason, answer), count)| DnsDropFigure {
            reason,
            answer,
            count,
        })
        .collect();
    out.sort_by_key(|d| std::cmp::Reverse(d.count));
    out
}

/// Episodes per cause, most frequent first.
fn cause_counts(kinds: impl Iterator<Item = CauseKind>) -> Vec<(CauseKind, u64)> {
    let mut counts: Vec<(CauseKind, u64)> = kinds
        .fold(std::collections::BTreeMap::new(), |mut acc, k| {
            *acc.entry(k).or_default() += 1;
            acc
        })
        .into_iter()
        .collect();
    counts.sort_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
    counts
}
