//! The live, top-like view of `tracer watch` on a terminal: one row per pod
//! interface (pod name first, most troubled first), refreshed every
//! interval from the session's snapshots.

use std::{collections::HashMap, fmt::Write as _};

use crate::{escape::Shown, report::Report};

/// xterm's alternate screen (DEC private mode 1049, what `top` and `less`
/// use) and cursor visibility (mode 25).
const ENTER_ALT_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE_ALT_SCREEN: &str = "\x1b[?25h\x1b[?1049l";

/// The live view's terminal: entered on creation, and left on drop, which
/// restores what the terminal showed before. Dropped on every way out of
/// `tracer watch`: the end of `--duration`, Ctrl-C or SIGTERM (the session
/// returns its report; the view is left before the report is printed), an
/// error, and a panic (unwinding).
pub struct AltScreen(());

impl AltScreen {
    pub fn enter() -> Self {
        write_now(ENTER_ALT_SCREEN);
        Self(())
    }
}

impl Drop for AltScreen {
    fn drop(&mut self) {
        write_now(LEAVE_ALT_SCREEN);
    }
}

fn write_now(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Renders one screen. `previous` (the last screen's snapshot) turns
/// counters into rates.
pub fn render(report: &Report, previous: Option<&Report>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tracer {} · kernel {} · datapath {:?} · {:.0} s · Ctrl-C for the report",
        report.tracer_version, report.kernel, report.datapath, report.duration_seconds
    );
    for f in &report.findings {
        let mark = f.severity.mark();
        let _ = writeln!(out, "[{mark}] {}", f.summary);
    }
    interface_table(report, previous, &mut out);
    let lost: Vec<String> = report
        .losses
        .iter()
        .filter(|l| l.count > 0)
        .map(|l| format!("{}={}", l.reason, l.count))
        .collect();
    if !lost.is_empty() {
        let _ = writeln!(out, "\nLOSSES: {}", lost.join(" "));
    }
    out
}

/// A row per interface, the most troubled first: rates since the previous
/// screen, DNS latency and losses, flooded copies.
fn interface_table(report: &Report, previous: Option<&Report>, out: &mut String) {
    let elapsed = previous.map_or(report.duration_seconds, |p| {
        (report.duration_seconds - p.duration_seconds).max(0.001)
    });
    let before: HashMap<u32, (u64, u64)> = previous
        .map(|p| {
            p.interfaces
                .iter()
                .map(|i| (i.ifindex, (i.ingress.packets, i.egress.packets)))
                .collect()
        })
        .unwrap_or_default();
    let dns_of = |name: &str| {
        report
            .dns
            .latency
            .iter()
            .filter(|l| l.interface == name)
            .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
    };
    let tally_of = |name: &str| {
        report
            .dns
            .per_interface
            .iter()
            .find(|t| t.interface == name)
    };
    let victim_of = |name: &str| {
        report
            .flood
            .victims
            .iter()
            .find(|v| v.interface == name)
            .map_or(0, |v| v.victim_packets)
    };
    let _ = writeln!(
        out,
        "\n{:<28} {:<16} {:<8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>9}",
        "POD",
        "INTERFACE",
        "KIND",
        "IN PPS",
        "OUT PPS",
        "DNS ANS",
        "P50 MS",
        "P99 MS",
        "SLOW",
        "LOST",
        "PAIRS",
        "FLOODED"
    );
    // The pods that suffer most come first (crate::report::rank).
    for (row, _) in crate::report::rank::by_trouble(report) {
        let (in0, out0) = before.get(&row.ifindex).copied().unwrap_or((0, 0));
        let pps = |now: u64, then: u64| now.saturating_sub(then) as f64 / elapsed;
        let dns = dns_of(&row.name);
        let tally = tally_of(&row.name);
        let kind = crate::escape::terminal(row.kind.label());
        let name = if row.vanished {
            format!("{} (gone)", Shown(&row.name))
        } else {
            crate::escape::terminal(&row.name)
        };
        let _ = writeln!(
            out,
            "{:<28} {:<16} {:<8} {:>9.0} {:>9.0} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>9}",
            crate::escape::terminal(crate::report::rank::pod(row)),
            name,
            kind,
            pps(row.ingress.packets, in0),
            pps(row.egress.packets, out0),
            dns.map_or(0, |d| d.answers),
            dns.map_or_else(|| "-".into(), |d| format!("{:.1}", d.p50_ms)),
            dns.map_or_else(|| "-".into(), |d| format!("{:.1}", d.p99_ms)),
            tally.map_or(0, |t| t.slow_answers),
            tally.map_or(0, |t| t.unanswered_sends),
            tally.map_or(0, |t| t.parallel_pairs),
            victim_of(&row.name),
        );
    }
}
