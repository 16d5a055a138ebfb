//! Which DNS servers each port's clients sent queries to, and how many of
//! those sends were answered: the traffic side of the `dns_servers`
//! finding ([`super::server_list`] holds the configuration side).
//!
//! Counted in userspace from what the probes already keep, so the kernel
//! programs are unchanged (their verifier budget is tight, see
//! `tracer-ebpf/src/tc.rs`): one send is either the send a matched answer
//! ends (one per answered exchange in `DNS_HIST`), a re-send (a `resent`
//! ring event), the last send of a query that was never answered (swept
//! from `DNS_PENDING`), or the last send of a query still pending when the
//! report is built.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;

use super::role::Side;

/// Sends of one (interface, query direction, server) that are not in the
/// latency histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendTally {
    /// Re-sends seen as they happened (ring events).
    pub resent: u64,
    /// Queries swept as never answered (their last send).
    pub never_answered: u64,
}

/// Key of a [`SendTally`]: ifindex, query direction, server.
pub type SendKey = (u32, u8, IpAddr);

/// Tallies kept by the collector over a trace.
pub type SendTallies = BTreeMap<SendKey, SendTally>;

/// Merges the tallies of interface `ifindex` into interface `into`.
pub fn fold_sends(tallies: &mut SendTallies, ifindex: u32, into: u32) {
    crate::rekey::fold(
        tallies,
        |k| k.0 == ifindex,
        |k| (into, k.1, k.2),
        |total, t| {
            total.resent += t.resent;
            total.never_answered += t.never_answered;
        },
    );
}

/// One server as the clients behind one port used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerUse {
    pub interface: String,
    pub ifindex: u32,
    pub side: Side,
    pub server: IpAddr,
    /// Query packets sent to it (first sends and re-sends).
    pub sends: u64,
    /// Exchanges answered (one answer per exchange).
    pub answered: u64,
    /// Sends no answer came back for (re-sent, never answered, or still
    /// pending at the end).
    pub unanswered_sends: u64,
    /// Queries still waiting for an answer when the report was built.
    pub pending: u64,
}

/// Per (ifindex, query direction, server): answered exchanges from the
/// histograms and pending queries from the pending map, merged with the
/// collector's tallies into rows.
pub struct UseInputs<'a> {
    pub answered: &'a BTreeMap<SendKey, u64>,
    pub pending: &'a BTreeMap<SendKey, u64>,
    pub tallies: &'a SendTallies,
}

/// Builds one row per (port, direction, server) that saw a send.
pub fn rows(
    inputs: &UseInputs<'_>,
    name_of: &dyn Fn(u32) -> String,
    side_of: &dyn Fn(u32, u8) -> Side,
) -> Vec<ServerUse> {
    let mut keys: Vec<SendKey> = inputs
        .answered
        .keys()
        .chain(inputs.pending.keys())
        .chain(inputs.tallies.keys())
        .copied()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let (ifindex, dir, server) = key;
            let answered = inputs.answered.get(&key).copied().unwrap_or(0);
            let pending = inputs.pending.get(&key).copied().unwrap_or(0);
            let t = inputs.tallies.get(&key).copied().unwrap_or_default();
            let sends = answered + t.resent + t.never_answered + pending;
            ServerUse {
                interface: name_of(ifindex),
                ifindex,
                side: side_of(ifindex, dir),
                server,
                sends,
                answered,
                unanswered_sends: sends - answered,
                pending,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_send_is_counted_once() {
        let server: IpAddr = "10.0.0.1".parse().unwrap();
        let key = (7, 0, server);
        // 3 answered exchanges (one re-sent before its answer), one query
        // never answered after 2 re-sends, one still pending.
        let answered = BTreeMap::from([(key, 3)]);
        let pending = BTreeMap::from([(key, 1)]);
        let tallies = BTreeMap::from([(
            key,
            SendTally {
                resent: 3,
                never_answered: 1,
            },
        )]);
        let rows = rows(
            &UseInputs {
                answered: &answered,
                pending: &pending,
                tallies: &tallies,
            },
            &|i| format!("if{i}"),
            &|_, _| Side::Client,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sends, 3 + 3 + 1 + 1);
        assert_eq!(rows[0].answered, 3);
        assert_eq!(rows[0].unanswered_sends, 5);
        assert_eq!(rows[0].interface, "if7");
    }
}
