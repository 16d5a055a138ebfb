//! Findings: for each symptom, whether it was seen, how bad, the evidence,
//! whether the bridge is involved, and whether transparent (routed) mode
//! would resolve it — honestly both ways.
//!
//! The rules read a small [`Inputs`] extracted from a report, so they are
//! unit-tested on recorded figures without a kernel.

use serde::Serialize;

use crate::flood::cause::CauseKind;

/// The symptoms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Symptom {
    DnsLatency,
    ConntrackRace,
    UdpFlooding,
    /// Pods querying or listing DNS servers the node no longer uses.
    DnsServers,
    /// A just-in-time bridge setup moved the node's uplink under a bridge.
    BridgeSetup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The four-character mark the table and the live view put before a
    /// finding (capitals for what needs attention).
    pub const fn mark(self) -> &'static str {
        match self {
            Self::Ok => "ok  ",
            Self::Info => "info",
            Self::Warning => "WARN",
            Self::Critical => "CRIT",
        }
    }
}

/// Yes / no / partly / unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Yes,
    No,
    Partly,
    Unknown,
}

/// One symptom's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub symptom: Symptom,
    pub detected: bool,
    pub severity: Severity,
    /// One line, with the numbers.
    pub summary: String,
    /// The figures the verdict rests on.
    pub evidence: Vec<(String, String)>,
    pub bridge_related: Answer,
    /// Would Azure CNI transparent mode (routed, no bridge) resolve it?
    pub transparent_mode_resolves: Answer,
    pub why: String,
    pub remedies: Vec<String>,
}

/// The datapath the traced node uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeDatapath {
    Bridge,
    Transparent,
    Mixed,
    #[default]
    Unknown,
}

/// The figures the rules use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub datapath: NodeDatapath,
    pub kernel: String,
    // DNS: each exchange counted once, on `dns_observed_at`'s side.
    /// Where the DNS figures were observed: "client" or "server" side.
    pub dns_observed_at: &'static str,
    pub dns_answers: u64,
    /// Worst p99 (ms) where the clients wait, and that row's p50.
    pub dns_client_p99_ms: f64,
    pub dns_client_p50_ms: f64,
    /// p50 measured at the DNS server pods' own ports (ms), if traced.
    pub dns_server_p50_ms: Option<f64>,
    pub dns_slow: u64,
    /// Sends that got no answer (each once: a re-send stands for the send
    /// before it, a query never answered for its last send).
    pub dns_unanswered_sends: u64,
    pub dns_abandoned: u64,
    /// Re-sends at ~5/10/15 s (the same timeouts as `dns_unanswered_sends`
    /// seen from the client's clock, not more of them).
    pub dns_retries_5s_modes: u64,
    pub dns_parallel_pairs: u64,
    /// Lost sends by location: never reached the server's port / reached
    /// it and no answer left / the answer left and never arrived / unknown.
    pub dns_lost_before_server: u64,
    pub dns_lost_in_server: u64,
    pub dns_lost_after_server: u64,
    pub dns_lost_unlocated: u64,
    /// Answers and NXDOMAIN answers over every traced interface (an answer
    /// crossing two ports counts twice in both: their ratio is right).
    pub dns_answers_seen: u64,
    pub dns_nxdomain: u64,
    pub dns_truncated: u64,
    pub dns_slow_threshold_ms: f64,
    // conntrack
    pub ct_insert_failed: u64,
    pub ct_drop: u64,
    pub ct_clash_resolved: Option<u64>,
    /// Drops the probes attributed to DNS flows.
    pub ct_dns_drops: u64,
    pub ct_mode: String,
    // flooding
    pub flood_episodes: u64,
    pub flood_frames: u64,
    pub flood_victim_copies: u64,
    pub flood_victim_ports: u64,
    pub flood_fdb_aged_causes: u64,
    /// Episodes per cause, most frequent first.
    pub flood_causes: Vec<(CauseKind, u64)>,
    pub flood_max_pps: f64,
    pub neighbour_failures: u64,
    /// Bridge creation, uplink enslavement, address/route windows and the
    /// DNS queries caught in them.
    pub bridge_setup: crate::bridge_setup::BridgeSetupReport,
    // drop reasons (kfree_skb, v5.17+)
    /// DNS packets the kernel dropped, by reason and packet.
    pub dns_drops: Vec<DnsDropFigure>,
    /// Why drop reasons are not known, when they are not.
    pub drops_unavailable: Option<String>,
}

/// DNS drops of one reason and direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsDropFigure {
    /// The kernel's reason, e.g. `SOCKET_RCVBUFF`.
    pub reason: String,
    /// The answer died (else the query).
    pub answer: bool,
    pub count: u64,
}

/// Applies every rule.
pub fn assess(i: &Inputs) -> Vec<Finding> {
    vec![dns(i), conntrack(i), flood(i), bridge_setup(i)]
}

fn ev(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}

/// Kernel major.minor ≥ 5.6: clash resolution for the multi-backend DNAT
/// case (6a757c07e51f "allow insertion of clashing entries").
fn has_clash_resolution(kernel: &str) -> bool {
    let mut parts = kernel
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 6)
}

fn dns(i: &Inputs) -> Finding {
    let evidence = dns_evidence(i);
    // Each lost send once: a re-send already stands for the send it
    // repeats, so re-sends are not added to it.
    let timeouts = i.dns_unanswered_sends;
    let slow = i.dns_slow > 0 || i.dns_client_p99_ms >= i.dns_slow_threshold_ms;
    let detected = timeouts > 0 || slow;
    let mut remedies = Vec::new();
    let (severity, related, resolves, why) = if !detected {
        (
            Severity::Ok,
            Answer::No,
            Answer::Unknown,
            "no slow or lost DNS traffic seen".to_owned(),
        )
    } else if timeouts > 0 && i.ct_dns_drops > 0 {
        remedies.extend(conntrack_remedies(i));
        (
            Severity::Critical,
            Answer::Partly,
            Answer::Partly,
            format!(
                "{} DNS packets were dropped by conntrack insert races: each costs the client a resolver timeout (5 s). \
                 The race happens in the node's conntrack on the DNAT to the DNS service, which transparent mode keeps; \
                 it removes the bridge's br_netfilter pass but not the race itself",
                i.ct_dns_drops
            ),
        )
    } else if timeouts > 0 && !i.dns_drops.is_empty() {
        dropped_dns(i, timeouts, &mut remedies)
    } else if timeouts > 0 {
        lost_dns(i, timeouts, &mut remedies)
    } else {
        slow_dns(i, &mut remedies)
    };
    if i.dns_answers_seen > 20 && i.dns_nxdomain * 2 > i.dns_answers_seen {
        remedies.push(format!(
            "{} of {} answers seen are NXDOMAIN: search-list expansion (ndots:5); use FQDNs with a trailing dot or ndots:2 — not bridge-related",
            i.dns_nxdomain, i.dns_answers_seen
        ));
    }
    if i.dns_truncated > 0 {
        remedies.push(format!(
            "{} truncated answers seen (each port counts its own): large answers fall back to TCP, not bridge-related",
            i.dns_truncated
        ));
    }
    Finding {
        symptom: Symptom::DnsLatency,
        detected,
        severity,
        summary: format!(
            "DNS ({} side): {} answers, p50 {:.1} ms, p99 {:.1} ms, {} slow, {} unanswered sends, {} retries at ~5/10/15 s",
            i.dns_observed_at,
            i.dns_answers,
            i.dns_client_p50_ms,
            i.dns_client_p99_ms,
            i.dns_slow,
            i.dns_unanswered_sends,
            i.dns_retries_5s_modes
        ),
        evidence,
        bridge_related: related,
        transparent_mode_resolves: resolves,
        why,
        remedies,
    }
}

/// The DNS finding's evidence: the figures, then drops and lost sends by
/// place where there are any.
fn dns_evidence(i: &Inputs) -> Vec<(String, String)> {
    let mut evidence = vec![
        ev("observed_at", format!("{} side", i.dns_observed_at)),
        ev("answers", i.dns_answers),
        ev("client_p50_ms", format!("{:.2}", i.dns_client_p50_ms)),
        ev("client_p99_ms", format!("{:.2}", i.dns_client_p99_ms)),
        ev("slow_answers", i.dns_slow),
        ev("unanswered_sends", i.dns_unanswered_sends),
        ev("never_answered", i.dns_abandoned),
        ev("retries_at_5_10_15s", i.dns_retries_5s_modes),
        ev("parallel_a_aaaa_pairs", i.dns_parallel_pairs),
    ];
    if let Some(server) = i.dns_server_p50_ms {
        evidence.push(ev("server_side_p50_ms", format!("{server:.2}")));
    }
    match &i.drops_unavailable {
        Some(why) => evidence.push(ev("drop_reasons", format!("unavailable: {why}"))),
        None if !i.dns_drops.is_empty() => evidence.push(ev("drop_reasons", drop_list(i))),
        None => {}
    }
    for (name, n) in [
        ("lost_before_server_port", i.dns_lost_before_server),
        ("lost_in_server", i.dns_lost_in_server),
        ("lost_after_server_port", i.dns_lost_after_server),
        ("lost_unlocated", i.dns_lost_unlocated),
    ] {
        if n > 0 {
            evidence.push(ev(name, n));
        }
    }
    evidence
}

/// Slow answers and nothing lost: where the time goes, by the server's own
/// latency when its port is traced.
fn slow_dns(i: &Inputs, remedies: &mut Vec<String>) -> (Severity, Answer, Answer, String) {
    if let Some(server) = i
        .dns_server_p50_ms
        .filter(|s| *s >= 0.8 * i.dns_client_p50_ms)
    {
        remedies.push("scale or fix the DNS server / its upstream; NodeLocal DNSCache caches answers on the node".into());
        (
            Severity::Warning,
            Answer::No,
            Answer::No,
            format!(
                "answers are slow at the server itself ({server:.1} ms p50 at the DNS server's port, {:.1} ms at the client's): \
                     a slow upstream or server, not a bridge problem; transparent mode would not change it",
                i.dns_client_p50_ms
            ),
        )
    } else if let Some(server) = i.dns_server_p50_ms {
        remedies.push("look at the path between the client's and the server's ports: tracer's flood and conntrack findings".into());
        (
            Severity::Warning,
            Answer::Partly,
            Answer::Unknown,
            format!(
                "answers take {:.1} ms p50 at the client's port but only {server:.1} ms at the DNS server's port: \
                     the time is spent on the node's path between the two (bridge, netfilter, conntrack, CPU)",
                i.dns_client_p50_ms
            ),
        )
    } else {
        remedies.push("NodeLocal DNSCache (answers from the node, no DNAT)".into());
        (
            Severity::Warning,
            Answer::Unknown,
            Answer::Unknown,
            format!(
                "p99 {:.1} ms ≥ {:.0} ms threshold; the server-side latency is unknown (its port was not traced)",
                i.dns_client_p99_ms, i.dns_slow_threshold_ms
            ),
        )
    }
}

/// What a DNS drop's kernel reason says about its cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropCause {
    /// A query died at a full server socket: the server is overloaded.
    ServerOverload,
    /// An answer died at a full client socket.
    ClientOverload,
    /// Netfilter dropped it while conntrack insert races were seen.
    ConntrackRace,
    /// Netfilter dropped it and no insert race was seen: a rule.
    Firewall,
    /// Address resolution (ARP/ND) failed or its queue overflowed: the L2
    /// path, the bridge in bridge mode.
    Neighbour,
    /// A device queue (qdisc) was full.
    Queue,
    Other,
}

impl DropCause {
    fn of(d: &DnsDropFigure, ct_race: bool) -> Self {
        match d.reason.as_str() {
            "SOCKET_RCVBUFF" if d.answer => Self::ClientOverload,
            "SOCKET_RCVBUFF" => Self::ServerOverload,
            "NETFILTER_DROP" if ct_race => Self::ConntrackRace,
            "NETFILTER_DROP" => Self::Firewall,
            r if r.starts_with("NEIGH_") => Self::Neighbour,
            r if r.starts_with("QDISC_") => Self::Queue,
            _ => Self::Other,
        }
    }
}

/// `REASON query|answer ×N, …`.
fn drop_list(i: &Inputs) -> String {
    i.dns_drops
        .iter()
        .map(|d| {
            format!(
                "{} {} ×{}",
                d.reason,
                if d.answer { "answer" } else { "query" },
                d.count
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict on lost DNS sends when the kernel said why DNS packets
/// died: it follows the most frequent reason.
fn dropped_dns(
    i: &Inputs,
    timeouts: u64,
    remedies: &mut Vec<String>,
) -> (Severity, Answer, Answer, String) {
    let ct_race = i.ct_insert_failed > 0 || i.ct_dns_drops > 0;
    let top = &i.dns_drops[0];
    let seen = format!(
        "{timeouts} DNS sends got no answer; the kernel dropped DNS packets: {}",
        drop_list(i)
    );
    let (severity, related, resolves, why) = match DropCause::of(top, ct_race) {
        DropCause::ServerOverload => {
            remedies.push("scale the DNS server (more replicas, more CPU) or raise its socket receive buffer; NodeLocal DNSCache takes load off it".into());
            (
                Severity::Warning,
                Answer::No,
                Answer::No,
                "queries died at the DNS server's own socket (SOCKET_RCVBUFF: its receive buffer was full): the server is overloaded, not the bridge; transparent mode would not change it",
            )
        }
        DropCause::ClientOverload => {
            remedies.push("the client does not read its answers fast enough: its CPU limits, or its socket receive buffer".into());
            (
                Severity::Warning,
                Answer::No,
                Answer::No,
                "answers died at the client's socket (SOCKET_RCVBUFF): the client is not reading, not a datapath problem",
            )
        }
        DropCause::ConntrackRace => {
            remedies.extend(conntrack_remedies(i));
            (
                Severity::Critical,
                Answer::Partly,
                Answer::Partly,
                "netfilter dropped them while conntrack insert races were seen: the race on the DNAT to the DNS service, which transparent mode keeps",
            )
        }
        DropCause::Firewall => {
            // A rule may sit on the bridge's path (bridge-family nft,
            // br_netfilter): where the loss was located still decides.
            remedies.push("find the netfilter rule that drops DNS (nft list ruleset / iptables-save; network policies)".into());
            let (severity, related, resolves, located) = lost_dns(i, timeouts, remedies);
            return (
                severity,
                related,
                resolves,
                format!(
                    "{located}. The kernel names the drops: {}; NETFILTER_DROP without conntrack insert races is a netfilter rule",
                    drop_list(i)
                ),
            );
        }
        DropCause::Neighbour => {
            remedies.push(
                "Azure CNI transparent mode (routed: no L2 resolution across the bridge)".into(),
            );
            remedies.push("look at the neighbour table of the node and the pods (ip -s neigh): stale or failed entries".into());
            (
                Severity::Warning,
                Answer::Yes,
                Answer::Partly,
                "address resolution failed for them (neighbour entry FAILED or its queue full): the L2 path, the bridge in bridge mode",
            )
        }
        DropCause::Queue => {
            remedies.push("a device queue overflowed: look at the qdisc statistics (tc -s qdisc) of the interface named in the drops table".into());
            (
                Severity::Warning,
                Answer::Partly,
                Answer::Unknown,
                "a device queue (qdisc) was full: congestion on the node's path",
            )
        }
        DropCause::Other => (
            Severity::Warning,
            Answer::Unknown,
            Answer::Unknown,
            "see the drops table for where the kernel dropped them",
        ),
    };
    (
        severity,
        related,
        resolves,
        format!("{seen}. Most were {why}"),
    )
}

/// The verdict on lost DNS sends without conntrack drops: it follows where
/// they were lost.
fn lost_dns(
    i: &Inputs,
    timeouts: u64,
    remedies: &mut Vec<String>,
) -> (Severity, Answer, Answer, String) {
    let on_path = i.dns_lost_before_server + i.dns_lost_after_server;
    let located = format!(
        "{timeouts} DNS sends got no answer (the client re-sent after its timeout or gave up): \
         {} never reached the DNS server's port, {} reached it and no answer left it, \
         {} were answered but the answer never reached the client, {} not located",
        i.dns_lost_before_server,
        i.dns_lost_in_server,
        i.dns_lost_after_server,
        i.dns_lost_unlocated
    );
    if i.dns_lost_in_server > 0 && i.dns_lost_in_server >= on_path {
        remedies.push("look at the DNS server pod: its logs, its load, its upstream, policies in its namespace".into());
        return (
            Severity::Warning,
            if on_path > 0 {
                Answer::Partly
            } else {
                Answer::No
            },
            if on_path > 0 {
                Answer::Partly
            } else {
                Answer::No
            },
            format!(
                "{located}. The DNS server received the queries and did not answer: \
                 not bridge-related, transparent mode would not change it"
            ),
        );
    }
    if on_path > 0 {
        remedies.push("look for loss between the two ports: tracer's flood and neighbour findings, netfilter drops (kfree_skb reasons)".into());
        remedies.push("options single-request-reopen in the pod's dnsConfig (sequential A/AAAA, new socket on retry)".into());
        return (
            Severity::Warning,
            Answer::Partly,
            Answer::Unknown,
            format!(
                "{located}. The loss is on the node's path between the client's port and the DNS server's \
                 (bridge, netfilter, conntrack) without conntrack insert drops: bridge-related at least in part; \
                 whether transparent mode would avoid it depends on what dropped it"
            ),
        );
    }
    remedies.push("look for loss between pod and DNS server: tracer's flood and neighbour findings, the DNS pods' load".into());
    remedies.push("options single-request-reopen in the pod's dnsConfig (sequential A/AAAA, new socket on retry)".into());
    (
        Severity::Warning,
        Answer::Unknown,
        Answer::Unknown,
        format!(
            "{located}. No conntrack drops on DNS flows and the DNS server's port is not traced: \
             the loss is not located, so a datapath change is not shown to help"
        ),
    )
}

fn conntrack_remedies(i: &Inputs) -> Vec<String> {
    let mut r = vec![
        "options single-request-reopen (or single-request) in the pod's dnsConfig: A and AAAA no longer race (glibc only; musl ignores it)".to_owned(),
        "NodeLocal DNSCache: pods query a node-local address, no DNAT, no race".to_owned(),
    ];
    if !has_clash_resolution(&i.kernel) {
        r.push(format!(
            "kernel {} predates clash resolution for DNAT to several backends (v5.6, 6a757c07e51f): upgrade the node image",
            i.kernel
        ));
    }
    r
}

fn conntrack(i: &Inputs) -> Finding {
    let resolved = i.ct_clash_resolved.unwrap_or(0);
    let detected = i.ct_insert_failed > 0 || resolved > 0;
    let evidence = vec![
        ev("insert_failed", i.ct_insert_failed),
        ev("drop", i.ct_drop),
        ev(
            "clash_resolved",
            i.ct_clash_resolved.map_or_else(
                || "n/a (kernel has no clashres counter)".into(),
                |v| v.to_string(),
            ),
        ),
        ev("dns_drops_attributed", i.ct_dns_drops),
        ev("parallel_a_aaaa_pairs", i.dns_parallel_pairs),
        ev("probe_mode", &i.ct_mode),
    ];
    let (severity, why) = if i.ct_insert_failed > 0 {
        (
            if i.ct_dns_drops > 0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            format!(
                "{} conntrack inserts failed and their packets were dropped ({} of them DNS: each one a 5 s resolver timeout)",
                i.ct_insert_failed, i.ct_dns_drops
            ),
        )
    } else if resolved > 0 {
        (
            Severity::Info,
            format!(
                "{resolved} insertion races happened and the kernel resolved every one (clash resolution, v5.6+): no packet lost"
            ),
        )
    } else {
        (Severity::Ok, "no conntrack insertion race seen".into())
    };
    Finding {
        symptom: Symptom::ConntrackRace,
        detected,
        severity,
        summary: format!(
            "conntrack: {} insert failures, {} clashes resolved, {} drops on DNS flows",
            i.ct_insert_failed, resolved, i.ct_dns_drops
        ),
        evidence,
        bridge_related: if detected { Answer::Partly } else { Answer::No },
        transparent_mode_resolves: if detected {
            Answer::Partly
        } else {
            Answer::Unknown
        },
        why: if detected {
            format!(
                "{why}. The race is between two packets of one socket (glibc's parallel A/AAAA) inserting the same \
                 conntrack entry through the service DNAT; transparent mode keeps that DNAT and conntrack, so it removes \
                 at most the bridge-specific part (br_netfilter's extra pass) — compare both modes with `tracer lab`"
            )
        } else {
            why
        },
        remedies: if detected {
            conntrack_remedies(i)
        } else {
            Vec::new()
        },
    }
}

/// What an episode's cause means, for the finding's `why`.
const fn cause_phrase(kind: CauseKind) -> &'static str {
    match kind {
        CauseKind::AgedOut => "an FDB entry aged out while its owner stayed silent",
        CauseKind::PortRemoved => {
            "the destination's port went down or was removed (pod deleted) while senders kept its MAC"
        }
        CauseKind::FdbEntryRemoved => "an FDB entry was flushed or deleted by hand",
        CauseKind::NeighbourFailed => "address resolution of the destination failed",
        CauseKind::DeletedBeforeTrace => {
            "the destination's FDB entry was already gone when the trace started"
        }
        CauseKind::NeverLearned => "the destination MAC belongs to no port of this node",
        CauseKind::Unexplained => "no removal was seen (cause events lost?)",
    }
}

/// What to do about floods of `kind`.
fn cause_remedy(kind: CauseKind) -> Option<&'static str> {
    match kind {
        CauseKind::AgedOut | CauseKind::DeletedBeforeTrace => Some(
            "keep FDB ageing above the neighbour timeouts so a silent receiver is re-learned: raise the bridge's ageing_time, or lower net.ipv4.neigh.<bridge>.base_reachable_time_ms / gc_stale_time so ARP re-probes refresh the FDB",
        ),
        CauseKind::PortRemoved | CauseKind::NeverLearned => Some(
            "senders still address a pod that is gone: find the clients of the deleted pod (the episode's src_mac) and make them re-resolve (shorter neighbour gc_stale_time, or clients that reconnect on errors)",
        ),
        CauseKind::FdbEntryRemoved => {
            Some("find what flushes the bridge's FDB (bridge fdb flush/del, a CNI or an agent)")
        }
        CauseKind::NeighbourFailed | CauseKind::Unexplained => None,
    }
}

fn flood(i: &Inputs) -> Finding {
    let detected = i.flood_episodes > 0 || i.flood_victim_copies > 0;
    let causes = i
        .flood_causes
        .iter()
        .map(|(k, n)| format!("{}:{n}", k.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let evidence = vec![
        ev("episodes", i.flood_episodes),
        ev("frames_flooded", i.flood_frames),
        ev("copies_to_victims", i.flood_victim_copies),
        ev("victim_ports", i.flood_victim_ports),
        ev("max_pps", format!("{:.0}", i.flood_max_pps)),
        ev("started_by_fdb_ageing", i.flood_fdb_aged_causes),
        ev("causes", &causes),
        ev("neighbour_failures", i.neighbour_failures),
    ];
    let (severity, related, resolves, why, remedies) = if detected {
        let why_started = i
            .flood_causes
            .iter()
            .map(|&(k, n)| format!("{n} because {}", cause_phrase(k)))
            .collect::<Vec<_>>()
            .join("; ");
        let mut remedies = vec!["Azure CNI transparent mode (no bridge)".to_owned()];
        for (kind, _) in &i.flood_causes {
            if let Some(r) = cause_remedy(*kind)
                && !remedies.iter().any(|have| have == r)
            {
                remedies.push(r.to_owned());
            }
        }
        (
            if i.flood_max_pps >= 1000.0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            Answer::Yes,
            Answer::Yes,
            format!(
                "the bridge did not know the destination MAC and flooded {} frames to {} other ports ({} copies, at most {:.0} frames/s); \
                 episodes started: {}. Only an L2 bridge floods unknown unicast: transparent mode routes each pod by a /32 route, \
                 with no L2 device to flood",
                i.flood_frames,
                i.flood_victim_ports,
                i.flood_victim_copies,
                i.flood_max_pps,
                if why_started.is_empty() {
                    "none seen (only flooded copies counted)".to_owned()
                } else {
                    why_started
                },
            ),
            remedies,
        )
    } else {
        let why = match i.datapath {
            NodeDatapath::Transparent => "no flooding: no bridge in the datapath".to_owned(),
            _ => "no unknown-unicast flooding seen".to_owned(),
        };
        (Severity::Ok, Answer::No, Answer::Unknown, why, Vec::new())
    };
    Finding {
        symptom: Symptom::UdpFlooding,
        detected,
        severity,
        summary: format!(
            "flooding: {} episodes, {} frames flooded, {} copies to {} victim ports",
            i.flood_episodes, i.flood_frames, i.flood_victim_copies, i.flood_victim_ports
        ),
        evidence,
        bridge_related: related,
        transparent_mode_resolves: resolves,
        why,
        remedies,
    }
}

fn bridge_setup(i: &Inputs) -> Finding {
    let b = &i.bridge_setup;
    let uplink = b.uplink.as_deref().unwrap_or("the uplink");
    let created: Vec<&str> = b
        .bridges_created
        .iter()
        .map(|c| c.bridge.as_str())
        .collect();
    let evidence = vec![
        ev("bridges_created", created.join(" ")),
        ev("uplink_enslaved", b.uplink_enslaved.len()),
        ev("windows_without_address_or_default_route", b.windows.len()),
        ev("longest_window_ms", format!("{:.1}", b.longest_window_ms())),
        ev("dns_queries_lost", b.queries_lost),
        ev("dns_queries_delayed", b.queries_delayed),
    ];
    let affected = b.queries_lost + b.queries_delayed;
    let detected = b.happened();
    let severity = match (detected, affected) {
        (false, _) => Severity::Ok,
        (true, 0) => Severity::Info,
        (true, _) => Severity::Warning,
    };
    let summary = if !detected {
        let before = if b.bridges_at_start.is_empty() {
            String::new()
        } else {
            format!(
                " ({} existed before the trace started)",
                b.bridges_at_start.join(", ")
            )
        };
        let watched = if b.watched {
            ""
        } else {
            " (not watched: netlink failed)"
        };
        format!("bridge setup: not seen during the trace{before}{watched}")
    } else {
        format!(
            "bridge setup: {} created, {uplink} enslaved {} time(s); node address/default route missing for {:.0} ms; {} DNS queries lost, {} delayed",
            if created.is_empty() {
                "no bridge".to_owned()
            } else {
                created.join(", ")
            },
            b.uplink_enslaved.len(),
            b.longest_window_ms(),
            b.queries_lost,
            b.queries_delayed
        )
    };
    Finding {
        symptom: Symptom::BridgeSetup,
        detected,
        severity,
        summary,
        evidence,
        bridge_related: if detected { Answer::Yes } else { Answer::No },
        transparent_mode_resolves: if detected {
            Answer::Yes
        } else {
            Answer::Unknown
        },
        why: format!(
            "bridge mode's CNI creates the bridge when the first pod arrives and moves {uplink}'s address and default route to it; \
             in between the node has neither: answers arriving then are dropped (the resolver waits its timeout, 5 s by default, and re-sends) \
             and sends fail at once (no route; those never reach a network device, only the client sees them). \
             Transparent mode never touches {uplink}: no window"
        ),
        remedies: if detected {
            vec![
                "transparent mode (routed pod veths, eth0 untouched)".into(),
                "create the bridge at node provisioning, before workloads resolve names".into(),
            ]
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            kernel: "6.18.44".into(),
            dns_observed_at: "client",
            dns_answers: 1000,
            dns_answers_seen: 2000,
            dns_client_p50_ms: 0.3,
            dns_client_p99_ms: 1.2,
            dns_slow_threshold_ms: 100.0,
            ct_clash_resolved: Some(0),
            ct_mode: "kfree_skb".into(),
            ..Inputs::default()
        }
    }

    #[test]
    fn quiet_node_has_no_findings() {
        let f = assess(&base());
        assert!(f.iter().all(|f| !f.detected && f.severity == Severity::Ok));
    }

    #[test]
    fn slow_upstream_is_not_a_bridge_problem() {
        // Recorded: 50 ms at the client's port, 49.8 ms at the server's.
        let i = Inputs {
            dns_client_p50_ms: 50.2,
            dns_client_p99_ms: 50.5,
            dns_server_p50_ms: Some(49.8),
            dns_slow_threshold_ms: 20.0,
            dns_slow: 50,
            ..base()
        };
        let f = dns(&i);
        assert!(f.detected);
        assert_eq!(f.bridge_related, Answer::No);
        assert_eq!(f.transparent_mode_resolves, Answer::No);
        assert!(f.why.contains("not a bridge problem"), "{}", f.why);
        assert!(
            f.why.contains("49.8 ms p50 at the DNS server's port"),
            "{}",
            f.why
        );
        assert!(f.evidence.iter().any(|(k, _)| k == "server_side_p50_ms"));
    }

    #[test]
    fn dns_timeouts_from_conntrack_drops_are_critical_and_partly_bridge() {
        let i = Inputs {
            dns_unanswered_sends: 3,
            dns_retries_5s_modes: 3,
            ct_insert_failed: 3,
            ct_drop: 3,
            ct_dns_drops: 3,
            ..base()
        };
        let f = dns(&i);
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.transparent_mode_resolves, Answer::Partly);
        assert!(
            f.remedies
                .iter()
                .any(|r| r.contains("single-request-reopen"))
        );
        let c = conntrack(&i);
        assert_eq!(c.severity, Severity::Critical);
    }

    #[test]
    fn lost_dns_without_conntrack_drops_is_not_blamed_on_the_datapath() {
        let i = Inputs {
            dns_unanswered_sends: 1,
            dns_retries_5s_modes: 1,
            ..base()
        };
        let f = dns(&i);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.transparent_mode_resolves, Answer::Unknown);
    }

    #[test]
    fn bridge_setup_says_what_it_cost_or_that_it_was_not_seen() {
        use crate::bridge_setup::{BridgeCreated, BridgeSetupReport, MissingWindow};
        let quiet = bridge_setup(&Inputs {
            bridge_setup: BridgeSetupReport {
                watched: true,
                bridges_at_start: vec!["azure0".into()],
                ..BridgeSetupReport::default()
            },
            ..base()
        });
        assert!(!quiet.detected);
        assert!(quiet.summary.contains("not seen"), "{}", quiet.summary);
        assert!(
            quiet.summary.contains("azure0 existed"),
            "{}",
            quiet.summary
        );
        let seen = bridge_setup(&Inputs {
            bridge_setup: BridgeSetupReport {
                watched: true,
                uplink: Some("eth0".into()),
                bridges_created: vec![BridgeCreated {
                    bridge: "azure0".into(),
                    at_s: 1.0,
                }],
                windows: vec![MissingWindow {
                    start_s: 1.0,
                    end_s: Some(1.4),
                    duration_ms: 400.0,
                    address_missing_ms: 390.0,
                    default_route_missing_ms: 400.0,
                    queries_lost: 0,
                    queries_delayed: 3,
                }],
                queries_delayed: 3,
                ..BridgeSetupReport::default()
            },
            ..base()
        });
        assert_eq!(seen.severity, Severity::Warning);
        assert_eq!(seen.transparent_mode_resolves, Answer::Yes);
        assert!(seen.summary.contains("400 ms"), "{}", seen.summary);
        assert!(seen.summary.contains("3 delayed"), "{}", seen.summary);
    }

    #[test]
    fn resolved_clashes_are_information_only() {
        let i = Inputs {
            ct_clash_resolved: Some(2545),
            ..base()
        };
        let c = conntrack(&i);
        assert!(c.detected);
        assert_eq!(c.severity, Severity::Info);
        assert!(c.why.contains("resolved every one"));
        assert!(
            !c.remedies.iter().any(|r| r.contains("upgrade")),
            "6.18 has clash resolution"
        );
    }

    fn drops(reason: &str, answer: bool, count: u64) -> DnsDropFigure {
        DnsDropFigure {
            reason: reason.into(),
            answer,
            count,
        }
    }

    #[test]
    fn drop_reasons_name_the_cause_of_lost_dns() {
        // The figures of tests/tests/drops.rs: 198 re-sends of one query
        // died at a server socket that does not read.
        let lost = Inputs {
            dns_unanswered_sends: 1,
            dns_abandoned: 1,
            ..base()
        };
        let server = dns(&Inputs {
            dns_drops: vec![drops("SOCKET_RCVBUFF", false, 198)],
            ..lost.clone()
        });
        assert!(server.detected);
        assert_eq!(server.bridge_related, Answer::No);
        assert_eq!(server.transparent_mode_resolves, Answer::No);
        assert!(
            server.why.contains("server is overloaded"),
            "{}",
            server.why
        );
        assert!(
            server
                .evidence
                .contains(&ev("drop_reasons", "SOCKET_RCVBUFF query ×198")),
            "{:?}",
            server.evidence
        );
        let neighbour = dns(&Inputs {
            dns_drops: vec![
                drops("NEIGH_FAILED", false, 3),
                drops("QDISC_DROP", false, 1),
            ],
            ..lost.clone()
        });
        assert_eq!(neighbour.bridge_related, Answer::Yes);
        assert!(
            neighbour.why.contains("address resolution"),
            "{}",
            neighbour.why
        );
        // NETFILTER_DROP is the race only when conntrack saw insert failures.
        let rule = dns(&Inputs {
            dns_drops: vec![drops("NETFILTER_DROP", false, 4)],
            dns_lost_before_server: 1,
            ..lost.clone()
        });
        assert!(rule.why.contains("netfilter rule"), "{}", rule.why);
        // Where the loss was located still decides (a bridge-family rule).
        assert_eq!(rule.bridge_related, Answer::Partly);
        let race = dns(&Inputs {
            dns_drops: vec![drops("NETFILTER_DROP", false, 4)],
            ct_insert_failed: 4,
            ..lost.clone()
        });
        assert_eq!(race.severity, Severity::Critical);
        assert!(race.why.contains("race"), "{}", race.why);
        // Without reasons the finding says why they are missing.
        let old = dns(&Inputs {
            drops_unavailable: Some("v5.17".into()),
            ..lost
        });
        assert!(
            old.evidence
                .contains(&ev("drop_reasons", "unavailable: v5.17"))
        );
    }

    #[test]
    fn old_kernels_are_told_to_upgrade() {
        let i = Inputs {
            kernel: "4.19.0-azure".into(),
            ct_insert_failed: 5,
            ..base()
        };
        assert!(conntrack(&i).remedies.iter().any(|r| r.contains("upgrade")));
    }

    #[test]
    fn flooding_is_bridge_related_and_resolved_by_transparent_mode() {
        // Recorded from the flood test: 4025 frames at 1 kpps to one victim.
        let i = Inputs {
            datapath: NodeDatapath::Bridge,
            flood_episodes: 1,
            flood_frames: 4025,
            flood_victim_copies: 4025,
            flood_victim_ports: 1,
            flood_fdb_aged_causes: 1,
            flood_causes: vec![(CauseKind::AgedOut, 1)],
            flood_max_pps: 1000.0,
            ..base()
        };
        let f = flood(&i);
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.bridge_related, Answer::Yes);
        assert_eq!(f.transparent_mode_resolves, Answer::Yes);
        assert!(f.remedies.iter().any(|r| r.contains("ageing")));
        assert!(
            f.why.contains("1 because an FDB entry aged out"),
            "{}",
            f.why
        );
    }

    #[test]
    fn a_removed_port_is_not_called_ageing_and_slow_floods_are_warnings() {
        // A deleted receiver at 25 pps, plus a single stray frame.
        let i = Inputs {
            datapath: NodeDatapath::Bridge,
            flood_episodes: 2,
            flood_frames: 126,
            flood_victim_copies: 252,
            flood_victim_ports: 2,
            flood_causes: vec![(CauseKind::PortRemoved, 1), (CauseKind::NeverLearned, 1)],
            flood_max_pps: 25.0,
            ..base()
        };
        let f = flood(&i);
        assert_eq!(f.severity, Severity::Warning);
        assert!(!f.why.contains("aged out"), "{}", f.why);
        assert!(
            f.why.contains("1 because the destination's port went down"),
            "{}",
            f.why
        );
        assert!(f.remedies.iter().any(|r| r.contains("deleted pod")));
        assert!(!f.remedies.iter().any(|r| r.contains("ageing_time")));
    }

    #[test]
    fn loss_inside_the_server_is_not_a_bridge_problem() {
        // Recorded shape: 20 lost sends, each seen re-sent unanswered at the
        // DNS server's port too.
        let i = Inputs {
            dns_unanswered_sends: 20,
            dns_retries_5s_modes: 20,
            dns_lost_in_server: 20,
            ..base()
        };
        let f = dns(&i);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.bridge_related, Answer::No);
        assert_eq!(f.transparent_mode_resolves, Answer::No);
        assert!(f.why.contains("20 DNS sends got no answer"), "{}", f.why);
        assert!(f.summary.contains("20 unanswered sends"), "{}", f.summary);
    }

    #[test]
    fn loss_between_the_ports_is_partly_the_bridge() {
        let i = Inputs {
            dns_unanswered_sends: 4,
            dns_lost_before_server: 3,
            dns_lost_after_server: 1,
            ..base()
        };
        let f = dns(&i);
        assert_eq!(f.bridge_related, Answer::Partly);
        assert!(f.why.contains("3 never reached"), "{}", f.why);
        assert!(f.why.contains("1 were answered"), "{}", f.why);
    }

    #[test]
    fn slow_path_between_fast_server_and_slow_client_is_named() {
        let i = Inputs {
            dns_client_p50_ms: 120.0,
            dns_client_p99_ms: 150.0,
            dns_server_p50_ms: Some(0.4),
            dns_slow: 10,
            ..base()
        };
        let f = dns(&i);
        assert_eq!(f.bridge_related, Answer::Partly);
        assert!(
            f.why.contains("0.4 ms at the DNS server's port"),
            "{}",
            f.why
        );
    }

    #[test]
    fn nxdomain_storms_are_named_not_blamed() {
        let i = Inputs {
            dns_nxdomain: 800,
            dns_answers_seen: 1000,
            dns_slow: 1,
            ..base()
        };
        assert!(dns(&i).remedies.iter().any(|r| r.contains("ndots")));
    }

    #[test]
    fn kernel_versions() {
        assert!(has_clash_resolution("6.18.44-fc-v669"));
        assert!(has_clash_resolution("5.15.0-1064-azure"));
        assert!(!has_clash_resolution("5.4.0-1109-azure"));
        assert!(!has_clash_resolution("garbage"));
    }
}
