//! What the running kernel offers the tracing programs: struct member
//! offsets (from BTF, handed to the programs as one load-time global), where
//! each hook function is described (vmlinux or a module's split BTF, and its
//! id there) and the arity of the functions and tracepoints that changed.

use serde::Serialize;
use tracer_common::kernel::{KernelOffsets, UNKNOWN};

use crate::btf::Btf;

/// The resolved offsets and what could not be resolved.
#[derive(Clone, Debug)]
pub struct KernelInfo {
    pub offsets: KernelOffsets,
    /// `struct.member` paths this kernel lacks (their readers get UNKNOWN).
    pub missing: Vec<String>,
    /// Parameters of `nf_ct_resolve_clash` (3 since v5.10, 4 before).
    pub clash_nargs: Option<usize>,
    /// Arguments of the `skb:kfree_skb` tracepoint: 2 before v5.17, 3 with
    /// the drop reason, 4 with `rx_sk` (v6.11).
    pub kfree_skb_nargs: Option<usize>,
    /// The hook functions asked for, and where BTF describes them.
    pub functions: Vec<FunctionHook>,
    /// `enum skb_drop_reason` of this kernel (`tracer/src/drops/`).
    pub drop_reasons: crate::drops::reasons::ReasonTable,
}

/// A kernel function we may hook, and where BTF describes it.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionHook {
    pub function: &'static str,
    pub present: bool,
    /// "vmlinux", or the module whose split BTF has it.
    pub btf_object: Option<String>,
    /// Its BTF type id there (what fentry/fexit attach to).
    pub btf_id: Option<u32>,
}

impl KernelInfo {
    /// Loads vmlinux BTF (and the bridge/nf_conntrack module BTF where they
    /// are modules) and resolves everything; `functions` are the hook
    /// targets to locate (`hooks::function_targets`).
    pub fn from_sys_fs(functions: &[&'static str]) -> Result<Self, crate::btf::BtfError> {
        let btf = Btf::from_sys_fs()?
            .with_module("nf_conntrack")?
            .with_module("bridge")?;
        Ok(Self::resolve(&btf, functions))
    }

    /// Resolves the offsets and `functions` from `btf`.
    pub fn resolve(btf: &Btf, functions: &[&'static str]) -> Self {
        let mut missing = Vec::new();
        let mut get = |strukt: &str, path: &[&str]| -> u32 {
            match btf.member_offset(strukt, path) {
                Ok(member) => member.offset,
                Err(_) => {
                    missing.push(format!("{strukt}.{}", path.join(".")));
                    UNKNOWN
                }
            }
        };
        let tuplehash_size = btf
            .member_offset("nf_conn", &["tuplehash"])
            .map(|m| m.size / 2)
            .ok();
        let ct_tuple_orig = get("nf_conn", &["tuplehash", "tuple"]);
        let offsets = KernelOffsets {
            skb_head: get("sk_buff", &["head"]),
            skb_len: get("sk_buff", &["len"]),
            skb_dev: get("sk_buff", &["dev"]),
            skb_mac_header: get("sk_buff", &["mac_header"]),
            skb_network_header: get("sk_buff", &["network_header"]),
            skb_nfct: get("sk_buff", &["_nfct"]),
            dev_ifindex: get("net_device", &["ifindex"]),
            dev_nd_net: get("net_device", &["nd_net", "net"]),
            net_ns_inum: get("net", &["ns", "inum"]),
            ct_tuple_orig,
            // tuplehash[IP_CT_DIR_REPLY]: one tuple_hash further.
            ct_tuple_reply: match tuplehash_size {
                Some(size) if ct_tuple_orig != UNKNOWN => ct_tuple_orig + size,
                _ => UNKNOWN,
            },
            ct_net: get("nf_conn", &["ct_net", "net"]),
            ct_status: get("nf_conn", &["status"]),
            tuple_src_u3: get("nf_conntrack_tuple", &["src", "u3"]),
            tuple_src_port: get("nf_conntrack_tuple", &["src", "u", "all"]),
            tuple_l3num: get("nf_conntrack_tuple", &["src", "l3num"]),
            tuple_dst_u3: get("nf_conntrack_tuple", &["dst", "u3"]),
            tuple_dst_port: get("nf_conntrack_tuple", &["dst", "u", "all"]),
            tuple_protonum: get("nf_conntrack_tuple", &["dst", "protonum"]),
            fdb_addr: get("net_bridge_fdb_entry", &["key", "addr"]),
            fdb_vid: get("net_bridge_fdb_entry", &["key", "vlan_id"]),
            fdb_dst: get("net_bridge_fdb_entry", &["dst"]),
            fdb_updated: get("net_bridge_fdb_entry", &["updated"]),
            port_dev: get("net_bridge_port", &["dev"]),
            port_state: get("net_bridge_port", &["state"]),
            br_dev: get("net_bridge", &["dev"]),
            br_ageing_time: get("net_bridge", &["ageing_time"]),
            neigh_primary_key: get("neighbour", &["primary_key"]),
            neigh_dev: get("neighbour", &["dev"]),
            neigh_tbl: get("neighbour", &["tbl"]),
            neigh_nud_state: get("neighbour", &["nud_state"]),
            neigh_ha: get("neighbour", &["ha"]),
            tbl_family: get("neigh_table", &["family"]),
            drop_reason_netfilter: btf
                .enum_value("skb_drop_reason", "SKB_DROP_REASON_NETFILTER_DROP")
                .unwrap_or_else(|| {
                    missing.push("enum skb_drop_reason.SKB_DROP_REASON_NETFILTER_DROP".into());
                    UNKNOWN
                }),
        };
        Self {
            offsets,
            missing,
            clash_nargs: btf.func_params("nf_ct_resolve_clash"),
            kfree_skb_nargs: btf.tracepoint_args("kfree_skb"),
            drop_reasons: crate::drops::reasons::ReasonTable::from_btf(btf),
            functions: functions
                .iter()
                .map(|&function| {
                    let location = btf.func_location(function);
                    FunctionHook {
                        function,
                        present: location.is_some(),
                        btf_object: location.map(|l| l.object.to_owned()),
                        btf_id: location.map(|l| l.btf_id),
                    }
                })
                .collect(),
        }
    }

    /// Whether BTF has `function`.
    pub fn has_function(&self, function: &str) -> bool {
        self.function(function).is_some()
    }

    /// The BTF object and id describing `function`, if it was asked for
    /// and found.
    pub fn function(&self, function: &str) -> Option<(&str, u32)> {
        let f = self.functions.iter().find(|f| f.function == function)?;
        Some((f.btf_object.as_deref()?, f.btf_id?))
    }

    /// Whether `conntrack_kfree_skb` can pick insert failures by drop
    /// reason: the tracepoint has the reason (v5.17+) and the kernel names
    /// SKB_DROP_REASON_NETFILTER_DROP.
    pub fn kfree_skb_by_reason(&self) -> bool {
        self.kfree_skb_nargs.is_some_and(|n| n >= 3)
            && self.offsets.drop_reason_netfilter != UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_everything_on_this_kernel() {
        let Ok(info) = KernelInfo::from_sys_fs(&crate::hooks::function_targets()) else {
            eprintln!("SKIPPED: no readable BTF on this machine");
            return;
        };
        assert!(info.missing.is_empty(), "missing: {:?}", info.missing);
        let o = info.offsets;
        assert_eq!(
            o.ct_tuple_reply - o.ct_tuple_orig,
            56,
            "nf_conntrack_tuple_hash size"
        );
        assert!(info.clash_nargs == Some(3) || info.clash_nargs == Some(4));
        assert!(info.has_function("__nf_conntrack_confirm"));
    }
}
