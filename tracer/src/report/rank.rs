//! Which pods suffer most: the order of the live view's and the table's
//! interface rows, and the pods `tracer check` names. People think in
//! pods, so every row carries the pod (`namespace/name`, from
//! [`crate::pods`]) next to its host interface.

use super::{InterfaceReport, Report};

/// What one host interface's pod went through, in the order that sorts
/// rows: lost DNS answers and conntrack drops first (each costs a client
/// a resolver timeout), then flooded copies received, slow answers, and the
/// worst DNS p99.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Trouble {
    pub unanswered: u64,
    pub conntrack_drops: u64,
    pub flooded: u64,
    pub slow: u64,
    pub p99_ms: f64,
}

impl Trouble {
    /// The figures of `row` in `report`.
    pub fn of(report: &Report, row: &InterfaceReport) -> Self {
        let name = row.name.as_str();
        let tally = report
            .dns
            .per_interface
            .iter()
            .find(|t| t.interface == name);
        Self {
            unanswered: tally.map_or(0, |t| t.unanswered_sends),
            conntrack_drops: row.pod.as_deref().map_or(0, |pod| {
                report
                    .conntrack
                    .clients
                    .iter()
                    .filter(|c| c.pod.as_deref() == Some(pod))
                    .map(|c| c.insert_drops.saturating_add(c.unconfirmed_drops))
                    .sum()
            }),
            flooded: report
                .flood
                .victims
                .iter()
                .filter(|v| v.interface == name)
                .map(|v| v.victim_packets)
                .sum(),
            slow: tally.map_or(0, |t| t.slow_answers),
            p99_ms: report
                .dns
                .latency
                .iter()
                .filter(|l| l.interface == name)
                .map(|l| l.p99_ms)
                .fold(0.0, f64::max),
        }
    }

    fn key(&self) -> (u64, u64, u64, f64) {
        (
            self.unanswered.saturating_add(self.conntrack_drops),
            self.flooded,
            self.slow,
            self.p99_ms,
        )
    }

    /// Lost, dropped, flooded or slow: something a person should look at.
    pub fn is_trouble(&self) -> bool {
        let (lost, flooded, slow, _) = self.key();
        lost + flooded + slow > 0
    }

    /// `3 unanswered, 2000 flooded copies` — the non-zero parts.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.unanswered, "unanswered DNS sends"),
            (self.conntrack_drops, "conntrack drops"),
            (self.flooded, "flooded copies"),
            (self.slow, "slow DNS answers"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        parts.join(", ")
    }
}

/// The pod behind a row, `-` when attribution found none.
pub fn pod(row: &InterfaceReport) -> &str {
    row.pod.as_deref().unwrap_or("-")
}

/// Every interface row with its figures, the most troubled first (ties:
/// rows with a pod first, then by pod and interface name, so the order is
/// stable between redraws).
pub fn by_trouble(report: &Report) -> Vec<(&InterfaceReport, Trouble)> {
    let mut rows: Vec<_> = report
        .interfaces
        .iter()
        .map(|row| (row, Trouble::of(report, row)))
        .collect();
    rows.sort_by(|(ra, a), (rb, b)| {
        let (ka, kb) = (a.key(), b.key());
        kb.0.cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
            .then(kb.3.total_cmp(&ka.3))
            .then(ra.pod.is_none().cmp(&rb.pod.is_none()))
            .then(pod(ra).cmp(pod(rb)))
            .then(ra.name.cmp(&rb.name))
    });
    rows
}

/// The `n` most troubled pods (or interfaces, when the pod is unknown) as
/// `shop/web-1 (azv1234: 3 unanswered DNS sends)`.
pub fn most_affected(report: &Report, n: usize) -> Vec<String> {
    by_trouble(report)
        .into_iter()
        .filter(|(_, t)| t.is_trouble())
        .take(n)
        .map(|(row, t)| match &row.pod {
            Some(pod) => format!("{pod} ({}: {})", row.name, t.describe()),
            None => format!("{} ({})", row.name, t.describe()),
        })
        .collect()
}
