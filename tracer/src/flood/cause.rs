//! Why a flood episode started, from the FDB and neighbour events of the
//! trace and the FDB as it was when the trace started.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::flood::{FloodCause, cause, fdb_reason};

use super::{episode::Flow, fdb::FdbEntry};

/// What started a flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// The entry was idle for the bridge's ageing time: its owner stayed
    /// silent while others kept sending to it.
    AgedOut,
    /// The entry's port went down or left the bridge (its veth deleted):
    /// the owner is gone, the senders still use its MAC.
    PortRemoved,
    /// Removed while fresh on a live port: flushed or deleted by hand.
    FdbEntryRemoved,
    /// Address resolution for the destination failed.
    NeighbourFailed,
    /// Not in the FDB when the trace started although its owner, a pod on
    /// this node, was there: learned and removed before the trace.
    DeletedBeforeTrace,
    /// No port of the node had the MAC: the bridge never learned it.
    NeverLearned,
    /// In the FDB at the start, and no removal seen (see
    /// `cause_events_dropped`).
    Unexplained,
}

impl CauseKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::AgedOut => "aged_out",
            Self::PortRemoved => "port_removed",
            Self::FdbEntryRemoved => "fdb_entry_removed",
            Self::NeighbourFailed => "neighbour_failed",
            Self::DeletedBeforeTrace => "deleted_before_trace",
            Self::NeverLearned => "never_learned",
            Self::Unexplained => "unexplained",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FloodCauseReport {
    pub kind: CauseKind,
    /// When the explaining event happened, seconds since the trace started.
    pub at_s: Option<f64>,
    /// The port the destination's FDB entry pointed to, when known.
    pub port: Option<String>,
    pub detail: String,
}

/// What the causes are judged from.
pub struct Evidence<'a> {
    pub causes: &'a [FloodCause],
    /// The trace's start (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// The traced bridges' FDB at the start, by MAC.
    pub fdb_at_start: &'a BTreeMap<[u8; 6], FdbEntry>,
    /// The pods' MACs at the start, with their host port.
    pub pods_at_start: &'a BTreeMap<[u8; 6], u32>,
    pub name_of: &'a dyn Fn(u32) -> String,
}

impl Evidence<'_> {
    fn secs(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    /// Why the flood of `flow` over `start_ns..=end_ns` started: the latest
    /// removal of its destination's FDB entry not followed by a re-learn
    /// before the start, else a failed resolution of its destination IP,
    /// else the FDB at the start of the trace.
    pub fn explain(&self, flow: &Flow, start_ns: u64, end_ns: u64) -> FloodCauseReport {
        // The bridge floods as soon as an entry has *expired*, but deletes it
        // (and fires fdb_delete) only when its garbage collection runs, up to
        // an ageing interval later: a removal before the episode ends counts.
        let bound = end_ns.max(start_ns.saturating_add(1_000_000_000));
        let of_mac = |kind| {
            self.causes
                .iter()
                .filter(move |c| c.kind == kind && c.mac == flow.dst_mac && c.ts_ns <= bound)
        };
        let removal = of_mac(cause::FDB_DELETE)
            .max_by_key(|c| c.ts_ns)
            .filter(|d| {
                !of_mac(cause::FDB_UPDATE).any(|l| l.ts_ns > d.ts_ns && l.ts_ns < start_ns)
            });
        if let Some(d) = removal {
            return self.removed(d);
        }
        let dead = self
            .causes
            .iter()
            .filter(|c| c.ts_ns <= bound)
            .filter(|c| {
                (c.kind == cause::NEIGH_DEAD || c.kind == cause::NEIGH_FAILED)
                    && c.family == AF_INET
                    && c.addr[..4] == flow.dst_ip
            })
            .max_by_key(|c| c.ts_ns);
        if let Some(c) = dead {
            return FloodCauseReport {
                kind: CauseKind::NeighbourFailed,
                at_s: Some(self.secs(c.ts_ns)),
                port: None,
                detail: format!(
                    "ARP for {} failed (namespace {}, {})",
                    std::net::Ipv4Addr::new(c.addr[0], c.addr[1], c.addr[2], c.addr[3]),
                    c.netns,
                    (self.name_of)(c.ifindex)
                ),
            };
        }
        self.at_trace_start(flow)
    }

    fn removed(&self, d: &FloodCause) -> FloodCauseReport {
        let m = mac(&d.mac);
        let port = (self.name_of)(d.ifindex);
        let (kind, detail) = match d.state {
            fdb_reason::AGED_OUT => (
                CauseKind::AgedOut,
                format!(
                    "the bridge's entry for {m} (on {port}) aged out: its owner sent nothing for the bridge's ageing_time while others kept sending to it; the bridge floods until it hears from {m} again"
                ),
            ),
            fdb_reason::PORT_DISABLED => (
                CauseKind::PortRemoved,
                format!(
                    "{port}, the port {m} was learned on, went down or left the bridge (pod deleted?): its entries were flushed, and frames still sent to {m} are flooded until the senders' ARP entries expire"
                ),
            ),
            _ => (
                CauseKind::FdbEntryRemoved,
                format!(
                    "the entry for {m} (on {port}) was removed while fresh on a live port: flushed or deleted (bridge fdb del / flush)"
                ),
            ),
        };
        FloodCauseReport {
            kind,
            at_s: Some(self.secs(d.ts_ns)),
            port: Some(port),
            detail,
        }
    }

    /// No removal in the trace: what the FDB said when it started.
    fn at_trace_start(&self, flow: &Flow) -> FloodCauseReport {
        let m = mac(&flow.dst_mac);
        let (kind, port, detail) = match (
            self.fdb_at_start.get(&flow.dst_mac),
            self.pods_at_start.get(&flow.dst_mac),
        ) {
            (Some(entry), _) if entry.expired => (
                CauseKind::AgedOut,
                Some(entry.port),
                format!(
                    "the entry for {m} had already expired when the trace started (idle longer than the bridge's ageing_time): its owner stayed silent"
                ),
            ),
            (Some(entry), _) => (
                CauseKind::Unexplained,
                Some(entry.port),
                format!(
                    "{m} was in the FDB when the trace started and no removal was seen (see cause_events_dropped)"
                ),
            ),
            (None, Some(&port)) => (
                CauseKind::DeletedBeforeTrace,
                Some(port),
                format!(
                    "{m}, the pod behind {}, was not in the bridge's FDB when the trace started: its entry was removed before the trace (aged out while the pod stayed silent, or flushed) — or the pod has never sent a frame",
                    (self.name_of)(port)
                ),
            ),
            (None, None) => (
                CauseKind::NeverLearned,
                None,
                format!(
                    "no port of this node had {m} when the trace started and the bridge had not learned it: the destination is not on this node (a deleted pod, a stale ARP entry in the sender)"
                ),
            ),
        };
        FloodCauseReport {
            kind,
            at_s: None,
            port: port.map(|p| (self.name_of)(p)),
            detail,
        }
    }
}

/// `AF_INET` (include/linux/socket.h).
const AF_INET: u16 = 2;

pub fn mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn flow() -> Flow {
        Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: DST,
            dst_ip: [10, 0, 0, 2],
            ip_proto: 17,
            dport: 9000,
        }
    }

    fn fdb(kind: u32, ts_ns: u64, reason: u16) -> FloodCause {
        FloodCause {
            ts_ns,
            kind,
            ifindex: 5,
            mac: DST,
            state: reason,
            ..FloodCause::default()
        }
    }

    fn explain(
        causes: &[FloodCause],
        fdb_at_start: &BTreeMap<[u8; 6], FdbEntry>,
        pods: &BTreeMap<[u8; 6], u32>,
        start: u64,
    ) -> FloodCauseReport {
        let name_of = |i: u32| format!("if{i}");
        Evidence {
            causes,
            start_ns: S,
            fdb_at_start,
            pods_at_start: pods,
            name_of: &name_of,
        }
        .explain(&flow(), start, start + 5 * S)
    }

    #[test]
    fn removals_say_why() {
        let (none, no_pods) = (BTreeMap::new(), BTreeMap::new());
        for (reason, kind) in [
            (fdb_reason::AGED_OUT, CauseKind::AgedOut),
            (fdb_reason::PORT_DISABLED, CauseKind::PortRemoved),
            (fdb_reason::REMOVED, CauseKind::FdbEntryRemoved),
        ] {
            let c = explain(
                &[fdb(cause::FDB_DELETE, 3 * S, reason)],
                &none,
                &no_pods,
                3 * S,
            );
            assert_eq!(c.kind, kind);
            assert_eq!(c.at_s, Some(2.0));
            assert_eq!(c.port.as_deref(), Some("if5"));
        }
    }

    #[test]
    fn a_removal_followed_by_a_relearn_explains_nothing_later() {
        let (none, no_pods) = (BTreeMap::new(), BTreeMap::new());
        let causes = [
            fdb(cause::FDB_DELETE, 2 * S, fdb_reason::AGED_OUT),
            fdb(cause::FDB_UPDATE, 3 * S, 0),
        ];
        let c = explain(&causes, &none, &no_pods, 10 * S);
        assert_eq!(c.kind, CauseKind::NeverLearned, "{c:?}");
    }

    #[test]
    fn the_start_up_fdb_tells_deleted_before_from_never_learned() {
        let (none, no_pods) = (BTreeMap::new(), BTreeMap::new());
        let pods = BTreeMap::from([(DST, 5)]);
        let c = explain(&[], &none, &pods, S);
        assert_eq!(c.kind, CauseKind::DeletedBeforeTrace);
        assert_eq!(c.port.as_deref(), Some("if5"));
        assert_eq!(
            explain(&[], &none, &no_pods, S).kind,
            CauseKind::NeverLearned
        );
        let expired = BTreeMap::from([(
            DST,
            FdbEntry {
                port: 5,
                expired: true,
            },
        )]);
        assert_eq!(explain(&[], &expired, &pods, S).kind, CauseKind::AgedOut);
    }
}
