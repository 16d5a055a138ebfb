//! The bridges' forwarding databases as they were when the trace started:
//! which MACs the bridge knew, and which of those had already expired
//! (`bridge fdb show`'s `stale`). A flood whose destination was missing
//! then, and whose removal the trace therefore never saw, is explained with
//! this and not called "never learned".

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{
    AddressFamily,
    neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState},
};

use super::FloodError;

/// One learned (or static) FDB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port it points to.
    pub port: u32,
    /// Older than the bridge's ageing time, not yet collected: the bridge
    /// already floods frames for it (`fdb_to_nud`: NUD_STALE, br_fdb.c).
    pub expired: bool,
}

/// MAC → entry, over the given bridges. Entries the bridge owns (its ports'
/// own addresses, `permanent`) are left out: nobody floods to them.
pub async fn snapshot(bridges: &BTreeSet<u32>) -> Result<BTreeMap<[u8; 6], FdbEntry>, FloodError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(FloodError::Netns)?;
    let task = tokio::spawn(connection);
    let messages: Result<Vec<NeighbourMessage>, _> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await;
    task.abort();
    Ok(messages
        .map_err(|e| FloodError::Fdb(e.to_string()))?
        .iter()
        .filter_map(|m| entry_of(m, bridges))
        .collect())
}

fn entry_of(msg: &NeighbourMessage, bridges: &BTreeSet<u32>) -> Option<([u8; 6], FdbEntry)> {
    if msg.header.state == NeighbourState::Permanent {
        return None;
    }
    let mut mac = None;
    let mut controller = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            NeighbourAttribute::Controller(index) => controller = Some(*index),
            _ => {}
        }
    }
    bridges.contains(&controller?).then_some((
        mac?,
        FdbEntry {
            port: msg.header.ifindex,
            expired: msg.header.state == NeighbourState::Stale,
        },
    ))
}
