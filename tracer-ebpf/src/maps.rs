//! Maps shared by several probes.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::loss::{LOSSES_LEN, Loss};

/// Per-CPU loss counters, indexed by [`Loss`].
#[map(name = "LOSSES")]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSSES_LEN, 0);

/// Counts one lost item.
#[inline(always)]
pub(crate) fn count_loss(loss: Loss) {
    increment(&LOSSES, loss as u32);
}

/// Adds one to slot `index` of a per-CPU counter array (an index past its
/// end counts nothing). Per-CPU, so a plain add is race-free: no atomic.
#[inline(always)]
pub(crate) fn increment(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = counters.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the map, is this CPU's slot, and
        // nothing else runs on this CPU while we do.
        unsafe { *slot += 1 };
    }
}
