//! The tracing programs (fentry, fexit, tp_btf): which kernel function or
//! tracepoint each one needs, attaching what this kernel allows, and an
//! honest account of what it did not.
//!
//! A missing hook never stops a trace: the symptom falls back to what the
//! TC probes and the kernel's own counters show, and the report says so.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit},
};
use serde::Serialize;

use crate::kernel::KernelInfo;

/// Kinds of tracing attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Fentry,
    Fexit,
    TpBtf,
}

/// A tracing program and what it attaches to.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Symptom area: `conntrack` or `flood`.
    pub area: &'static str,
    pub program: &'static str,
    /// Kernel function (fentry/fexit) or tracepoint (tp_btf).
    pub target: &'static str,
    pub kind: HookKind,
}

/// Every tracing program of the object.
pub const HOOKS: [Hook; 9] = [
    Hook {
        area: "conntrack",
        program: "conntrack_confirm_exit",
        target: "__nf_conntrack_confirm",
        kind: HookKind::Fexit,
    },
    Hook {
        area: "conntrack",
        program: "conntrack_resolve_clash_exit",
        target: "nf_ct_resolve_clash",
        kind: HookKind::Fexit,
    },
    Hook {
        area: "conntrack",
        program: "conntrack_kfree_skb",
        target: "kfree_skb",
        kind: HookKind::TpBtf,
    },
    Hook {
        area: "flood",
        program: "flood_br_flood",
        target: "br_flood",
        kind: HookKind::Fentry,
    },
    Hook {
        area: "flood",
        program: "flood_fdb_delete",
        target: "fdb_delete",
        kind: HookKind::TpBtf,
    },
    Hook {
        area: "flood",
        program: "flood_fdb_update",
        target: "br_fdb_update",
        kind: HookKind::TpBtf,
    },
    Hook {
        area: "flood",
        program: "flood_neigh_dead",
        target: "neigh_event_send_dead",
        kind: HookKind::TpBtf,
    },
    Hook {
        area: "flood",
        program: "flood_neigh_timer",
        target: "neigh_timer_handler",
        kind: HookKind::TpBtf,
    },
    Hook {
        area: "flood",
        program: "flood_neigh_update",
        target: "neigh_update",
        kind: HookKind::TpBtf,
    },
];

/// What happened to one hook.
#[derive(Clone, Debug, Serialize)]
pub struct HookStatus {
    pub area: &'static str,
    pub program: &'static str,
    pub target: &'static str,
    pub kind: HookKind,
    pub attached: bool,
    /// Why not, in one line.
    pub error: Option<String>,
}

/// Loads and attaches every hook of `areas` it can. The links belong to the
/// programs in `ebpf`: they go when `ebpf` is dropped or the process exits.
pub fn attach(ebpf: &mut Ebpf, kernel: &KernelInfo, areas: &[&str]) -> Vec<HookStatus> {
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(err) => {
            tracing::warn!("no kernel BTF ({err}): tracing hooks disabled");
            None
        }
    };
    HOOKS
        .iter()
        .filter(|hook| areas.contains(&hook.area))
        .map(|hook| {
            let result = match &btf {
                None => Err("no kernel BTF (CONFIG_DEBUG_INFO_BTF)".to_owned()),
                Some(btf) => attach_one(ebpf, btf, kernel, hook),
            };
            if let Err(err) = &result {
                tracing::warn!(
                    "{} ({} {}): not attached: {err}",
                    hook.program,
                    kind_name(hook.kind),
                    hook.target
                );
            }
            HookStatus {
                area: hook.area,
                program: hook.program,
                target: hook.target,
                kind: hook.kind,
                attached: result.is_ok(),
                error: result.err(),
            }
        })
        .collect()
}

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, kernel: &KernelInfo, hook: &Hook) -> Result<(), String> {
    if hook.kind != HookKind::TpBtf && !kernel.has_function(hook.target) {
        return Err(format!(
            "kernel function {} not in BTF on this kernel",
            hook.target
        ));
    }
    let program = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the object", hook.program))?;
    let err = |e: aya::programs::ProgramError| format!("{e}");
    match hook.kind {
        HookKind::Fentry => {
            let p: &mut FEntry = program.try_into().map_err(err)?;
            p.load(hook.target, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        HookKind::Fexit => {
            let p: &mut FExit = program.try_into().map_err(err)?;
            p.load(hook.target, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
        HookKind::TpBtf => {
            let p: &mut BtfTracePoint = program.try_into().map_err(err)?;
            p.load(hook.target, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
    }
    Ok(())
}

const fn kind_name(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Fentry => "fentry",
        HookKind::Fexit => "fexit",
        HookKind::TpBtf => "tp_btf",
    }
}
