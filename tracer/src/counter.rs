//! Packet and byte counters per interface and TC direction: the collector side
//! of `tracer-ebpf/src/counter.rs`.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf,
    maps::{MapError, PerCpuHashMap, PerCpuValues},
    programs::TcAttachType,
};
use tracer_common::counter::{Direction, IfaceCounters, IfaceKey};

use crate::attach::TcProgram;

/// The counter programs, one per TC direction.
pub const PROGRAMS: [TcProgram; 2] = [
    TcProgram {
        name: "counter_tc_ingress",
        attach_type: TcAttachType::Ingress,
    },
    TcProgram {
        name: "counter_tc_egress",
        attach_type: TcAttachType::Egress,
    },
];

const MAP: &str = "COUNTERS";

/// Counters summed over CPUs, by (ifindex, direction).
pub type Snapshot = BTreeMap<(u32, Direction), IfaceCounters>;

/// Reads and sums the per-CPU counters.
pub fn read(ebpf: &Ebpf) -> Result<Snapshot, MapError> {
    let map = ebpf.map(MAP).ok_or_else(|| MapError::InvalidName {
        name: MAP.to_owned(),
    })?;
    let map: PerCpuHashMap<_, IfaceKey, IfaceCounters> = PerCpuHashMap::try_from(map)?;
    let mut snapshot = Snapshot::new();
    for entry in map.iter() {
        let (key, per_cpu): (IfaceKey, PerCpuValues<IfaceCounters>) = entry?;
        let Some(direction) = Direction::from_raw(key.direction) else {
            continue;
        };
        let total = snapshot.entry((key.ifindex, direction)).or_default();
        for value in per_cpu.iter() {
            total.add(value);
        }
    }
    Ok(snapshot)
}

/// Deletes the counters of `ifindex` (both directions) from the kernel
/// map, once its interface is gone: ifindexes are never reused while a
/// namespace lives, so without this every pod a node ever ran would hold
/// two of the map's entries, and a node with churn would fill it
/// (`counter_map_full`) after a few thousand pods.
pub fn forget(ebpf: &mut Ebpf, ifindexes: &BTreeSet<u32>) -> Result<(), MapError> {
    let map = ebpf.map_mut(MAP).ok_or_else(|| MapError::InvalidName {
        name: MAP.to_owned(),
    })?;
    let mut map: PerCpuHashMap<_, IfaceKey, IfaceCounters> = PerCpuHashMap::try_from(map)?;
    for (&ifindex, direction) in ifindexes
        .iter()
        .flat_map(|i| [(i, Direction::Ingress), (i, Direction::Egress)])
    {
        let key = IfaceKey {
            ifindex,
            direction: direction as u32,
        };
        match map.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// `after - before`, per key (keys only in `after` count from zero).
pub fn delta(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(key, now)| {
            let then = before.get(key).copied().unwrap_or_default();
            let diff = IfaceCounters {
                packets: now.packets.wrapping_sub(then.packets),
                bytes: now.bytes.wrapping_sub(then.bytes),
            };
            (*key, diff)
        })
        .collect()
}
