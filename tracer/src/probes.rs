//! Loading tracer's eBPF object into the kernel.
//!
//! The object is built by `build.rs` and embedded in the binary, so a copied
//! `tracer` needs nothing else on the node.

use std::time::Duration;

use aya::{Ebpf, EbpfError, EbpfLoader, programs::ProgramError};
use tracer_common::{
    conntrack::{KFREE_SKB_BY_REASON, KFREE_SKB_UNCONFIRMED_ONLY},
    kernel::KernelOffsets,
};

use crate::kernel::KernelInfo;

pub use crate::object::EBPF_OBJECT;

/// Errors from loading programs and finding maps.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the eBPF object has no program {0} (stale build?)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (stale build?)")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Load-time settings of the programs (`Global`s in the object).
#[derive(Clone, Copy, Debug)]
pub struct ProbeSettings {
    /// DNS answers at least this slow are reported one by one.
    pub dns_slow: Duration,
    /// Two queries from one socket closer than this are a parallel pair.
    pub dns_pair_window: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            dns_slow: Duration::from_millis(100),
            dns_pair_window: Duration::from_millis(1),
        }
    }
}

/// The oldest kernel tracer can run on: BPF ring buffers (every probe's
/// events) arrived in v5.8 (commit 457f44363a88).
pub const MIN_KERNEL: (u8, u8) = (5, 8);

/// One line naming what this kernel lacks, or `None` if tracer can run.
/// Checked before anything is loaded, so an old kernel gets this instead of
/// a map-creation error.
pub fn kernel_unsupported() -> Option<String> {
    let version = aya::util::KernelVersion::current().ok()?;
    let (major, minor) = MIN_KERNEL;
    (version < aya::util::KernelVersion::new(major, minor, 0)).then(|| {
        format!(
            "kernel {version} has no BPF ring buffer (needs {major}.{minor}+): every tracer \
             probe sends its events through one, so nothing can be traced on this node; \
             upgrade the node image (Ubuntu 20.04 HWE/22.04, Azure Linux 2+)"
        )
    })
}

/// Parses and loads the embedded object with default settings.
pub fn load() -> Result<Ebpf, ProbeError> {
    load_with(&ProbeSettings::default())
}

/// Reads the kernel's BTF for the tracing programs' offsets. Without BTF the
/// TC probes still work; the tracing hooks then refuse to attach.
pub fn kernel_info() -> KernelInfo {
    KernelInfo::from_sys_fs(&crate::hooks::function_targets()).unwrap_or_else(|err| {
        tracing::warn!("{err}: conntrack and flood hooks will not attach");
        KernelInfo {
            offsets: KernelOffsets::UNKNOWN,
            missing: vec![err.to_string()],
            clash_nargs: None,
            kfree_skb_nargs: None,
            functions: Vec::new(),
            drop_reasons: crate::drops::reasons::ReasonTable::default(),
        }
    })
}

/// Parses and loads the embedded object: creates its maps and sets its
/// globals. Programs are loaded (verified) by the module that attaches them.
pub fn load_with(settings: &ProbeSettings) -> Result<Ebpf, ProbeError> {
    load_full(settings, &kernel_info())
}

/// As [`load_with`], with kernel offsets already resolved.
pub fn load_full(settings: &ProbeSettings, kernel: &KernelInfo) -> Result<Ebpf, ProbeError> {
    raise_memlock_limit();
    let slow = nanos(settings.dns_slow);
    let window = nanos(settings.dns_pair_window);
    let clash_nargs = u32::try_from(kernel.clash_nargs.unwrap_or(3)).unwrap_or(3);
    let kfree_skb_filter = if kernel.kfree_skb_by_reason() {
        KFREE_SKB_BY_REASON
    } else {
        KFREE_SKB_UNCONFIRMED_ONLY
    };
    Ok(EbpfLoader::new()
        .override_global("DNS_SLOW_NS", &slow, true)
        .override_global("DNS_PAIR_WINDOW_NS", &window, true)
        .override_global("KERNEL_OFFSETS", &kernel.offsets, true)
        .override_global("CT_CLASH_NARGS", &clash_nargs, true)
        .override_global("KFREE_SKB_FILTER", &kfree_skb_filter, true)
        .override_global("DROP_REASONS", &kernel.drop_reasons.globals(), true)
        .load(EBPF_OBJECT)?)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Kernels before v5.11 charge BPF maps against RLIMIT_MEMLOCK (later ones use
/// memcg accounting). Raising it is harmless where it is not needed.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
