//! The tracing hooks (fentry/fexit, kprobes, tp_btf): one list saying, per
//! hook, which mechanisms can provide it in order of preference, and the
//! start-up walk down that chain on the running kernel.
//!
//! The chains (first that loads and attaches wins):
//! - conntrack insert failures: fexit `__nf_conntrack_confirm` → kretprobe
//!   on it → tp_btf `skb:kfree_skb` (drops of never-confirmed entries); with
//!   none, the kernel's `/proc/net/stat/nf_conntrack` counters alone;
//! - conntrack clashes: fexit `nf_ct_resolve_clash` → kretprobe on it; with
//!   none, the kernel's `clash_resolve` counter;
//! - flooding: fentry `br_flood` → kprobe on it; with none, the victim
//!   ports' TC egress (always attached);
//! - FDB and neighbour tracepoints: tp_btf only;
//! - drop reasons: tp_btf `skb:kfree_skb` only (a second program on the
//!   tracepoint, independent of conntrack's fallback; not attached before
//!   v5.17, where the tracepoint has no reason).
//!
//! fentry/fexit go through [`crate::modattach`] (module BTF: the targets
//! live in `nf_conntrack`/`bridge` on distribution kernels), kprobes and
//! tp_btf through aya. A missing hook never stops a trace: the report says
//! which mechanism each hook got, and what was refused and why.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, KProbe},
};
use serde::Serialize;

use crate::{
    kernel::KernelInfo,
    modattach::{AttachTarget, RelocatedObject, TracingKind, TracingLink, verifier_line},
};

/// Ways to attach a tracing program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    TpBtf,
}

impl HookKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::Kprobe => "kprobe",
            Self::Kretprobe => "kretprobe",
            Self::TpBtf => "tp_btf",
        }
    }

    /// Whether the target is a kernel function (not a tracepoint).
    pub const fn on_function(self) -> bool {
        !matches!(self, Self::TpBtf)
    }
}

/// One way to provide a hook: a mechanism, its target, and the programs
/// that must all attach (a kretprobe needs its entry kprobe too).
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub kind: HookKind,
    /// Kernel function (fentry/fexit/kprobes) or tracepoint (tp_btf).
    pub target: &'static str,
    pub programs: &'static [&'static str],
}

/// A hook and its mechanisms, in order of preference.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// Symptom area: `conntrack` or `flood`.
    pub area: &'static str,
    /// What the hook observes, e.g. `conntrack_insert`.
    pub name: &'static str,
    pub chain: &'static [Attempt],
    /// What the symptom falls back to when nothing in the chain attaches.
    pub without: &'static str,
}

/// Every tracing hook, in the order they are attached and reported.
pub const HOOKS: [Hook; 9] = [
    Hook {
        area: "conntrack",
        name: "conntrack_insert",
        chain: &[
            Attempt {
                kind: HookKind::Fexit,
                target: "__nf_conntrack_confirm",
                programs: &["conntrack_confirm_exit"],
            },
            Attempt {
                kind: HookKind::Kretprobe,
                target: "__nf_conntrack_confirm",
                programs: &["conntrack_confirm_kprobe", "conntrack_confirm_kretprobe"],
            },
            Attempt {
                kind: HookKind::TpBtf,
                target: "kfree_skb",
                programs: &["conntrack_kfree_skb"],
            },
        ],
        without: "insert failures from the kernel's counters only, unattributed",
    },
    Hook {
        area: "conntrack",
        name: "conntrack_clash",
        chain: &[
            Attempt {
                kind: HookKind::Fexit,
                target: "nf_ct_resolve_clash",
                programs: &["conntrack_resolve_clash_exit"],
            },
            Attempt {
                kind: HookKind::Kretprobe,
                target: "nf_ct_resolve_clash",
                programs: &[
                    "conntrack_resolve_clash_kprobe",
                    "conntrack_resolve_clash_kretprobe",
                ],
            },
        ],
        without: "resolved clashes from the kernel's clash_resolve counter only",
    },
    Hook {
        area: "flood",
        name: "flood_br_flood",
        chain: &[
            Attempt {
                kind: HookKind::Fentry,
                target: "br_flood",
                programs: &["flood_br_flood"],
            },
            Attempt {
                kind: HookKind::Kprobe,
                target: "br_flood",
                programs: &["flood_br_flood_kprobe"],
            },
        ],
        without: "floods seen only as copies on the victim ports (TC egress)",
    },
    tracepoint("flood", "flood_fdb_delete", &TP_FDB_DELETE),
    tracepoint("flood", "flood_fdb_update", &TP_FDB_UPDATE),
    tracepoint("flood", "flood_neigh_dead", &TP_NEIGH_DEAD),
    tracepoint("flood", "flood_neigh_timer", &TP_NEIGH_TIMER),
    tracepoint("flood", "flood_neigh_update", &TP_NEIGH_UPDATE),
    Hook {
        area: crate::drops::AREA,
        name: "drops_kfree_skb",
        chain: &[tp("kfree_skb", &["drops_kfree_skb"])],
        without: "drops counted by the kernel's own counters only, without reasons",
    },
];

const TP_FDB_DELETE: [Attempt; 1] = [tp("fdb_delete", &["flood_fdb_delete"])];
const TP_FDB_UPDATE: [Attempt; 1] = [tp("br_fdb_update", &["flood_fdb_update"])];
const TP_NEIGH_DEAD: [Attempt; 1] = [tp("neigh_event_send_dead", &["flood_neigh_dead"])];
const TP_NEIGH_TIMER: [Attempt; 1] = [tp("neigh_timer_handler", &["flood_neigh_timer"])];
const TP_NEIGH_UPDATE: [Attempt; 1] = [tp("neigh_update", &["flood_neigh_update"])];

const fn tp(target: &'static str, programs: &'static [&'static str]) -> Attempt {
    Attempt {
        kind: HookKind::TpBtf,
        target,
        programs,
    }
}

const fn tracepoint(area: &'static str, name: &'static str, chain: &'static [Attempt]) -> Hook {
    Hook {
        area,
        name,
        chain,
        without: "why floods start is not known (FDB and neighbour events missing)",
    }
}

/// `nf_ct_resolve_clash(skb, h, repl_idx)`: 3 parameters since v5.10, 4
/// (net, skb, ctinfo, h) before.
const CLASH_FUNCTION: &str = "nf_ct_resolve_clash";
const CLASH_FEXIT_NARGS: usize = 3;

/// Kernel functions any hook may attach to: what [`KernelInfo`] locates in
/// BTF at start-up.
pub fn function_targets() -> Vec<&'static str> {
    let mut targets: Vec<&'static str> = HOOKS
        .iter()
        .flat_map(|h| h.chain)
        .filter(|a| a.kind.on_function())
        .map(|a| a.target)
        .collect();
    targets.dedup();
    targets
}

/// A mechanism that was tried and refused.
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    pub kind: HookKind,
    pub program: &'static str,
    pub target: &'static str,
    pub error: String,
}

/// What happened to one hook.
#[derive(Clone, Debug, Serialize)]
pub struct HookStatus {
    pub area: &'static str,
    /// The hook ([`Hook::name`]).
    pub hook: &'static str,
    /// The program that attached (the first of its mechanism), or the
    /// preferred one when none did.
    pub program: &'static str,
    pub target: &'static str,
    pub kind: HookKind,
    pub attached: bool,
    /// The mechanism that attached, if any.
    pub mechanism: Option<HookKind>,
    /// For fentry/fexit: the BTF object the target was found in
    /// ("vmlinux", "nf_conntrack", "bridge").
    pub btf_object: Option<String>,
    /// Why nothing attached: every mechanism's reason, in one line.
    pub error: Option<String>,
    /// Mechanisms tried before the one that attached (or all of them).
    pub refused: Vec<Refusal>,
    /// What the hook cannot see on this kernel even though it attached, or
    /// what the symptom falls back to when it did not.
    pub note: Option<String>,
}

/// The links of the hooks attached by our own loader (fentry/fexit): they
/// detach when this is dropped. kprobes and tp_btf belong to `ebpf`.
#[derive(Debug, Default)]
pub struct HookLinks(Vec<TracingLink>);

/// Loads and attaches every hook of `areas`, each by the first mechanism of
/// its chain this kernel accepts.
pub fn attach(
    ebpf: &mut Ebpf,
    kernel: &KernelInfo,
    areas: &[&str],
) -> (Vec<HookStatus>, HookLinks) {
    attach_filtered(ebpf, kernel, &|hook, _| areas.contains(&hook.area))
}

/// As [`attach`], trying only the hooks and mechanisms `allow` accepts (the
/// kernel-matrix tests use it to exercise one fallback on purpose).
pub fn attach_filtered(
    ebpf: &mut Ebpf,
    kernel: &KernelInfo,
    allow: &dyn Fn(&Hook, &Attempt) -> bool,
) -> (Vec<HookStatus>, HookLinks) {
    let aya_btf = match Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(err) => {
            tracing::warn!("no kernel BTF ({err}): BTF-based hooks disabled");
            None
        }
    };
    let mut attacher = Attacher {
        ebpf,
        kernel,
        aya_btf,
        relocated: None,
        links: HookLinks::default(),
    };
    let mut statuses = Vec::new();
    for hook in &HOOKS {
        let chain: Vec<&Attempt> = hook.chain.iter().filter(|a| allow(hook, a)).collect();
        if let Some(status) = attacher.hook(hook, &chain) {
            statuses.push(status);
        }
    }
    (statuses, attacher.links)
}

/// What attaching the hooks needs across hooks: the object relocated for
/// fentry/fexit (once, on first use) and the links that keep them.
struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    kernel: &'a KernelInfo,
    aya_btf: Option<Btf>,
    relocated: Option<Result<RelocatedObject, String>>,
    links: HookLinks,
}

impl Attacher<'_> {
    /// Tries `chain` in order until one attempt attaches; `None` when the
    /// filter left no attempt.
    fn hook(&mut self, hook: &Hook, chain: &[&Attempt]) -> Option<HookStatus> {
        let first = chain.first()?;
        let mut status = HookStatus {
            area: hook.area,
            hook: hook.name,
            program: first.programs[0],
            target: first.target,
            kind: first.kind,
            attached: false,
            mechanism: None,
            btf_object: None,
            error: None,
            refused: Vec::new(),
            note: None,
        };
        for attempt in chain {
            match self.attempt(attempt) {
                Ok(btf_object) => {
                    status.attached_by(hook, attempt, btf_object, self.kernel);
                    break;
                }
                Err(error) => status.refused_by(hook, attempt, error),
            }
        }
        if !status.attached {
            status.none_attached(hook);
        }
        Some(status)
    }

    /// One mechanism; on success the BTF object it attached with, if any.
    fn attempt(&mut self, attempt: &Attempt) -> Result<Option<String>, String> {
        match attempt.kind {
            HookKind::Fentry | HookKind::Fexit => {
                let ebpf = &*self.ebpf;
                let relocated = self.relocated.get_or_insert_with(|| {
                    RelocatedObject::new(ebpf, crate::object::EBPF_OBJECT, &tracing_programs())
                        .map_err(|e| e.to_string())
                });
                attach_tracing(relocated, self.kernel, attempt).map(|(link, object)| {
                    self.links.0.push(link);
                    Some(object)
                })
            }
            HookKind::Kprobe | HookKind::Kretprobe => {
                attach_kprobes(self.ebpf, attempt).map(|()| None)
            }
            HookKind::TpBtf => match &self.aya_btf {
                None => Err("no kernel BTF (CONFIG_DEBUG_INFO_BTF)".to_owned()),
                Some(btf) => attach_tp_btf(self.ebpf, btf, attempt).map(|()| None),
            },
        }
    }
}

impl HookStatus {
    fn attached_by(
        &mut self,
        hook: &Hook,
        attempt: &Attempt,
        btf_object: Option<String>,
        kernel: &KernelInfo,
    ) {
        self.program = attempt.programs[0];
        self.target = attempt.target;
        self.kind = attempt.kind;
        self.attached = true;
        self.mechanism = Some(attempt.kind);
        self.btf_object = btf_object;
        self.note = limitation(kernel, attempt);
        tracing::info!(
            "{}: {} {} attached{}{}",
            hook.name,
            attempt.kind.name(),
            attempt.target,
            self.btf_object
                .as_deref()
                .map(|o| format!(" (BTF of {o})"))
                .unwrap_or_default(),
            self.note
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default(),
        );
    }

    fn refused_by(&mut self, hook: &Hook, attempt: &Attempt, error: String) {
        // The hook's name first: the table's line for it starts with the
        // same name.
        tracing::warn!(
            "{} ({} {}, program {}): not attached: {error}",
            hook.name,
            attempt.kind.name(),
            attempt.target,
            attempt.programs[0]
        );
        self.refused.push(Refusal {
            kind: attempt.kind,
            program: attempt.programs[0],
            target: attempt.target,
            error,
        });
    }

    fn none_attached(&mut self, hook: &Hook) {
        let reasons: Vec<String> = self
            .refused
            .iter()
            .map(|r| format!("{} {}: {}", r.kind.name(), r.target, r.error))
            .collect();
        self.error = Some(reasons.join("; "));
        self.note = (!hook.without.is_empty()).then(|| hook.without.to_owned());
        tracing::warn!("{}: no mechanism attached: {}", hook.name, hook.without);
    }
}

/// The fentry/fexit programs of the object.
fn tracing_programs() -> Vec<&'static str> {
    HOOKS
        .iter()
        .flat_map(|h| h.chain)
        .filter(|a| matches!(a.kind, HookKind::Fentry | HookKind::Fexit))
        .flat_map(|a| a.programs.iter().copied())
        .collect()
}

/// What an attached mechanism cannot see on this kernel.
fn limitation(kernel: &KernelInfo, attempt: &Attempt) -> Option<String> {
    if attempt.kind != HookKind::TpBtf || attempt.target != "kfree_skb" {
        return None;
    }
    if attempt.programs[0] == "drops_kfree_skb" {
        return kernel
            .drop_reasons
            .available()
            .err()
            .map(|why| format!("{why}: the program counts nothing"));
    }
    (!kernel.kfree_skb_by_reason())
        .then(|| {
            format!(
                "no usable drop reason (kfree_skb has {} arguments, SKB_DROP_REASON_NETFILTER_DROP {}; reasons since v5.17): every free of a packet with a never-confirmed conntrack entry counts as an insert drop",
                kernel
                    .kfree_skb_nargs
                    .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                if kernel.offsets.drop_reason_netfilter == tracer_common::kernel::UNKNOWN {
                    "unknown"
                } else {
                    "known"
                }
            )
        })
}

fn attach_tracing(
    relocated: &Result<RelocatedObject, String>,
    kernel: &KernelInfo,
    attempt: &Attempt,
) -> Result<(TracingLink, String), String> {
    let relocated = relocated.as_ref().map_err(Clone::clone)?;
    let location = kernel.function(attempt.target).ok_or_else(|| {
        format!(
            "kernel function {} not in BTF on this kernel",
            attempt.target
        )
    })?;
    if attempt.target == CLASH_FUNCTION && kernel.clash_nargs != Some(CLASH_FEXIT_NARGS) {
        // The fexit program reads the v5.10+ layout only (see
        // tracer-ebpf/src/conntrack.rs); the kretprobe handles both.
        return Err(format!(
            "{CLASH_FUNCTION} takes {:?} arguments here; the fexit program reads the {CLASH_FEXIT_NARGS}-argument form (v5.10+)",
            kernel.clash_nargs
        ));
    }
    let target = AttachTarget {
        btf_object: location.0.to_owned(),
        btf_id: location.1,
    };
    let kind = if attempt.kind == HookKind::Fentry {
        TracingKind::Fentry
    } else {
        TracingKind::Fexit
    };
    let link = relocated
        .attach(attempt.programs[0], kind, &target)
        .map_err(|e| e.to_string())?;
    Ok((link, target.btf_object))
}

/// aya's load errors carry the whole verifier log: keep one line of it.
fn one_line(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    match text.split_once("Verifier output:") {
        Some((head, log)) => format!(
            "{}{}",
            head.trim_end().trim_end_matches('.'),
            verifier_line(log)
        ),
        None => text,
    }
}

fn attach_kprobes(ebpf: &mut Ebpf, attempt: &Attempt) -> Result<(), String> {
    let mut done: Vec<&str> = Vec::new();
    let result = attempt.programs.iter().try_for_each(|&name| {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the object"))?;
        let p: &mut KProbe = program.try_into().map_err(|e| format!("{e}"))?;
        p.load().map_err(|e| format!("{name}: {}", one_line(&e)))?;
        done.push(name);
        p.attach(attempt.target, 0)
            .map(drop)
            .map_err(|e| format!("{name}: {e}"))
    });
    if result.is_err() {
        // An entry kprobe without its kretprobe would only fill the map.
        for name in done {
            if let Some(Ok(p)) = ebpf.program_mut(name).map(<&mut KProbe>::try_from) {
                let _ = p.unload();
            }
        }
    }
    result
}

fn attach_tp_btf(ebpf: &mut Ebpf, btf: &Btf, attempt: &Attempt) -> Result<(), String> {
    let name = attempt.programs[0];
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    let p: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
    p.load(attempt.target, btf).map_err(|e| {
        tracing::debug!("{name}: {e}");
        one_line(&e)
    })?;
    p.attach().map(drop).map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_names_every_program_once() {
        let mut programs: Vec<&str> = HOOKS
            .iter()
            .flat_map(|h| h.chain)
            .flat_map(|a| a.programs.iter().copied())
            .collect();
        let n = programs.len();
        programs.sort_unstable();
        programs.dedup();
        assert_eq!(programs.len(), n, "a program in two attempts");
        // Every program exists in the object, with the kind its attempt needs.
        let obj = aya_obj::Object::parse(crate::object::EBPF_OBJECT).expect("object");
        for attempt in HOOKS.iter().flat_map(|h| h.chain) {
            for (i, name) in attempt.programs.iter().enumerate() {
                let program = obj.programs.get(*name).unwrap_or_else(|| panic!("{name}"));
                let section = format!("{:?}", program.section);
                let expected = match attempt.kind {
                    HookKind::Fentry => "FEntry",
                    HookKind::Fexit => "FExit",
                    HookKind::TpBtf => "BtfTracePoint",
                    HookKind::Kprobe => "KProbe",
                    // The entry kprobe first, then the return probe.
                    HookKind::Kretprobe if i == 0 => "KProbe",
                    HookKind::Kretprobe => "KRetProbe",
                };
                assert!(
                    section.starts_with(expected),
                    "{name}: {section}, wanted {expected}"
                );
            }
        }
        assert_eq!(
            function_targets(),
            ["__nf_conntrack_confirm", "nf_ct_resolve_clash", "br_flood"]
        );
    }
}
