//! conntrack insert races: the collector side of
//! `tracer-ebpf/src/conntrack.rs`, plus the kernel's own counters.
//!
//! The fexit hooks give exact drops and resolved clashes with their tuples;
//! where fexit is not permitted, `skb:kfree_skb` still attributes the drops
//! and `/proc/net/stat/nf_conntrack` gives the totals, resolved clashes
//! included. The report says which of these it had.

pub mod stat;

use std::{collections::BTreeMap, net::IpAddr, os::unix::fs::MetadataExt as _};

use aya::{
    Ebpf,
    maps::{MapError, PerCpuArray},
};
use serde::Serialize;
use tracer_common::{
    conntrack::{
        CT_STAT_ENTRY_MISSED, CT_STAT_READ_FAILED, CT_STAT_RING_FULL, CT_STATS_LEN, ConntrackEvent,
        CtKind, CtTuple,
    },
    dns::DNS_PORT,
};

use self::stat::{ConntrackDelta, ConntrackStats};
use crate::{
    hooks::{HookKind, HookStatus},
    ring::{Ring, RingError},
};

/// Errors of the conntrack collector.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("conntrack map: {0}")]
    Map(#[from] MapError),
    #[error("conntrack events: {0}")]
    Ring(#[from] RingError),
}

/// Keep at most this many events in the report.
const MAX_EVENTS: usize = 500;

/// A decoded drop or clash.
#[derive(Clone, Debug, Serialize)]
pub struct CtEventRecord {
    pub kind: &'static str,
    pub cpu: u32,
    pub protocol: String,
    /// As the client sent it (service address before DNAT).
    pub original: String,
    /// As the answer comes back (the backend after DNAT).
    pub reply: String,
    /// Port 53: a DNS flow.
    pub dns: bool,
}

/// Drops and clashes per client address.
#[derive(Clone, Debug, Serialize)]
pub struct ClientTally {
    pub client: IpAddr,
    /// Pod owning the address, when known.
    pub pod: Option<String>,
    pub dns: bool,
    pub insert_drops: u64,
    pub clashes_resolved: u64,
    pub unconfirmed_drops: u64,
}

/// The collector of one trace.
pub struct ConntrackCollector {
    ring: Ring,
    stats_base: Vec<u64>,
    proc_base: Option<ConntrackStats>,
    /// Inode of the traced network namespace: events elsewhere are counted
    /// apart, not attributed.
    netns: Option<u32>,
    counts: BTreeMap<CtKind, u64>,
    other_netns: u64,
    clients: BTreeMap<(IpAddr, bool), ClientTally>,
    events: Vec<CtEventRecord>,
    events_not_listed: BTreeMap<&'static str, u64>,
    undecodable: u64,
}

impl ConntrackCollector {
    /// Takes the event ring out of `ebpf` and records the counters' current
    /// values (ours and the kernel's for the current namespace).
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, ConntrackError> {
        let ring = ebpf
            .take_map("CT_EVENTS")
            .ok_or(ConntrackError::MissingMap("CT_EVENTS"))?;
        Ok(Self {
            ring: Ring::new(ring)?,
            stats_base: read_stats(ebpf)?,
            proc_base: ConntrackStats::read().ok(),
            netns: current_netns(),
            counts: BTreeMap::new(),
            other_netns: 0,
            clients: BTreeMap::new(),
            events: Vec::new(),
            events_not_listed: BTreeMap::new(),
            undecodable: 0,
        })
    }

    /// Waits for events and decodes them.
    pub async fn readable(&mut self) -> Result<(), ConntrackError> {
        self.ring.readable().await?;
        self.drain();
        Ok(())
    }

    /// Decodes every waiting event.
    pub fn drain(&mut self) {
        let (decoded, undecodable) = self.ring.drain_decoded::<ConntrackEvent>();
        self.undecodable += undecodable;
        for event in decoded {
            self.record(&event);
        }
    }

    fn record(&mut self, event: &ConntrackEvent) {
        let Some(kind) = CtKind::from_raw(event.kind) else {
            self.undecodable += 1;
            return;
        };
        if self.netns.is_some_and(|ns| ns != event.netns) {
            self.other_netns += 1;
            return;
        }
        *self.counts.entry(kind).or_default() += 1;
        let dns = event.orig.dport == DNS_PORT || event.orig.sport == DNS_PORT;
        let client = addr(&event.orig.src, event.orig.l3num);
        let tally = self
            .clients
            .entry((client, dns))
            .or_insert_with(|| ClientTally {
                client,
                pod: None,
                dns,
                insert_drops: 0,
                clashes_resolved: 0,
                unconfirmed_drops: 0,
            });
        match kind {
            CtKind::ConfirmDrop => tally.insert_drops += 1,
            CtKind::ClashResolved => tally.clashes_resolved += 1,
            CtKind::UnconfirmedDrop => tally.unconfirmed_drops += 1,
            CtKind::ClashDropped => {}
        }
        if self.events.len() >= MAX_EVENTS {
            *self.events_not_listed.entry(kind.name()).or_default() += 1;
        } else {
            self.events.push(CtEventRecord {
                kind: kind.name(),
                cpu: event.cpu,
                protocol: protocol(event.orig.protonum),
                original: tuple(&event.orig),
                reply: tuple(&event.reply),
                dns,
            });
        }
    }

    /// Builds the conntrack section of the report. `pod_of` maps a client
    /// address to a pod name when the caller knows one.
    pub fn report(
        &self,
        ebpf: &Ebpf,
        hooks: Vec<HookStatus>,
        pod_of: &dyn Fn(IpAddr) -> Option<String>,
    ) -> Result<ConntrackReport, ConntrackError> {
        let now = read_stats(ebpf)?;
        let stat = |i: u32| now[i as usize].saturating_sub(self.stats_base[i as usize]);
        let insert = hooks
            .iter()
            .find(|h| h.hook == "conntrack_insert")
            .and_then(|h| h.mechanism);
        let mode = match insert {
            Some(HookKind::Fexit) => "fexit",
            Some(HookKind::Kretprobe) => "kretprobe",
            Some(HookKind::TpBtf) => "kfree_skb",
            _ => "counters",
        };
        let kernel = match (&self.proc_base, ConntrackStats::read()) {
            (Some(before), Ok(after)) => Some(after.delta(before)),
            _ => None,
        };
        let mut clients: Vec<ClientTally> = self.clients.values().cloned().collect();
        for c in &mut clients {
            c.pod = pod_of(c.client);
        }
        Ok(ConntrackReport {
            mode,
            hooks,
            tracer: CtKind::ALL
                .iter()
                .map(|k| (k.name(), self.counts.get(k).copied().unwrap_or(0)))
                .collect(),
            kernel,
            clients,
            events: self.events.clone(),
            events_not_listed: self.events_not_listed.clone(),
            events_in_other_namespaces: self.other_netns,
            ring_full: stat(CT_STAT_RING_FULL),
            read_failed: stat(CT_STAT_READ_FAILED),
            kretprobe_entry_missed: stat(CT_STAT_ENTRY_MISSED),
            undecodable: self.undecodable,
        })
    }
}

/// The conntrack section of a report.
#[derive(Debug, Serialize)]
pub struct ConntrackReport {
    /// `fexit` or `kretprobe` (exact drops and clashes), `kfree_skb` (drops
    /// attributed, clashes from the kernel's counters) or `counters`
    /// (totals only): the mechanism of the `conntrack_insert` hook.
    pub mode: &'static str,
    pub hooks: Vec<HookStatus>,
    /// What the probes attributed, in the traced namespace.
    pub tracer: BTreeMap<&'static str, u64>,
    /// The kernel's own counters over the trace, for the traced namespace.
    pub kernel: Option<ConntrackDelta>,
    pub clients: Vec<ClientTally>,
    /// At most `MAX_EVENTS` events are listed; the counts above include
    /// every one.
    pub events: Vec<CtEventRecord>,
    /// Per kind, the events beyond `MAX_EVENTS` that `events` leaves out.
    pub events_not_listed: BTreeMap<&'static str, u64>,
    pub events_in_other_namespaces: u64,
    pub ring_full: u64,
    pub read_failed: u64,
    /// kretprobe mode: returns whose entry (the skb) was not found.
    pub kretprobe_entry_missed: u64,
    pub undecodable: u64,
}

/// Inode of this thread's network namespace (what the kernel reports as
/// `net->ns.inum`).
pub fn current_netns() -> Option<u32> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

fn read_stats(ebpf: &Ebpf) -> Result<Vec<u64>, ConntrackError> {
    let map = ebpf
        .map("CT_STATS")
        .ok_or(ConntrackError::MissingMap("CT_STATS"))?;
    let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    (0..CT_STATS_LEN)
        .map(|i| Ok(stats.get(&i, 0)?.iter().sum()))
        .collect()
}

fn addr(bytes: &[u8; 16], l3num: u16) -> IpAddr {
    if i32::from(l3num) == libc::AF_INET6 {
        IpAddr::from(*bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

fn protocol(proto: u8) -> String {
    match i32::from(proto) {
        libc::IPPROTO_TCP => "tcp".into(),
        libc::IPPROTO_UDP => "udp".into(),
        libc::IPPROTO_ICMP => "icmp".into(),
        other => format!("proto{other}"),
    }
}

fn tuple(t: &CtTuple) -> String {
    format!(
        "{}:{} -> {}:{}",
        addr(&t.src, t.l3num),
        t.sport,
        addr(&t.dst, t.l3num),
        t.dport
    )
}
