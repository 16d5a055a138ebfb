//! DNS figures counted once per exchange, from the client's side, and where
//! each lost exchange was lost.
//!
//! The collector keeps its tallies per (interface, query direction); this
//! module folds them by [`Side`]: the figures a finding rests on come from
//! the client-side observations (the client's port), or, when no client is
//! traced (clients off the node), from the server-side ones — and say which.
//!
//! A lost send is located by what the server's port saw of the same query
//! (same client address and port, transport and DNS id; the server address
//! may differ, the service DNAT rewrote it between the two ports):
//! - the server's port saw it re-sent while still unanswered, or swept it
//!   unanswered: the query reached the server's port and no answer left;
//! - the server's port saw it asked again after its answer had passed: the
//!   answer left the server's port and never reached the client;
//! - the server's port is traced and saw none of that: the query never
//!   reached it (or went to a server whose port is not traced);
//! - no server port is traced: unknown.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{collector::TimeoutModes, role::Side};

/// Where a lost send was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossLocation {
    /// The query never reached the (traced) DNS server's port.
    BeforeServerPort,
    /// It reached the server's port and no answer left it: the server pod
    /// (or its upstream) dropped it or never answered.
    InServer,
    /// The answer left the server's port and never reached the client.
    AfterServerPort,
    /// No DNS server port is traced.
    Unknown,
}

impl LossLocation {
    pub const ALL: [Self; 4] = [
        Self::BeforeServerPort,
        Self::InServer,
        Self::AfterServerPort,
        Self::Unknown,
    ];

    /// Stable snake_case name (reports, metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Self::BeforeServerPort => "before_server_port",
            Self::InServer => "in_server",
            Self::AfterServerPort => "after_server_port",
            Self::Unknown => "unknown",
        }
    }

    /// For a person: where it was lost.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::BeforeServerPort => "never reached the DNS server's port",
            Self::InServer => "reached the DNS server's port and no answer left it",
            Self::AfterServerPort => {
                "answered: the answer left the server's port and never reached the client"
            }
            Self::Unknown => "lost somewhere (the DNS server's port is not traced)",
        }
    }
}

/// Identifies one query across interfaces: the client's socket, the
/// transport and the DNS id (the server address is left out: DNAT changes it
/// between the client's port and the server's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExchangeId {
    pub family: u8,
    pub client: [u8; 16],
    pub client_port: u16,
    pub proto: u8,
    pub id: u16,
}

/// What one observation point saw go wrong with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossSign {
    /// Re-sent while its earlier send was unanswered here.
    ResentUnanswered,
    /// Asked again after its answer passed here.
    ResentAfterAnswer,
    /// Swept: never answered here.
    NeverAnswered,
}

/// Tallies of one side (summed over its observations).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SideTally {
    pub slow_answers: u64,
    /// Re-sends of a query (same socket, same id) still unanswered on this
    /// side: each stands for one lost send (counted in `lost_sends` too, as
    /// that one send, not twice).
    pub retries: u64,
    pub retry_modes: TimeoutModes,
    /// Re-sends asked again although the answer had passed this side.
    pub retries_after_answer: u64,
    /// Sends that got no answer: each re-send of a still unanswered query,
    /// and the last send of a query never answered. A re-send is counted
    /// here *or* as a retry after an answer, never both ways.
    pub lost_sends: u64,
    /// Queries never answered at all.
    pub never_answered: u64,
    /// A + AAAA pairs for one name from one socket within the window.
    pub parallel_pairs: u64,
}

impl SideTally {
    pub fn add(&mut self, other: &Self) {
        self.slow_answers += other.slow_answers;
        self.retries += other.retries;
        self.retry_modes.merge(&other.retry_modes);
        self.retries_after_answer += other.retries_after_answer;
        self.lost_sends += other.lost_sends;
        self.never_answered += other.never_answered;
        self.parallel_pairs += other.parallel_pairs;
    }
}

/// Latency of one side, all its interfaces and servers merged.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SideLatency {
    pub answers: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The DNS figures of a trace, each exchange counted once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsExchanges {
    /// The side the figures below were observed on: `client` (the clients'
    /// ports), or `server` when no client-side observation exists (the
    /// clients are not on traced interfaces).
    pub observed_at: Side,
    /// Answers matched to their query, on that side.
    pub answers: u64,
    #[serde(flatten)]
    pub tally: SideTally,
    /// Lost sends by where they were lost.
    pub lost_at: BTreeMap<LossLocation, u64>,
    /// Latency where the clients wait (the client side), if traced.
    pub client_latency: Option<SideLatency>,
    /// Latency at the DNS servers' own ports, if traced.
    pub server_latency: Option<SideLatency>,
}

/// Locates one lost send seen on `observed` by what the other side saw of
/// the same query. `server_traced`: some server-side observation exists.
pub fn locate(
    observed_side: Side,
    sign: LossSign,
    server_signs: &[LossSign],
    server_traced: bool,
) -> LossLocation {
    if observed_side == Side::Server {
        return match sign {
            LossSign::ResentAfterAnswer => LossLocation::AfterServerPort,
            _ => LossLocation::InServer,
        };
    }
    if server_signs.contains(&LossSign::ResentAfterAnswer) {
        LossLocation::AfterServerPort
    } else if server_signs
        .iter()
        .any(|s| matches!(s, LossSign::ResentUnanswered | LossSign::NeverAnswered))
    {
        LossLocation::InServer
    } else if server_traced {
        LossLocation::BeforeServerPort
    } else {
        LossLocation::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_send_is_located_by_the_server_side() {
        let lost = LossSign::ResentUnanswered;
        assert_eq!(
            locate(Side::Client, lost, &[LossSign::ResentUnanswered], true),
            LossLocation::InServer
        );
        assert_eq!(
            locate(Side::Client, lost, &[LossSign::NeverAnswered], true),
            LossLocation::InServer
        );
        assert_eq!(
            locate(Side::Client, lost, &[LossSign::ResentAfterAnswer], true),
            LossLocation::AfterServerPort
        );
        assert_eq!(
            locate(Side::Client, lost, &[], true),
            LossLocation::BeforeServerPort
        );
        assert_eq!(
            locate(Side::Client, lost, &[], false),
            LossLocation::Unknown
        );
        assert_eq!(
            locate(Side::Server, LossSign::NeverAnswered, &[], true),
            LossLocation::InServer
        );
    }
}
