//! The kernel's DNS outcome counters over a trace, one per [`DnsStat`].
//!
//! Read by variant (`counts[DnsStat::Answers]`), so a renamed or removed
//! counter is a compile error where it is used, not a silent 0 from a
//! string lookup. Serialised as the report's `dns.counters`: a map from each
//! counter's stable name to its count, in name order.

use std::ops::{Index, IndexMut};

use serde::{Serialize, Serializer, ser::SerializeMap as _};
use tracer_common::dns::DnsStat;

/// The outcomes of port-53 packets the probe could not parse whole: the
/// table's "not fully parsed" line and `tracer_dns_malformed` list these.
pub const NOT_FULLY_PARSED: [DnsStat; 11] = [
    DnsStat::ShortHeaders,
    DnsStat::Malformed,
    DnsStat::BogusCounts,
    DnsStat::Ipv6ExtTooDeep,
    DnsStat::Fragments,
    DnsStat::VlanTooDeep,
    DnsStat::TcpNoHeader,
    DnsStat::QuestionCut,
    DnsStat::TcpSplitMessages,
    DnsStat::TcpMessagesOverCap,
    DnsStat::TcpNextFailed,
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsCounts([u64; DnsStat::ALL.len()]);

// The index below relies on `DnsStat::ALL[i]` having discriminant `i`:
// `counter_enum!` checks that at compile time.

impl DnsCounts {
    /// Each counter's value from `value`.
    pub fn from_fn(value: impl Fn(DnsStat) -> u64) -> Self {
        Self(DnsStat::ALL.map(value))
    }

    /// Every counter with its value, in [`DnsStat::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DnsStat, u64)> + '_ {
        DnsStat::ALL.iter().map(|&s| (s, self[s]))
    }
}

impl Index<DnsStat> for DnsCounts {
    type Output = u64;

    fn index(&self, stat: DnsStat) -> &u64 {
        &self.0[stat as usize]
    }
}

impl IndexMut<DnsStat> for DnsCounts {
    fn index_mut(&mut self, stat: DnsStat) -> &mut u64 {
        &mut self.0[stat as usize]
    }
}

impl Serialize for DnsCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut named: Vec<(&str, u64)> = self.iter().map(|(s, n)| (s.name(), n)).collect();
        named.sort_unstable_by_key(|&(name, _)| name);
        let mut map = serializer.serialize_map(Some(named.len()))?;
        for (name, n) in named {
            map.serialize_entry(name, &n)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::dns::DnsStat;

    use super::DnsCounts;

    #[test]
    fn indexed_by_variant_and_serialised_by_name_in_name_order() {
        let mut counts = DnsCounts::default();
        counts[DnsStat::Answers] = 8;
        counts[DnsStat::Queries] = 10;
        assert_eq!(counts[DnsStat::Answers], 8);
        let json = serde_json::to_value(&counts).unwrap();
        let names: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(names.len(), DnsStat::ALL.len());
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert_eq!(json["answers"], 8);
        assert_eq!(json["queries"], 10);
        assert_eq!(json["unmatched_answers"], 0);
    }
}
