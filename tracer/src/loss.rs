//! Reading the probes' loss counters (`tracer-common/src/loss.rs`).

use aya::{
    Ebpf,
    maps::{MapError, PerCpuArray},
};
use tracer_common::loss::Loss;

const MAP: &str = "LOSSES";

/// Every loss reason with its total over CPUs, zeros included, so reports
/// always show each one.
pub fn read(ebpf: &Ebpf) -> Result<Vec<(Loss, u64)>, MapError> {
    let map = ebpf.map(MAP).ok_or_else(|| MapError::InvalidName {
        name: MAP.to_owned(),
    })?;
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    Loss::ALL
        .iter()
        .map(|&loss| {
            let values = map.get(&(loss as u32), 0)?;
            Ok((loss, values.iter().sum()))
        })
        .collect()
}
