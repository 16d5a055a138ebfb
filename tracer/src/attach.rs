//! Attaching TC classifiers to interfaces, and detaching them.
//!
//! Two ways, chosen by kernel version ([`TcAttachMode`]):
//! - **TCX** (v6.6+): BPF links owned by this process; the kernel removes
//!   them when it exits, even on `kill -9`.
//! - **legacy**: a clsact qdisc and one cls_bpf filter per program in
//!   direct-action mode. Filters belong to nobody: they outlive a crashed
//!   tracer and keep running its programs. A clean exit deletes each filter
//!   it added (and the qdisc if it created it and nothing else is on it);
//!   [`remove_stale_filters`] deletes a dead tracer's at the next start.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf,
    maps::ProgramArray,
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
    util::KernelVersion,
};
use aya_obj::generated::{bpf_attach_type, bpf_cmd};
use serde::Serialize;
use tracer_common::tc::{COMBINED_PROGRAMS, DNS_TAIL_MAP, DNS_TAIL_PROGRAMS};

use crate::{
    bpf_holders::{self, LockState, OWNER_LOCK_DIR, OwnerLock},
    sys::{owned, sys_bpf, zeroed_attr},
    tc_netlink::{Filter, Hook, Rtnl, TcNetlinkError},
};

/// How TC programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TcAttachMode {
    /// TCX links (v6.6+).
    Tcx,
    /// clsact qdisc + cls_bpf filters, direct action (any kernel).
    Legacy,
}

impl TcAttachMode {
    /// What the kernel offers: TCX from v6.6 (commit e420bed02507), legacy
    /// before, and when the version cannot be read.
    pub fn for_kernel(version: Option<KernelVersion>) -> Self {
        match version {
            Some(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Legacy,
        }
    }

    /// [`Self::for_kernel`] of the running kernel.
    pub fn detect() -> Self {
        Self::for_kernel(KernelVersion::current().ok())
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Legacy => "legacy",
        }
    }
}

/// A TC program of the object and the hook it goes on.
#[derive(Clone, Copy, Debug)]
pub struct TcProgram {
    pub name: &'static str,
    pub attach_type: TcAttachType,
}

/// Errors loading or attaching TC programs.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the eBPF object has no TC program {0} (stale build?)")]
    MissingProgram(&'static str),
    #[error("loading {name}: {source}")]
    Load {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("linking the DNS tail calls ({DNS_TAIL_MAP}): {0}")]
    TailCall(String),
    #[error("adding a clsact qdisc to {iface}: {source}")]
    Clsact {
        iface: String,
        #[source]
        source: TcNetlinkError,
    },
    #[error("attaching {name} to {iface} ({attach_type:?}): {source}")]
    Attach {
        name: &'static str,
        iface: String,
        attach_type: TcAttachType,
        #[source]
        source: Box<ProgramError>,
    },
}

/// One program's attachment to one interface.
enum Link {
    /// A cls_bpf filter, through aya's netlink path (legacy).
    Filter(SchedClassifierLinkId),
    /// A TCX link fd of ours: closing it detaches the program.
    Tcx(OwnedFd),
}

/// One interface's attachment, or why it failed.
type IfaceResult = (String, Result<Attached, AttachError>);

/// What is attached to one interface.
struct Attached {
    links: Vec<(TcProgram, Link)>,
    /// Legacy: the interface's index and whether this process added its
    /// clsact qdisc (and so may remove it).
    clsact: Option<(u32, bool)>,
}

/// The TC programs of one probe and the interfaces they are attached to.
pub struct TcAttachments {
    programs: Vec<TcProgram>,
    mode: TcAttachMode,
    links: BTreeMap<String, Attached>,
    /// Legacy: one [`OwnerLock`] per program, held until drop, so a later
    /// tracer can prove this one dead even when it cannot read our fds.
    _owner_locks: Vec<OwnerLock>,
}

impl TcAttachments {
    /// Loads (verifies) the programs, to be attached the way the running
    /// kernel offers ([`TcAttachMode::detect`]); nothing is attached yet. The
    /// combined programs' DNS tail call is linked here too (the DNS program
    /// loaded if it is not yet), so they never run with an empty slot.
    pub fn load(ebpf: &mut Ebpf, programs: &[TcProgram]) -> Result<Self, AttachError> {
        Self::load_with_mode(ebpf, programs, TcAttachMode::detect())
    }

    /// [`Self::load`], attaching in `mode` (legacy works on any kernel).
    pub fn load_with_mode(
        ebpf: &mut Ebpf,
        programs: &[TcProgram],
        mode: TcAttachMode,
    ) -> Result<Self, AttachError> {
        for program in programs {
            load_once(ebpf, program.name)?;
        }
        // The DNS programs call the next-message program through the same
        // array, so they need it linked as much as the combined ones do.
        if programs.iter().any(|p| {
            COMBINED_PROGRAMS.contains(&p.name)
                || DNS_TAIL_PROGRAMS.iter().any(|(_, name)| *name == p.name)
        }) {
            link_dns_tail(ebpf)?;
        }
        let mut owner_locks = Vec::new();
        if mode == TcAttachMode::Legacy {
            for program in programs {
                let id = classifier(ebpf, program.name)?
                    .info()
                    .map(|info| info.id())
                    .map_err(|source| AttachError::Load {
                        name: program.name,
                        source: Box::new(source),
                    })?;
                // Best effort: without it, the /proc scan is the only proof.
                match OwnerLock::take(Path::new(OWNER_LOCK_DIR), id) {
                    Ok(lock) => owner_locks.push(lock),
                    Err(err) => {
                        tracing::debug!("owner lock of {} in {OWNER_LOCK_DIR}: {err}", program.name)
                    }
                }
            }
        }
        Ok(Self {
            programs: programs.to_vec(),
            mode,
            links: BTreeMap::new(),
            _owner_locks: owner_locks,
        })
    }

    /// How the programs are attached.
    pub fn mode(&self) -> TcAttachMode {
        self.mode
    }

    /// Attaches every program to `iface` (a name in the current namespace).
    /// All or nothing: on error, what was attached to `iface` is detached.
    pub fn attach(&mut self, ebpf: &mut Ebpf, iface: &str) -> Result<(), AttachError> {
        self.attach_all(ebpf, &[iface])
    }

    /// Attaches every program to each of `ifaces`; all or nothing per
    /// interface. The first error is returned after the others are done.
    ///
    /// TCX links are created from several threads: each TCX attachment
    /// waits in the kernel for an RCU grace period (`tcx_entry_sync()`,
    /// tens of ms on a VM), and waits of different interfaces overlap —
    /// what makes a node with 100 pods ready in a fraction of the time.
    pub fn attach_all(&mut self, ebpf: &mut Ebpf, ifaces: &[&str]) -> Result<(), AttachError> {
        let todo: Vec<&str> = ifaces
            .iter()
            .copied()
            .filter(|iface| !self.links.contains_key(*iface))
            .collect();
        let results = match self.mode {
            TcAttachMode::Legacy => todo
                .iter()
                .map(|iface| (iface.to_string(), self.attach_legacy(ebpf, iface)))
                .collect(),
            TcAttachMode::Tcx => self.attach_tcx(ebpf, &todo)?,
        };
        let mut first_error = None;
        for (iface, result) in results {
            match result {
                Ok(attached) => {
                    self.links.insert(iface, attached);
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn attach_legacy(&self, ebpf: &mut Ebpf, iface: &str) -> Result<Attached, AttachError> {
        let clsact = Some(add_clsact(iface)?);
        let mut attached = Attached {
            links: Vec::with_capacity(self.programs.len()),
            clsact,
        };
        for program in &self.programs {
            // Priority 0: the kernel picks one before the existing filters
            // (tcf_auto_prio), so tracer sees every packet; our programs
            // return TC_ACT_UNSPEC, which passes it on to the next filter.
            // Handle 0: the kernel allocates one.
            let options = TcAttachOptions::Netlink(NlOptions::default());
            let result = classifier(ebpf, program.name).and_then(|prog| {
                prog.attach_with_options(iface, program.attach_type, options)
                    .map_err(|source| AttachError::Attach {
                        name: program.name,
                        iface: iface.to_owned(),
                        attach_type: program.attach_type,
                        source: Box::new(source),
                    })
            });
            match result {
                Ok(link) => attached.links.push((*program, Link::Filter(link))),
                Err(err) => {
                    detach_links(ebpf, attached);
                    return Err(err);
                }
            }
        }
        Ok(attached)
    }

    /// TCX links for every program on each interface, created by up to
    /// [`TCX_ATTACH_THREADS`] threads.
    fn attach_tcx(&self, ebpf: &Ebpf, ifaces: &[&str]) -> Result<Vec<IfaceResult>, AttachError> {
        let mut programs = Vec::with_capacity(self.programs.len());
        for program in &self.programs {
            let prog = ebpf
                .program(program.name)
                .and_then(|p| <&SchedClassifier>::try_from(p).ok())
                .ok_or(AttachError::MissingProgram(program.name))?;
            let fd = prog.fd().map_err(|source| AttachError::Load {
                name: program.name,
                source: Box::new(source),
            })?;
            programs.push((*program, fd.as_fd()));
        }
        let threads = ifaces.len().clamp(1, TCX_ATTACH_THREADS);
        let chunk = ifaces.len().div_ceil(threads).max(1);
        Ok(std::thread::scope(|scope| {
            let workers: Vec<_> = ifaces
                .chunks(chunk)
                .map(|chunk| {
                    let programs = &programs;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|iface| (iface.to_string(), tcx_attach(programs, iface)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        }))
    }

    /// Follows a rename of an attached interface (the attachment is by
    /// ifindex and stays; only our key changes), so a later interface
    /// taking the old name is attached and not mistaken for this one.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some(links) = self.links.remove(from) {
            self.links.insert(to.to_owned(), links);
        }
    }

    /// Detaches from `iface`. Errors are ignored: when the interface is gone
    /// the kernel has already released the attachment.
    pub fn detach(&mut self, ebpf: &mut Ebpf, iface: &str) {
        if let Some(links) = self.links.remove(iface) {
            detach_links(ebpf, links);
        }
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self, ebpf: &mut Ebpf) {
        for (_, links) in std::mem::take(&mut self.links) {
            detach_links(ebpf, links);
        }
    }

    /// Whether `iface` has our programs.
    pub fn is_attached(&self, iface: &str) -> bool {
        self.links.contains_key(iface)
    }

    /// Names of the interfaces currently attached to.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.links.keys().map(String::as_str)
    }
}

/// Loads `name` unless an earlier load did.
fn load_once(ebpf: &mut Ebpf, name: &'static str) -> Result<(), AttachError> {
    let program = classifier(ebpf, name)?;
    if program.fd().is_ok() {
        return Ok(());
    }
    program.load().map_err(|source| AttachError::Load {
        name,
        source: Box::new(source),
    })
}

/// Puts the DNS programs in their tail-call slots.
fn link_dns_tail(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    for (slot, name) in DNS_TAIL_PROGRAMS {
        load_once(ebpf, name)?;
        let fd = classifier(ebpf, name)?
            .fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
            .map_err(|e| AttachError::TailCall(format!("{name}: {e}")))?;
        let map = ebpf
            .map_mut(DNS_TAIL_MAP)
            .ok_or_else(|| AttachError::TailCall("map missing".into()))?;
        let mut slots =
            ProgramArray::try_from(map).map_err(|e| AttachError::TailCall(e.to_string()))?;
        slots
            .set(slot, &fd, 0)
            .map_err(|e| AttachError::TailCall(format!("slot {slot} = {name}: {e}")))?;
    }
    Ok(())
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, AttachError> {
    ebpf.program_mut(name)
        .and_then(|prog| <&mut SchedClassifier>::try_from(prog).ok())
        .ok_or(AttachError::MissingProgram(name))
}

/// Adds the clsact qdisc legacy filters hang on: (ifindex, created by us).
fn add_clsact(iface: &str) -> Result<(u32, bool), AttachError> {
    let clsact_error = |source| AttachError::Clsact {
        iface: iface.to_owned(),
        source,
    };
    let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|errno| {
        clsact_error(TcNetlinkError::Kernel {
            what: format!("no interface {iface}"),
            source: errno.into(),
        })
    })?;
    let created = Rtnl::open()
        .and_then(|mut rtnl| rtnl.add_clsact(ifindex))
        .map_err(clsact_error)?;
    Ok((ifindex, created))
}

fn detach_links(ebpf: &mut Ebpf, attached: Attached) {
    for (program, link) in attached.links {
        match link {
            Link::Filter(link) => {
                if let Ok(prog) = classifier(ebpf, program.name)
                    && let Err(err) = prog.detach(link)
                {
                    tracing::debug!("detaching {}: {err}", program.name);
                }
            }
            // Closing our only reference to the link detaches it.
            Link::Tcx(fd) => drop(fd),
        }
    }
    if let Some((ifindex, true)) = attached.clsact
        && let Err(err) = remove_clsact_if_empty(ifindex)
    {
        tracing::debug!("removing the clsact qdisc of ifindex {ifindex}: {err}");
    }
}

/// Threads creating TCX links at start-up; more only add contention on the
/// RTNL lock each attachment takes.
const TCX_ATTACH_THREADS: usize = 32;

/// Every program on `iface` as a TCX link (BPF_LINK_CREATE, v6.6+), appended
/// after the programs already there. All or nothing: on error the links made
/// so far are dropped, which detaches them.
fn tcx_attach(
    programs: &[(TcProgram, BorrowedFd<'_>)],
    iface: &str,
) -> Result<Attached, AttachError> {
    let failed = |program: &TcProgram, err: std::io::Error| AttachError::Attach {
        name: program.name,
        iface: iface.to_owned(),
        attach_type: program.attach_type,
        source: Box::new(ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: err,
        })),
    };
    let ifindex = nix::net::if_::if_nametoindex(iface)
        .map_err(|e| failed(&programs[0].0, std::io::Error::from(e)))?;
    let mut links = Vec::with_capacity(programs.len());
    for (program, fd) in programs {
        let attach_type = match program.attach_type {
            TcAttachType::Ingress => bpf_attach_type::BPF_TCX_INGRESS,
            TcAttachType::Egress => bpf_attach_type::BPF_TCX_EGRESS,
            TcAttachType::Custom(_) => {
                return Err(failed(program, std::io::ErrorKind::Unsupported.into()));
            }
        };
        let mut attr = zeroed_attr();
        attr.link_create.__bindgen_anon_1.prog_fd = fd.as_raw_fd() as u32;
        attr.link_create.__bindgen_anon_2.target_ifindex = ifindex;
        attr.link_create.attach_type = attach_type as u32;
        let raw = sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(|e| failed(program, e))?;
        // SAFETY: a new fd from the kernel, owned by nothing else.
        links.push((*program, Link::Tcx(unsafe { owned(raw) })));
    }
    Ok(Attached {
        links,
        clsact: None,
    })
}

/// Removes the clsact qdisc of `ifindex` if no filter is left on it.
/// Another tracer (or tool) that attached after our check would lose its
/// filter with the qdisc: the window is one netlink round trip, as the
/// kernel has no "delete if empty". TCX programs (v6.6+) do not hang on
/// the qdisc and are unaffected.
fn remove_clsact_if_empty(ifindex: u32) -> Result<bool, TcNetlinkError> {
    let mut rtnl = Rtnl::open()?;
    if !rtnl.filters(ifindex)?.is_empty() {
        return Ok(false);
    }
    rtnl.delete_clsact(ifindex)?;
    Ok(true)
}

/// What the start-up cleanup of a dead tracer's legacy filters did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StaleFilterCleanup {
    /// Filters removed: named like our programs, on their hook, and their
    /// program held by no live process.
    pub removed: usize,
    /// Interfaces they were removed from.
    pub interfaces: Vec<String>,
    /// Filters named like ours whose loader is alive (its lock held, or
    /// its program fd open: another tracer running): kept.
    pub kept_live: usize,
    /// Why candidates were kept without checking, if so (ownership could
    /// not be proven, or netlink failed).
    pub skipped: Option<String>,
}

/// A filter one of `programs` would have left: a direct-action cls_bpf
/// filter in chain 0 on the program's hook, named after it.
fn is_our_filter(filter: &Filter, programs: &[TcProgram]) -> bool {
    let Some(bpf) = &filter.bpf else {
        return false;
    };
    filter.kind == "bpf"
        && filter.chain == 0
        && bpf.direct_action
        && programs.iter().any(|p| {
            bpf.name.as_deref() == Some(p.name)
                && match p.attach_type {
                    TcAttachType::Ingress => filter.hook == Hook::Ingress,
                    TcAttachType::Egress => filter.hook == Hook::Egress,
                    TcAttachType::Custom(_) => false,
                }
        })
}

/// Removes, from every interface of the current network namespace, the
/// legacy filters of `programs` that a dead tracer left behind, proven dead
/// by its free [`OwnerLock`] or, without one, by a complete scan of the
/// program fds of every process ([`bpf_holders`]). A live tracer's
/// filters, filters that cannot be proven dead and every other filter are
/// left alone. Run it before attaching.
pub fn remove_stale_filters(programs: &[TcProgram]) -> StaleFilterCleanup {
    let mut out = StaleFilterCleanup::default();
    if let Err(err) = remove_stale_filters_into(programs, &mut out) {
        out.skipped = Some(err.to_string());
    }
    out
}

fn remove_stale_filters_into(
    programs: &[TcProgram],
    out: &mut StaleFilterCleanup,
) -> Result<(), TcNetlinkError> {
    let mut rtnl = Rtnl::open()?;
    let mut candidates = Vec::new();
    for qdisc in rtnl.qdiscs()?.iter().filter(|q| q.is_clsact()) {
        candidates.extend(
            rtnl.filters(qdisc.ifindex)?
                .into_iter()
                .filter(|f| is_our_filter(f, programs)),
        );
    }
    if candidates.is_empty() {
        return Ok(());
    }
    // Filters first, proofs second: a tracer that attached after the dump
    // took its lock and held its program fd before it attached.
    let holders = bpf_holders::scan(Path::new("/proc"));
    let incomplete = match &holders {
        Ok(holders) => holders.incomplete(),
        Err(err) => Some(format!("reading /proc: {err}")),
    };
    let mut unproven = 0;
    let mut proofs: BTreeMap<u32, Option<bool>> = BTreeMap::new();
    for filter in candidates {
        let Some(id) = filter.bpf.as_ref().and_then(|b| b.prog_id) else {
            // No TCA_BPF_ID (before v4.13): nothing to prove with.
            unproven += 1;
            continue;
        };
        // One program runs on every interface: prove each id once (a
        // proven-dead lock file is removed by the proof).
        let dead = *proofs.entry(id).or_insert_with(|| {
            match bpf_holders::probe_lock(Path::new(OWNER_LOCK_DIR), id) {
                Ok(LockState::Dead) => Some(true),
                Ok(LockState::Held) => Some(false),
                // No lock (or unreadable): only a complete scan proves it.
                Ok(LockState::Absent) | Err(_) => match &holders {
                    Ok(holders) if holders.prog_ids.contains(&id) => Some(false),
                    Ok(_) if incomplete.is_none() => Some(true),
                    _ => None,
                },
            }
        });
        let Some(dead) = dead else {
            unproven += 1;
            continue;
        };
        if !dead {
            out.kept_live += 1;
            continue;
        }
        match rtnl.delete_filter(&filter) {
            Ok(()) => {
                out.removed += 1;
                let name = nix::net::if_::if_indextoname(filter.ifindex)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("if{}", filter.ifindex));
                if !out.interfaces.contains(&name) {
                    out.interfaces.push(name);
                }
            }
            // Gone meanwhile (the interface, or another tracer's cleanup).
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {}
            Err(err) => return Err(err),
        }
    }
    if unproven > 0 {
        out.skipped = Some(format!(
            "{unproven} filters named like tracer's kept: no lock in {OWNER_LOCK_DIR} and {}",
            incomplete.as_deref().unwrap_or("no program id")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc_netlink::BpfOptions;

    const OURS: [TcProgram; 2] = [
        TcProgram {
            name: "tracer_ingress",
            attach_type: TcAttachType::Ingress,
        },
        TcProgram {
            name: "tracer_egress",
            attach_type: TcAttachType::Egress,
        },
    ];

    fn filter(hook: Hook, kind: &str, name: Option<&str>, direct_action: bool) -> Filter {
        Filter {
            ifindex: 3,
            hook,
            priority: 49152,
            protocol: libc::ETH_P_ALL as u16,
            handle: 1,
            chain: 0,
            kind: kind.into(),
            bpf: (kind == "bpf").then(|| BpfOptions {
                name: name.map(Into::into),
                prog_id: Some(480),
                direct_action,
            }),
        }
    }

    #[test]
    fn only_our_name_on_its_own_hook_is_ours() {
        assert!(is_our_filter(
            &filter(Hook::Ingress, "bpf", Some("tracer_ingress"), true),
            &OURS
        ));
        assert!(is_our_filter(
            &filter(Hook::Egress, "bpf", Some("tracer_egress"), true),
            &OURS
        ));
        for other in [
            filter(Hook::Egress, "bpf", Some("tracer_ingress"), true),
            filter(Hook::Ingress, "bpf", Some("tc_ingress"), true),
            filter(Hook::Ingress, "bpf", None, false),
            filter(Hook::Ingress, "bpf", Some("tracer_ingress"), false),
            filter(Hook::Ingress, "u32", None, false),
        ] {
            assert!(!is_our_filter(&other, &OURS), "{other:?}");
        }
        let mut chained = filter(Hook::Ingress, "bpf", Some("tracer_ingress"), true);
        chained.chain = 1;
        assert!(!is_our_filter(&chained, &OURS));
    }

    #[test]
    fn tcx_from_6_6() {
        let mode = |a, b, c| TcAttachMode::for_kernel(Some(KernelVersion::new(a, b, c)));
        assert_eq!(mode(6, 6, 0), TcAttachMode::Tcx);
        assert_eq!(mode(6, 18, 44), TcAttachMode::Tcx);
        assert_eq!(mode(6, 5, 99), TcAttachMode::Legacy);
        assert_eq!(mode(5, 15, 0), TcAttachMode::Legacy);
        assert_eq!(TcAttachMode::for_kernel(None), TcAttachMode::Legacy);
    }
}
