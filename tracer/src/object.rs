//! tracer's eBPF object, built by `build.rs` and embedded in the binary, so
//! a copied `tracer` needs nothing else on the node.

/// The eBPF object, aligned as aya's ELF parser needs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));
