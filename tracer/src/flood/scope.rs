//! Which FDB and neighbour events are this node's: the kernel programs
//! send only events of the bridges in `FLOOD_BRIDGES` and of the namespaces
//! in `FLOOD_NETNS` (the tracepoints themselves are machine-wide).

use std::{collections::BTreeSet, os::unix::fs::MetadataExt as _};

use aya::{Ebpf, maps::HashMap as BpfHashMap};
use tracer_common::flood::BridgeKey;

use super::FloodError;
use crate::{
    interfaces::{Interface, Kind},
    pods::PodIndex,
};

/// What the node is: its own namespace, its traced bridges, its pods'
/// namespaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub node_netns: u32,
    pub bridges: BTreeSet<u32>,
    pub pod_netns: BTreeSet<u32>,
}

impl Scope {
    /// The node's scope: the calling thread's namespace (the one tracer
    /// traces, after `--netns`), the bridges among `traced`, the namespaces
    /// of the pods `pods` found.
    pub fn of_node(traced: &[&Interface], pods: &PodIndex) -> Result<Self, FloodError> {
        let node_netns = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(FloodError::Netns)?
            .ino();
        Ok(Self {
            node_netns: u32::try_from(node_netns).unwrap_or(0),
            bridges: traced
                .iter()
                .filter(|i| i.kind == Kind::Bridge)
                .map(|i| i.index)
                .collect(),
            pod_netns: pods
                .by_ifindex()
                .into_iter()
                .filter_map(|(_, pod)| pod.netns.as_ref())
                .filter_map(|link| u32::try_from(link.inode).ok())
                .collect(),
        })
    }

    fn bridge_keys(&self) -> BTreeSet<BridgeKey> {
        self.bridges
            .iter()
            .filter(|_| self.node_netns != 0)
            .map(|&ifindex| BridgeKey {
                netns: self.node_netns,
                ifindex,
            })
            .collect()
    }

    fn netns(&self) -> BTreeSet<u32> {
        let mut all = self.pod_netns.clone();
        // 0 is no namespace (the empty scope applied first).
        all.insert(self.node_netns);
        all.remove(&0);
        all
    }

    /// Makes the kernel's filter maps equal to `self`, given what `before`
    /// put there.
    pub fn apply(&self, ebpf: &mut Ebpf, before: &Self) -> Result<(), FloodError> {
        sync(
            ebpf,
            "FLOOD_BRIDGES",
            &before.bridge_keys(),
            &self.bridge_keys(),
        )?;
        sync(ebpf, "FLOOD_NETNS", &before.netns(), &self.netns())
    }
}

fn sync<K: aya::Pod + Ord>(
    ebpf: &mut Ebpf,
    name: &'static str,
    before: &BTreeSet<K>,
    now: &BTreeSet<K>,
) -> Result<(), FloodError> {
    let map = ebpf.map_mut(name).ok_or(FloodError::MissingMap(name))?;
    let mut map: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map)?;
    for key in before.difference(now) {
        map.remove(key)?;
    }
    for key in now.difference(before) {
        map.insert(key, 1, 0)?;
    }
    Ok(())
}
