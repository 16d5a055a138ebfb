//! fentry/fexit on functions in kernel modules, which aya 0.14 cannot do.
//!
//! On distribution kernels `nf_conntrack` and `bridge` are modules, so
//! `__nf_conntrack_confirm`, `nf_ct_resolve_clash` and `br_flood` are
//! described by the module's split BTF (`/sys/kernel/btf/<module>`, v5.11+),
//! not vmlinux's. BPF_PROG_LOAD then needs `attach_btf_obj_fd` = an fd of
//! the module's BTF object and `attach_btf_id` = the function's id in the
//! split id space. aya keeps `attach_btf_obj_fd` crate-private and resolves
//! ids in vmlinux only (aya-rs/aya#300, #301), so this module loads those few
//! programs itself:
//!
//! 1. the program's instructions come from the same ELF with `aya-obj`
//!    (aya's own parser), its map references relocated to the fds of the
//!    maps aya already created for the `Ebpf` — so the collectors read the
//!    same maps, and the load-time globals are the ones aya set;
//! 2. BPF_PROG_LOAD as BPF_PROG_TYPE_TRACING with the target's BTF object
//!    (0 = vmlinux) and id, retried with a verifier log on failure;
//! 3. BPF_RAW_TRACEPOINT_OPEN with no name attaches a tracing program to its
//!    target (v5.5+); the returned link fd keeps it attached — closing it
//!    (or the process exiting) detaches.
//!
//! The same path serves vmlinux targets (where nf_conntrack is built in), so
//! one code path is exercised everywhere.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
};

use aya::Ebpf;

use crate::sys::{map_fd, owned, sys_bpf, zeroed_attr};
use aya_obj::{
    Object,
    generated::{bpf_attach_type, bpf_btf_info, bpf_cmd, bpf_insn, bpf_prog_type},
};

/// Verifier log buffer for the retry after a refused load. Kernels before
/// v5.2 cap it at 16 MiB; the tracing programs' logs are a few KiB.
const LOG_BYTES: usize = 1 << 20;
/// Kernel program names are cut at this many bytes, NUL included.
const PROG_NAME_LEN: usize = 16;
/// BTF object names ("vmlinux", module names) are shorter than this.
const BTF_NAME_LEN: usize = 64;
/// Verifier log level 1: the instructions the verifier walked and why it stopped.
const LOG_LEVEL_VERBOSE: u32 = 1;

/// Errors of loading and attaching a tracing program ourselves.
#[derive(Debug, thiserror::Error)]
pub enum ModAttachError {
    #[error("parsing the eBPF object: {0}")]
    Parse(String),
    #[error("program {0} not in the eBPF object")]
    NoProgram(String),
    #[error(
        "map {0} is no longer in the loaded object (tracing hooks must load before the collectors take their maps)"
    )]
    MapTaken(String),
    #[error("relocating {program}: {message}")]
    Relocate { program: String, message: String },
    #[error("no loaded BTF object named {0} (module not loaded, or kernel before v5.11)")]
    NoBtfObject(String),
    #[error("{call}: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    /// BPF_PROG_LOAD refused: the errno and the verifier's last word.
    #[error("BPF_PROG_LOAD: {source}{}", verifier_line(.log))]
    Load {
        #[source]
        source: io::Error,
        log: String,
    },
}

pub(crate) fn verifier_line(log: &str) -> String {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .map(|l| format!(" (verifier: {l})"))
        .unwrap_or_default()
}

/// fentry or fexit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracingKind {
    Fentry,
    Fexit,
}

/// Where the target function is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    /// "vmlinux" or a module's BTF object name.
    pub btf_object: String,
    /// The function's BTF type id (split id space for a module).
    pub btf_id: u32,
}

/// A loaded and attached tracing program: dropping it detaches and unloads.
#[derive(Debug)]
pub struct TracingLink {
    _link: OwnedFd,
    _prog: OwnedFd,
}

/// The object's instructions with map references pointing at `ebpf`'s maps.
pub struct RelocatedObject {
    obj: Object,
}

impl RelocatedObject {
    /// Parses `elf` (the bytes `ebpf` was loaded from) and relocates the
    /// functions of `programs` (and shared subprograms) against the maps
    /// `ebpf` created. Must run before collectors `take_map` those maps.
    pub fn new(ebpf: &Ebpf, elf: &[u8], programs: &[&str]) -> Result<Self, ModAttachError> {
        let mut obj = Object::parse(elf).map_err(|e| ModAttachError::Parse(e.to_string()))?;
        let mut wanted = HashSet::new();
        for name in programs {
            let program = obj
                .programs
                .get(*name)
                .ok_or_else(|| ModAttachError::NoProgram((*name).to_owned()))?;
            wanted.insert(program.section_index);
        }
        // Only our programs' sections (and non-program sections: shared
        // subprograms) are relocated, so maps other areas' collectors have
        // already taken out of `ebpf` are not needed.
        let other_programs: HashSet<usize> = obj
            .programs
            .values()
            .map(|p| p.section_index)
            .filter(|s| !wanted.contains(s))
            .collect();
        obj.functions
            .retain(|(section, _), _| !other_programs.contains(section));
        obj.programs
            .retain(|name, _| programs.contains(&name.as_str()));
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let mut fds: Vec<(String, RawFd, aya_obj::Map)> = Vec::new();
        for (name, map) in &obj.maps {
            let Some(loaded) = ebpf.map(name) else {
                continue;
            };
            fds.push((name.clone(), map_fd(loaded).as_raw_fd(), map.clone()));
        }
        let result = obj.relocate_maps(
            fds.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
            &text_sections,
        );
        if let Err(e) = result {
            let message = e.to_string();
            return Err(obj_map_missing(&message, &obj, ebpf).unwrap_or(
                ModAttachError::Relocate {
                    program: programs.join(","),
                    message,
                },
            ));
        }
        obj.relocate_calls(&text_sections)
            .map_err(|e| ModAttachError::Relocate {
                program: programs.join(","),
                message: e.to_string(),
            })?;
        Ok(Self { obj })
    }

    /// Loads `program` as fentry/fexit on `target` and attaches it.
    pub fn attach(
        &self,
        program: &str,
        kind: TracingKind,
        target: &AttachTarget,
    ) -> Result<TracingLink, ModAttachError> {
        let prog = self
            .obj
            .programs
            .get(program)
            .ok_or_else(|| ModAttachError::NoProgram(program.to_owned()))?;
        let function = self
            .obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| ModAttachError::NoProgram(program.to_owned()))?;
        let btf_obj = if target.btf_object == "vmlinux" {
            None
        } else {
            Some(btf_object_fd(&target.btf_object)?)
        };
        let prog_fd = prog_load(
            program,
            &function.instructions,
            &self.obj.license,
            kind,
            target.btf_id,
            btf_obj.as_ref().map(|fd| fd.as_fd()),
        )?;
        let link = raw_tracepoint_open(prog_fd.as_fd())?;
        Ok(TracingLink {
            _link: link,
            _prog: prog_fd,
        })
    }
}

/// Names the map a failed relocation needed when aya no longer holds it.
fn obj_map_missing(message: &str, obj: &Object, ebpf: &Ebpf) -> Option<ModAttachError> {
    obj.maps
        .keys()
        .find(|name| ebpf.map(name).is_none() && message.contains(name.as_str()))
        .map(|name| ModAttachError::MapTaken(name.clone()))
}

fn prog_load(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    kind: TracingKind,
    btf_id: u32,
    btf_obj: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, ModAttachError> {
    let mut log = vec![0u8; 0];
    let attempt = |log: &mut Vec<u8>| {
        let mut attr = zeroed_attr();
        // SAFETY: taking the PROG_LOAD member of an all-zero union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
        load.expected_attach_type = match kind {
            TracingKind::Fentry => bpf_attach_type::BPF_TRACE_FENTRY,
            TracingKind::Fexit => bpf_attach_type::BPF_TRACE_FEXIT,
        } as u32;
        load.insns = insns.as_ptr() as u64;
        load.insn_cnt = u32::try_from(insns.len()).unwrap_or(u32::MAX);
        load.license = license.as_ptr() as u64;
        load.attach_btf_id = btf_id;
        if let Some(fd) = btf_obj {
            // attach_btf_obj_fd (v5.11+): the module whose split BTF has the id.
            load.__bindgen_anon_1.attach_btf_obj_fd = fd.as_raw_fd() as u32;
        }
        for (dst, src) in load
            .prog_name
            .iter_mut()
            .zip(name.bytes().take(PROG_NAME_LEN - 1))
        {
            *dst = src as libc::c_char;
        }
        if !log.is_empty() {
            load.log_level = LOG_LEVEL_VERBOSE;
            load.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
            load.log_buf = log.as_mut_ptr() as u64;
        }
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    match attempt(&mut log) {
        // SAFETY: a new program fd.
        Ok(fd) => Ok(unsafe { owned(fd) }),
        Err(first) => {
            // Again with the verifier's log, for a readable reason. The
            // retry's own errno may differ (ENOSPC: log too small); keep the first.
            log = vec![0u8; LOG_BYTES];
            if let Ok(fd) = attempt(&mut log) {
                // SAFETY: a new program fd.
                return Ok(unsafe { owned(fd) });
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(ModAttachError::Load {
                source: first,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

fn raw_tracepoint_open(prog: BorrowedFd<'_>) -> Result<OwnedFd, ModAttachError> {
    let mut attr = zeroed_attr();
    // name = NULL: attach a tracing program to the target it was loaded for.
    attr.raw_tracepoint.name = 0;
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        // SAFETY: a new link fd.
        .map(|fd| unsafe { owned(fd) })
        .map_err(|source| ModAttachError::Syscall {
            call: "BPF_RAW_TRACEPOINT_OPEN",
            source,
        })
}

/// An fd of the kernel BTF object called `name` (a module's), found by
/// walking the BTF ids: BPF_BTF_GET_NEXT_ID, BPF_BTF_GET_FD_BY_ID and the
/// object's info (`name` since v5.11, as module BTF).
pub fn btf_object_fd(name: &str) -> Result<OwnedFd, ModAttachError> {
    let mut id = 0u32;
    loop {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        match sys_bpf(bpf_cmd::BPF_BTF_GET_NEXT_ID, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(ModAttachError::NoBtfObject(name.to_owned()));
            }
            Err(source) => {
                return Err(ModAttachError::Syscall {
                    call: "BPF_BTF_GET_NEXT_ID",
                    source,
                });
            }
        }
        // SAFETY: the kernel filled next_id.
        id = unsafe { attr.__bindgen_anon_6.next_id };
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
        let fd = match sys_bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr) {
            // SAFETY: a new BTF fd.
            Ok(fd) => unsafe { owned(fd) },
            // Freed between the two calls: go on with the next id.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(source) => {
                return Err(ModAttachError::Syscall {
                    call: "BPF_BTF_GET_FD_BY_ID",
                    source,
                });
            }
        };
        if btf_name(fd.as_fd())? == name {
            return Ok(fd);
        }
    }
}

fn btf_name(fd: BorrowedFd<'_>) -> Result<String, ModAttachError> {
    let mut name = [0u8; BTF_NAME_LEN];
    // SAFETY: bpf_btf_info is plain integers.
    let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
    info.name = name.as_mut_ptr() as u64;
    info.name_len = BTF_NAME_LEN as u32;
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_btf_info>() as u32;
    attr.info.info = std::ptr::from_mut(&mut info) as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|source| {
        ModAttachError::Syscall {
            call: "BPF_OBJ_GET_INFO_BY_FD",
            source,
        }
    })?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_line_is_the_last_meaningful_one() {
        let log = "0: R1=ctx() R10=fp0\n; x\n1: (79) r2 = *(u64 *)(r1 +24)\nfunc '__nf_conntrack_confirm' doesn't have 3-th argument\nprocessed 2 insns (limit 1000000)\n\n";
        assert_eq!(
            verifier_line(log),
            " (verifier: func '__nf_conntrack_confirm' doesn't have 3-th argument)"
        );
        assert_eq!(verifier_line(""), "");
    }
}
