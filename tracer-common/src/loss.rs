//! What the probes could not do, counted so every loss can be reported.
//!
//! The `LOSSES` map is a per-CPU array indexed by [`Loss`]; userspace sums it.

crate::counter_enum! {
    /// Reasons a probe lost information. The discriminant is the array index.
    pub enum Loss {
        /// A counter entry could not be created because the map was full.
        CounterMapFull = 0 => "counter_map_full",
        /// A DNS event was dropped: the ring buffer was full.
        DnsRingFull = 1 => "dns_ring_full",
        /// A DNS latency histogram could not be created: map full (E2BIG).
        DnsHistMapFull = 2 => "dns_hist_map_full",
        /// A query could not be remembered (pending LRU update failed).
        DnsPendingInsert = 3 => "dns_pending_insert_failed",
        /// A port's flood counters could not be created: map full.
        FloodPortsFull = 4 => "flood_ports_map_full",
        /// A flooded flow could not be tracked: map full.
        FloodFlowsFull = 5 => "flood_flows_map_full",
        /// A flood cause event was dropped: ring buffer full.
        FloodRingFull = 6 => "flood_ring_full",
        /// A DNS packet did not reach the DNS program: the tail call failed
        /// (its program-array slot empty).
        DnsTailCall = 7 => "dns_tail_call_failed",
        /// A DNS latency sample found neither its per-CPU histogram (which
        /// could not be created at that moment although the map had room) nor
        /// a place in the spill histograms (full): the sample is lost.
        DnsHistInsert = 8 => "dns_hist_insert_failed",
        /// A drop could not be counted: the `DROPS` map was full.
        DropsMapFull = 9 => "drops_map_full",
        /// A drop's code location could not be counted: `DROP_LOCATIONS` full
        /// (the drop itself is counted).
        DropLocationsFull = 10 => "drop_locations_map_full",
        /// A DNS drop could not be remembered for the unanswered queries (the
        /// LRU update failed; the drop itself is counted).
        DnsDropInsert = 11 => "dns_drop_insert_failed",
    }
}

/// Size of the `LOSSES` array; leaves room for the symptom probes' reasons.
pub const LOSSES_LEN: u32 = 32;

const _: () = assert!((Loss::ALL.len() as u32) <= LOSSES_LEN);
