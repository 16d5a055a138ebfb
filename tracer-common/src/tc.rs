//! The combined TC programs (`tracer-ebpf/src/tc.rs`) and userspace.

/// Name of the program array through which DNS packets reach the DNS programs.
pub const DNS_TAIL_MAP: &str = "TC_DNS_TAIL";
/// Slot of the DNS program for packets seen on TC ingress.
pub const DNS_TAIL_INGRESS: u32 = 0;
/// Slot of the DNS program for packets seen on TC egress.
pub const DNS_TAIL_EGRESS: u32 = 1;
/// Slot of the program that parses the next DNS-over-TCP message of a
/// segment (it calls itself through the same slot for the one after).
pub const DNS_TAIL_MORE: u32 = 2;
/// Slots of the program array.
pub const DNS_TAIL_SLOTS: u32 = 3;
/// The programs userspace puts in the slots, by slot.
pub const DNS_TAIL_PROGRAMS: [(u32, &str); 3] = [
    (DNS_TAIL_INGRESS, "dns_tc_ingress"),
    (DNS_TAIL_EGRESS, "dns_tc_egress"),
    (DNS_TAIL_MORE, "dns_tc_more"),
];
/// The combined programs, which tail-call the DNS programs.
pub const COMBINED_PROGRAMS: [&str; 2] = ["tracer_ingress", "tracer_egress"];
