//! What every area that keeps per-interface state does when pods come and
//! go: the watch session walks the areas through this trait, so a new area
//! with per-interface state is one more entry in `Session::areas`, not one
//! more hand-written call at each place an interface vanishes.

use std::{collections::BTreeSet, error::Error};

use aya::Ebpf;

/// An area's error, boxed: each area keeps its own typed error.
pub type AreaError = Box<dyn Error + Send + Sync>;

pub trait InterfaceState {
    /// The area's name, for logs.
    fn area(&self) -> &'static str;

    /// Whether the area's probes run on this kernel (an area whose hook
    /// was refused keeps no state to retire).
    fn active(&self) -> bool {
        true
    }

    /// Interfaces `gone` vanished in one batch of link events: keep their
    /// final counts and free their kernel entries, one map walk for the
    /// batch, so churn over weeks never fills a map.
    fn retire(&mut self, ebpf: &mut Ebpf, gone: &BTreeSet<u32>) -> Result<(), AreaError>;

    /// Adds what was kept for vanished interface `ifindex` to `into` (the
    /// report's row of the oldest vanished interfaces).
    fn fold_interface(&mut self, ifindex: u32, into: u32);
}
