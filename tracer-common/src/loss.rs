//! What the probes could not do, counted so every loss can be reported.
//!
//! The `LOSSES` map is a per-CPU array indexed by [`Loss`]; userspace sums it.

/// Reasons a probe lost information. The discriminant is the array index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Loss {
    /// A counter entry could not be created because the map was full.
    CounterMapFull = 0,
    /// A DNS event was dropped: the ring buffer was full.
    DnsRingFull = 1,
    /// A DNS latency histogram could not be created: map full (E2BIG).
    DnsHistMapFull = 2,
    /// A query could not be remembered (pending LRU update failed).
    DnsPendingInsert = 3,
    /// A port's flood counters could not be created: map full.
    FloodPortsFull = 4,
    /// A flooded flow could not be tracked: map full.
    FloodFlowsFull = 5,
    /// A flood cause event was dropped: ring buffer full.
    FloodRingFull = 6,
    /// A DNS packet did not reach the DNS program: the tail call failed
    /// (its program-array slot empty).
    DnsTailCall = 7,
    /// A DNS latency sample found neither its per-CPU histogram (which
    /// could not be created at that moment although the map had room) nor
    /// a place in the spill histograms (full): the sample is lost.
    DnsHistInsert = 8,
    /// A drop could not be counted: the `DROPS` map was full.
    DropsMapFull = 9,
    /// A drop's code location could not be counted: `DROP_LOCATIONS` full
    /// (the drop itself is counted).
    DropLocationsFull = 10,
    /// A DNS drop could not be remembered for the unanswered queries (the
    /// LRU update failed; the drop itself is counted).
    DnsDropInsert = 11,
}

impl Loss {
    /// Every variant, in index order.
    pub const ALL: [Self; 12] = [
        Self::CounterMapFull,
        Self::DnsRingFull,
        Self::DnsHistMapFull,
        Self::DnsPendingInsert,
        Self::FloodPortsFull,
        Self::FloodFlowsFull,
        Self::FloodRingFull,
        Self::DnsTailCall,
        Self::DnsHistInsert,
        Self::DropsMapFull,
        Self::DropLocationsFull,
        Self::DnsDropInsert,
    ];

    /// A stable snake_case name for reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CounterMapFull => "counter_map_full",
            Self::DnsRingFull => "dns_ring_full",
            Self::DnsHistMapFull => "dns_hist_map_full",
            Self::DnsPendingInsert => "dns_pending_insert_failed",
            Self::FloodPortsFull => "flood_ports_map_full",
            Self::FloodFlowsFull => "flood_flows_map_full",
            Self::FloodRingFull => "flood_ring_full",
            Self::DnsTailCall => "dns_tail_call_failed",
            Self::DnsHistInsert => "dns_hist_insert_failed",
            Self::DropsMapFull => "drops_map_full",
            Self::DropLocationsFull => "drop_locations_map_full",
            Self::DnsDropInsert => "dns_drop_insert_failed",
        }
    }
}

/// Size of the `LOSSES` array; leaves room for the symptom probes' reasons.
pub const LOSSES_LEN: u32 = 32;

const _: () = assert!((Loss::ALL.len() as u32) <= LOSSES_LEN);
