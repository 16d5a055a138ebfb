//! The report `tracer watch` prints at the end: per interface counters and
//! every loss, as a table or as versioned JSON.

use std::fmt::Write as _;

use serde::Serialize;
use tracer_common::counter::{Direction, IfaceCounters};

use crate::{counter::Snapshot, interfaces::Interface};

/// Bumped on any incompatible change of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tracer_version: &'static str,
    pub kernel: String,
    /// `--netns` if given.
    pub netns: Option<String>,
    pub duration_seconds: f64,
    pub interfaces: Vec<InterfaceReport>,
    /// Every loss counter, zeros included.
    pub losses: Vec<LossReport>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceReport {
    pub name: String,
    pub ifindex: u32,
    pub kind: crate::interfaces::Kind,
    /// Bridge (or other controller) this interface is a port of.
    pub master: Option<String>,
    /// TC ingress: on a host-side pod veth, what the pod sent.
    pub ingress: Counts,
    /// TC egress: on a host-side pod veth, what was delivered to the pod.
    pub egress: Counts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

impl From<IfaceCounters> for Counts {
    fn from(c: IfaceCounters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LossReport {
    pub reason: &'static str,
    pub count: u64,
}

/// Builds per-interface rows for the traced interfaces from a counter delta.
pub fn interfaces(
    traced: &[Interface],
    all: &[Interface],
    counts: &Snapshot,
) -> Vec<InterfaceReport> {
    let get = |index, dir| {
        counts
            .get(&(index, dir))
            .copied()
            .unwrap_or_default()
            .into()
    };
    traced
        .iter()
        .map(|iface| InterfaceReport {
            name: iface.name.clone(),
            ifindex: iface.index,
            kind: iface.kind.clone(),
            master: iface
                .master
                .and_then(|m| all.iter().find(|i| i.index == m))
                .map(|m| m.name.clone()),
            ingress: get(iface.index, Direction::Ingress),
            egress: get(iface.index, Direction::Egress),
        })
        .collect()
}

impl Report {
    /// Human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tracer {} · kernel {}{} · {:.1} s",
            self.tracer_version,
            self.kernel,
            self.netns
                .as_deref()
                .map(|n| format!(" · netns {n}"))
                .unwrap_or_default(),
            self.duration_seconds
        );
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<10} {:>12} {:>14} {:>12} {:>14}",
            "INTERFACE", "KIND", "MASTER", "IN PKTS", "IN BYTES", "OUT PKTS", "OUT BYTES"
        );
        for row in &self.interfaces {
            let kind = match &row.kind {
                crate::interfaces::Kind::Other(k) => k.as_str(),
                k => kind_name(k),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:<10} {:>12} {:>14} {:>12} {:>14}",
                row.name,
                kind,
                row.master.as_deref().unwrap_or("-"),
                row.ingress.packets,
                row.ingress.bytes,
                row.egress.packets,
                row.egress.bytes
            );
        }
        let losses: Vec<String> = self
            .losses
            .iter()
            .map(|l| format!("{}={}", l.reason, l.count))
            .collect();
        let _ = writeln!(out, "losses: {}", losses.join(" "));
        out
    }
}

const fn kind_name(kind: &crate::interfaces::Kind) -> &'static str {
    match kind {
        crate::interfaces::Kind::Veth => "veth",
        crate::interfaces::Kind::Bridge => "bridge",
        crate::interfaces::Kind::Loopback => "loopback",
        crate::interfaces::Kind::Other(_) => "other",
    }
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
