//! Bridge flooding: the collector side of `tracer-ebpf/src/flood.rs`.

pub mod cause;
pub mod collector;
pub mod episode;
pub mod fdb;
pub mod scope;

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapError, PerCpuHashMap},
    programs::TcAttachType,
};
use tracer_common::flood::{PORT_MAC_SLOTS, PortFlood, PortMac};

use crate::attach::TcProgram;

/// The victim counter, on the egress of every host-side port.
pub const PROGRAMS: [TcProgram; 1] = [TcProgram {
    name: "flood_tc_egress",
    attach_type: TcAttachType::Egress,
}];

/// Errors of the flood collector.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("flood map: {0}")]
    Map(#[from] MapError),
    #[error("flood cause events: {0}")]
    Ring(String),
    #[error("network namespace or netlink: {0}")]
    Netns(#[source] std::io::Error),
    #[error("reading the bridges' FDB: {0}")]
    Fdb(String),
}

/// Tells the victim counter which MAC each port's pod has: in the array
/// slot of its ifindex, or the hash past [`PORT_MAC_SLOTS`].
pub fn set_port_macs(ebpf: &mut Ebpf, macs: &[(u32, [u8; 6])]) -> Result<(), FloodError> {
    let (low, high): (Vec<_>, Vec<_>) = macs.iter().partition(|(i, _)| *i < PORT_MAC_SLOTS);
    let value = |mac: [u8; 6]| PortMac { mac, _pad: [0; 2] };
    let map = ebpf
        .map_mut("FLOOD_PORT_MAC_SLOTS")
        .ok_or(FloodError::MissingMap("FLOOD_PORT_MAC_SLOTS"))?;
    let mut slots: Array<_, PortMac> = Array::try_from(map)?;
    for &(ifindex, mac) in low {
        slots.set(ifindex, value(mac), 0)?;
    }
    let map = ebpf
        .map_mut("FLOOD_PORT_MACS")
        .ok_or(FloodError::MissingMap("FLOOD_PORT_MACS"))?;
    let mut map: BpfHashMap<_, u32, PortMac> = BpfHashMap::try_from(map)?;
    for &(ifindex, mac) in high {
        map.insert(ifindex, value(mac), 0)?;
    }
    Ok(())
}

/// Deletes vanished port `ifindex`'s entries: its counters and its pod's
/// MAC (hash, or zeroes its array slot).
pub fn forget_port(ebpf: &mut Ebpf, ifindex: u32) -> Result<(), FloodError> {
    let map = ebpf
        .map_mut("FLOOD_PORTS")
        .ok_or(FloodError::MissingMap("FLOOD_PORTS"))?;
    let mut ports: PerCpuHashMap<_, u32, PortFlood> = PerCpuHashMap::try_from(map)?;
    let _ = ports.remove(&ifindex);
    if ifindex < PORT_MAC_SLOTS {
        let map = ebpf
            .map_mut("FLOOD_PORT_MAC_SLOTS")
            .ok_or(FloodError::MissingMap("FLOOD_PORT_MAC_SLOTS"))?;
        let mut slots: Array<_, PortMac> = Array::try_from(map)?;
        slots.set(ifindex, PortMac::default(), 0)?;
    } else {
        let map = ebpf
            .map_mut("FLOOD_PORT_MACS")
            .ok_or(FloodError::MissingMap("FLOOD_PORT_MACS"))?;
        let mut macs: BpfHashMap<_, u32, PortMac> = BpfHashMap::try_from(map)?;
        let _ = macs.remove(&ifindex);
    }
    Ok(())
}

/// Per-port flood counters summed over CPUs.
pub fn read_ports(ebpf: &Ebpf) -> Result<BTreeMap<u32, PortFlood>, FloodError> {
    let map = ebpf
        .map("FLOOD_PORTS")
        .ok_or(FloodError::MissingMap("FLOOD_PORTS"))?;
    let map: PerCpuHashMap<_, u32, PortFlood> = PerCpuHashMap::try_from(map)?;
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (ifindex, per_cpu) = entry?;
        let total: &mut PortFlood = out.entry(ifindex).or_default();
        for value in per_cpu.iter() {
            total.add(value);
        }
    }
    Ok(out)
}
