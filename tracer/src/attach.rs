//! Attaching TC classifiers to interfaces, and detaching them.
//!
//! On v6.6+ kernels aya creates TCX links: they belong to this process and
//! the kernel removes them when it exits, even on `kill -9`. Older kernels get
//! legacy cls_bpf filters under a clsact qdisc, which would outlive a crash.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::ProgramArray,
    programs::{ProgramError, SchedClassifier, TcAttachType, tc, tc::SchedClassifierLinkId},
    util::KernelVersion,
};
use tracer_common::tc::{COMBINED_PROGRAMS, DNS_TAIL_INDEX, DNS_TAIL_MAP, DNS_TAIL_PROGRAM};

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
    #[error(
        "linking the DNS tail call ({DNS_TAIL_MAP}[{DNS_TAIL_INDEX}] = {DNS_TAIL_PROGRAM}): {0}"
    )]
    TailCall(String),
    #[error("attaching {name} to {iface} ({attach_type:?}): {source}")]
    Attach {
        name: &'static str,
        iface: String,
        attach_type: TcAttachType,
        #[source]
        source: Box<ProgramError>,
    },
}

/// The TC programs of one probe and the interfaces they are attached to.
pub struct TcAttachments {
    programs: Vec<TcProgram>,
    links: BTreeMap<String, Vec<(TcProgram, SchedClassifierLinkId)>>,
}

impl TcAttachments {
    /// Loads (verifies) the programs; nothing is attached yet. The combined
    /// programs' DNS tail call is linked here too (the DNS program loaded if
    /// it is not yet), so they never run with an empty slot.
    pub fn load(ebpf: &mut Ebpf, programs: &[TcProgram]) -> Result<Self, AttachError> {
        for program in programs {
            load_once(ebpf, program.name)?;
        }
        if programs.iter().any(|p| COMBINED_PROGRAMS.contains(&p.name)) {
            link_dns_tail(ebpf)?;
        }
        Ok(Self {
            programs: programs.to_vec(),
            links: BTreeMap::new(),
        })
    }

    /// Attaches every program to `iface` (a name in the current namespace).
    /// All or nothing: on error, what was attached to `iface` is detached.
    pub fn attach(&mut self, ebpf: &mut Ebpf, iface: &str) -> Result<(), AttachError> {
        if self.links.contains_key(iface) {
            return Ok(());
        }
        // Before TCX (v6.6) aya falls back to netlink cls_bpf, which needs the
        // clsact qdisc; it may exist already (EEXIST is fine).
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if !tcx {
            let _ignored = tc::qdisc_add_clsact(iface);
        }
        let mut attached = Vec::with_capacity(self.programs.len());
        for program in &self.programs {
            let result = classifier(ebpf, program.name).and_then(|prog| {
                prog.attach(iface, program.attach_type)
                    .map_err(|source| AttachError::Attach {
                        name: program.name,
                        iface: iface.to_owned(),
                        attach_type: program.attach_type,
                        source: Box::new(source),
                    })
            });
            match result {
                Ok(link) => attached.push((*program, link)),
                Err(err) => {
                    detach_links(ebpf, attached);
                    return Err(err);
                }
            }
        }
        self.links.insert(iface.to_owned(), attached);
        Ok(())
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

/// Puts the DNS program in the combined programs' tail-call slot.
fn link_dns_tail(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    load_once(ebpf, DNS_TAIL_PROGRAM)?;
    let fd = classifier(ebpf, DNS_TAIL_PROGRAM)?
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|e| AttachError::TailCall(e.to_string()))?;
    let map = ebpf
        .map_mut(DNS_TAIL_MAP)
        .ok_or_else(|| AttachError::TailCall("map missing".into()))?;
    let mut slots =
        ProgramArray::try_from(map).map_err(|e| AttachError::TailCall(e.to_string()))?;
    slots
        .set(DNS_TAIL_INDEX, &fd, 0)
        .map_err(|e| AttachError::TailCall(e.to_string()))
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, AttachError> {
    ebpf.program_mut(name)
        .and_then(|prog| <&mut SchedClassifier>::try_from(prog).ok())
        .ok_or(AttachError::MissingProgram(name))
}

fn detach_links(ebpf: &mut Ebpf, links: Vec<(TcProgram, SchedClassifierLinkId)>) {
    for (program, link) in links {
        if let Ok(prog) = classifier(ebpf, program.name)
            && let Err(err) = prog.detach(link)
        {
            tracing::debug!("detaching {}: {err}", program.name);
        }
    }
}
