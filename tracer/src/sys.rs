//! The `bpf(2)` system call, for the few commands tracer issues itself
//! (aya 0.14 has no API for them: programs against module BTF, TCX links
//! created from several threads at once).

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// `bpf(2)`; the attr is zero-filled past what each command uses, as the
/// kernel requires of unknown trailing fields.
pub(crate) fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<RawFd> {
    // SAFETY: attr is a valid, fully initialised bpf_attr of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    RawFd::try_from(ret).map_err(|_| io::Error::other("fd out of range"))
}

pub(crate) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain C union of integers; all-zero is valid and
    // is what the kernel expects of unused fields.
    unsafe { std::mem::zeroed() }
}

/// SAFETY: `fd` was just returned by the kernel and is owned by no one else.
pub(crate) unsafe fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: see the function's contract.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
