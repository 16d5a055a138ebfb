//! Reading kernel structs from tracing programs, at offsets resolved from
//! BTF by userspace (Rust eBPF has no CO-RE relocations).

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use tracer_common::kernel::{KernelOffsets, UNKNOWN};

/// Filled in at load time by `tracer/src/btf.rs`.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::UNKNOWN);

#[inline(always)]
pub(crate) fn offsets() -> KernelOffsets {
    KERNEL_OFFSETS.load()
}

/// Reads a `T` at `base + off` in kernel memory (bpf_probe_read_kernel, so a
/// bad pointer is an error, never a fault).
#[inline(always)]
pub(crate) fn read<T>(base: u64, off: u32) -> Result<T, ()> {
    if base == 0 || off == UNKNOWN {
        return Err(());
    }
    // SAFETY: bpf_probe_read_kernel validates the address itself.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.map_err(|_| ())
}

/// `dev->ifindex` of the `struct net_device *` stored at `base + off`.
#[inline(always)]
pub(crate) fn ifindex_of(base: u64, off: u32, o: &KernelOffsets) -> u32 {
    read::<u64>(base, off)
        .and_then(|dev| read::<u32>(dev, o.dev_ifindex))
        .unwrap_or(0)
}

/// Network namespace inode of the `struct net_device *` at `base + off`.
#[inline(always)]
pub(crate) fn dev_netns(base: u64, off: u32, o: &KernelOffsets) -> u32 {
    read::<u64>(base, off)
        .and_then(|dev| read::<u64>(dev, o.dev_nd_net))
        .and_then(|net| read::<u32>(net, o.net_ns_inum))
        .unwrap_or(0)
}
