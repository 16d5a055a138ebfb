//! The combined TC programs (`tracer-ebpf/src/tc.rs`) and userspace.

/// Name of the program array through which DNS packets reach the DNS program.
pub const DNS_TAIL_MAP: &str = "TC_DNS_TAIL";
/// Its only slot.
pub const DNS_TAIL_INDEX: u32 = 0;
/// The program userspace puts there.
pub const DNS_TAIL_PROGRAM: &str = "dns_tc_ingress";
/// The combined programs, which tail-call the DNS program.
pub const COMBINED_PROGRAMS: [&str; 2] = ["tracer_ingress", "tracer_egress"];
