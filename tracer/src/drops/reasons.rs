//! `enum skb_drop_reason` of the running kernel, from its BTF: the names
//! and numbers change between kernels (NOT_SPECIFIED is 0 on v5.17–5.18
//! and 2 later; NETFILTER_DROP was 12 on 6.18, other values on 6.1), so no
//! table is compiled in.

use std::collections::BTreeMap;

use tracer_common::drops::{DropReasons, NO_REASON};

use crate::btf::Btf;

/// The prefix every drop reason's enumerator carries.
const PREFIX: &str = "SKB_DROP_REASON_";
/// Reasons of other subsystems (mac80211, openvswitch) carry their
/// subsystem in the high 16 bits since v6.5 (`SKB_DROP_REASON_SUBSYS_SHIFT`).
const SUBSYS_SHIFT: u32 = 16;

/// The kernel's drop reasons by number, and whether tp_btf `kfree_skb`
/// passes one.
#[derive(Clone, Debug, Default)]
pub struct ReasonTable {
    names: BTreeMap<u32, String>,
    /// Arguments of the `kfree_skb` tracepoint (2 before v5.17).
    tracepoint_args: Option<usize>,
}

impl ReasonTable {
    /// Reads `enum skb_drop_reason` and the tracepoint's arity from `btf`.
    pub fn from_btf(btf: &Btf) -> Self {
        let mut names = BTreeMap::new();
        for (name, value) in btf.enum_values("skb_drop_reason") {
            // SKB_DROP_REASON_MAX and the subsystem mask are bounds, not
            // reasons; the first name of a value wins.
            if name.ends_with("_MAX") || name.ends_with("_MASK") {
                continue;
            }
            let short = name.strip_prefix(PREFIX).unwrap_or(&name).to_owned();
            names.entry(value).or_insert(short);
        }
        Self {
            names,
            tracepoint_args: btf.tracepoint_args("kfree_skb"),
        }
    }

    /// A table from (name, value) pairs as BTF spells them (tests).
    pub fn from_pairs(pairs: &[(&str, u32)], tracepoint_args: usize) -> Self {
        Self {
            names: pairs
                .iter()
                .map(|(n, v)| (*v, n.strip_prefix(PREFIX).unwrap_or(n).to_owned()))
                .collect(),
            tracepoint_args: Some(tracepoint_args),
        }
    }

    /// `Ok` when drop reasons can be traced here, else why not (for the
    /// report: the field is then absent and this says why).
    pub fn available(&self) -> Result<(), String> {
        match self.tracepoint_args {
            None => Err("the kernel's BTF has no skb:kfree_skb tracepoint".to_owned()),
            Some(n) if n < 3 => Err(format!(
                "skb:kfree_skb has {n} arguments on this kernel: drop reasons arrived in v5.17"
            )),
            Some(_) if self.names.is_empty() => {
                Err("the kernel's BTF has no enum skb_drop_reason".to_owned())
            }
            Some(_) => Ok(()),
        }
    }

    /// The load-time global of `drops_kfree_skb`.
    pub fn globals(&self) -> DropReasons {
        if self.available().is_err() {
            return DropReasons::DISABLED;
        }
        let value = |name: &str| {
            self.names
                .iter()
                .find_map(|(v, n)| (n == name).then_some(*v))
                .unwrap_or(NO_REASON)
        };
        DropReasons {
            enabled: 1,
            not_dropped_yet: value("SKB_NOT_DROPPED_YET"),
            consumed: value("SKB_CONSUMED"),
            not_specified: value("NOT_SPECIFIED"),
        }
    }

    /// The name of reason `value` without its `SKB_DROP_REASON_` prefix,
    /// e.g. `NETFILTER_DROP`; a reason this kernel does not name gets its
    /// number (and subsystem).
    pub fn name(&self, value: u32) -> String {
        if let Some(name) = self.names.get(&value) {
            return name.clone();
        }
        match value >> SUBSYS_SHIFT {
            0 => format!("REASON_{value}"),
            subsys => format!(
                "SUBSYS_{subsys}_REASON_{}",
                value & ((1 << SUBSYS_SHIFT) - 1)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_globals_follow_the_kernels_numbers() {
        // v5.17: NOT_SPECIFIED is 0 and there is no SKB_CONSUMED.
        let old = ReasonTable::from_pairs(
            &[
                ("SKB_DROP_REASON_NOT_SPECIFIED", 0),
                ("SKB_DROP_REASON_NO_SOCKET", 1),
            ],
            3,
        );
        let g = old.globals();
        assert_eq!((g.enabled, g.not_specified, g.consumed), (1, 0, NO_REASON));
        assert_eq!(old.name(1), "NO_SOCKET");
        assert_eq!(old.name(9), "REASON_9");
        assert_eq!(old.name((3 << 16) | 2), "SUBSYS_3_REASON_2");
        // Before v5.17: no reason argument.
        let none = ReasonTable::from_pairs(&[], 2);
        assert!(none.available().unwrap_err().contains("v5.17"));
        assert_eq!(none.globals(), DropReasons::DISABLED);
    }

    #[test]
    fn this_kernels_table_has_the_named_reasons() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIPPED: no readable BTF on this machine");
            return;
        };
        let table = ReasonTable::from_btf(&btf);
        if table.available().is_err() {
            eprintln!("SKIPPED: {:?}", table.available());
            return;
        }
        let g = table.globals();
        assert_ne!(g.not_specified, NO_REASON);
        for name in ["NETFILTER_DROP", "SOCKET_RCVBUFF", "NO_SOCKET"] {
            assert!(
                table.names.values().any(|n| n == name),
                "{name} missing from {:?}",
                table.names
            );
        }
    }
}
