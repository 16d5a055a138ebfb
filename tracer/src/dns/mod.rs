//! DNS latency: the collector side of `tracer-ebpf/src/dns.rs`.
//!
//! Merges the kernel's per-(interface, server) latency buckets into
//! HdrHistograms, decodes the rare events from the ring buffer, sweeps
//! queries that were never answered, and turns it all into findings.

pub mod collector;
pub mod counts;
pub mod exchanges;
pub mod question;
pub mod role;
pub mod server_list;
pub mod server_use;

use aya::programs::TcAttachType;

use crate::attach::TcProgram;

/// The DNS programs, one per TC direction.
pub const PROGRAMS: [TcProgram; 2] = [
    TcProgram {
        name: "dns_tc_ingress",
        attach_type: TcAttachType::Ingress,
    },
    TcProgram {
        name: "dns_tc_egress",
        attach_type: TcAttachType::Egress,
    },
];
