//! Probes.

use super::*;

/// The TC programs `tracer watch` attaches: one per direction, each running
/// the counter, DNS and (egress) flood code in turn.
pub(crate) fn tc_programs() -> Vec<TcProgram> {
    watch::TC_PROGRAMS.to_vec()
}

/// Each area's own programs (the same code, one program per area), to see
/// what each part of the deployed programs costs.
pub(crate) fn area_programs() -> Vec<TcProgram> {
    counter::PROGRAMS
        .into_iter()
        .chain(dns::PROGRAMS)
        .chain(flood::PROGRAMS)
        .collect()
}

pub(crate) fn classifier<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SchedClassifier> {
    ebpf.program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a classifier"))
}

/// Average ns per run of `name` on `frame` over `repeat` runs.
pub(crate) fn test_run(ebpf: &Ebpf, name: &str, frame: &[u8], repeat: u32) -> Result<f64> {
    let result = classifier(ebpf, name)?
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })
        .with_context(|| format!("test_run {name}"))?;
    Ok(result.duration.as_nanos() as f64)
}

/// (run_time ns, run_count) per program name.
pub(crate) fn program_stats(
    ebpf: &Ebpf,
    programs: &[TcProgram],
) -> Result<BTreeMap<&'static str, (u64, u64)>> {
    programs
        .iter()
        .map(|p| {
            let info = ebpf
                .program(p.name)
                .with_context(|| format!("no program {}", p.name))?
                .info()?;
            Ok((
                p.name,
                (
                    u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    info.run_count(),
                ),
            ))
        })
        .collect()
}

/// `BPF_PROG_LOAD` attributes (the leading fields of `union bpf_attr`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct ProgLoadAttr {
    pub(crate) prog_type: u32,
    pub(crate) insn_cnt: u32,
    pub(crate) insns: u64,
    pub(crate) license: u64,
    pub(crate) log_level: u32,
    pub(crate) log_size: u32,
    pub(crate) log_buf: u64,
    pub(crate) kern_version: u32,
    pub(crate) prog_flags: u32,
    pub(crate) prog_name: [u8; 16],
}

/// `BPF_PROG_TEST_RUN` attributes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct TestRunAttr {
    pub(crate) prog_fd: u32,
    pub(crate) retval: u32,
    pub(crate) data_size_in: u32,
    pub(crate) data_size_out: u32,
    pub(crate) data_in: u64,
    pub(crate) data_out: u64,
    pub(crate) repeat: u32,
    pub(crate) duration: u32,
    pub(crate) ctx_size_in: u32,
    pub(crate) ctx_size_out: u32,
    pub(crate) ctx_in: u64,
    pub(crate) ctx_out: u64,
    pub(crate) flags: u32,
    pub(crate) cpu: u32,
    pub(crate) batch_size: u32,
    pub(crate) _pad: u32,
}

pub(crate) const BPF_PROG_LOAD: libc::c_long = 5;
pub(crate) const BPF_PROG_TEST_RUN: libc::c_long = 10;
pub(crate) const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// A classifier that only returns TC_ACT_UNSPEC: what `BPF_PROG_TEST_RUN`
/// itself costs per repetition (the floor under every program's figure).
pub(crate) struct EmptyProgram(pub(crate) std::os::fd::OwnedFd);

impl EmptyProgram {
    pub(crate) fn load() -> Result<Self> {
        // r0 = -1 (TC_ACT_UNSPEC); exit
        let insns: [u64; 2] = [0xffff_ffff_0000_00b7, 0x95];
        let license = b"GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..ProgLoadAttr::default()
        };
        attr.prog_name[..10].copy_from_slice(b"bench_noop");
        // SAFETY: attr is a valid, fully initialised prefix of bpf_attr; the
        // pointers it holds outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &raw mut attr,
                size_of::<ProgLoadAttr>(),
            )
        };
        ensure!(
            fd >= 0,
            "loading an empty classifier: {}",
            io::Error::last_os_error()
        );
        let fd = i32::try_from(fd)?;
        // SAFETY: the kernel just returned this fd to us; we own it.
        Ok(Self(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Average ns per repetition.
    pub(crate) fn run(&self, frame: &[u8], repeat: u32) -> Result<f64> {
        let mut attr = TestRunAttr {
            prog_fd: u32::try_from(self.0.as_raw_fd())?,
            data_size_in: u32::try_from(frame.len())?,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..TestRunAttr::default()
        };
        // SAFETY: as in load(); data_in points at `frame`, alive.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestRunAttr>(),
            )
        };
        ensure!(
            ret == 0,
            "test run of the empty classifier: {}",
            io::Error::last_os_error()
        );
        Ok(f64::from(attr.duration))
    }
}
