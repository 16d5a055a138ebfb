//! Maps shared by several probes.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::loss::{LOSSES_LEN, Loss};

/// Per-CPU loss counters, indexed by [`Loss`].
#[map(name = "LOSSES")]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSSES_LEN, 0);

/// Counts one lost item. Per-CPU, so a plain add is race-free.
#[inline(always)]
pub(crate) fn count_loss(loss: Loss) {
    if let Some(slot) = LOSSES.get_ptr_mut(loss as u32) {
        // SAFETY: the pointer comes from the map and is only used on this CPU.
        unsafe { *slot += 1 };
    }
}
