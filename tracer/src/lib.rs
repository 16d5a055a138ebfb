//! tracer: eBPF probes on a node's pod veths and bridges, and the collector
//! that turns what they see into findings.
pub mod area;
pub mod attach;
pub mod bpf_holders;
pub mod bridge_setup;
pub mod btf;
pub mod conntrack;
pub mod counter;
pub mod diff;
pub mod dns;
pub mod drops;
pub mod escape;
pub mod flood;
pub mod hooks;
pub mod interfaces;
pub mod kernel;
#[cfg(feature = "lab")]
pub mod lab;
pub mod live;
pub mod loss;
pub mod metrics;
pub mod modattach;
pub mod netns;
pub mod object;
#[cfg(feature = "plot")]
pub mod plot;
pub mod pods;
pub mod privileges;
pub mod probes;
pub mod rekey;
pub mod report;
pub mod ring;
pub mod stats;
mod sys;
pub mod tc_netlink;
pub mod verdict;
pub mod watch;
