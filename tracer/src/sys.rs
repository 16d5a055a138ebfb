//! The `bpf(2)` system call, for the few commands tracer issues itself
//! (aya 0.14 has no API for them: programs against module BTF, TCX links
//! created from several threads at once, batched map reads).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya::maps::Map;
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

/// The fd of a map aya created. aya 0.14 has no accessor on [`Map`] itself,
/// only on the [`aya::maps::MapData`] every variant wraps.
pub(crate) fn map_fd(map: &Map) -> BorrowedFd<'_> {
    let data = match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    };
    data.fd().as_fd()
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: 1024 pending DNS queries are
/// 168 KiB of keys and values.
const BATCH_ENTRIES: u32 = 1024;

/// Every entry of a (non-per-CPU) hash or LRU hash map, up to `max`, read
/// with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): one system call per 1024
/// entries instead of two per entry (`get_next_key` + lookup), which is
/// what a walk of a full 16 384-entry map costs under a query flood.
/// Entries may be added or removed meanwhile; each is returned at most once.
pub(crate) fn lookup_batch<K: aya::Pod, V: aya::Pod>(
    map: &Map,
    max: usize,
) -> io::Result<Vec<(K, V)>> {
    let fd = map_fd(map);
    // SAFETY: K and V are Pod: plain data for which all-zero is valid.
    let zero_k: K = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let zero_v: V = unsafe { std::mem::zeroed() };
    let mut keys = vec![zero_k; BATCH_ENTRIES as usize];
    let mut values = vec![zero_v; BATCH_ENTRIES as usize];
    // The hash map's batch token is a u32 bucket index (kernel/bpf/hashtab.c).
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut first = true;
    while out.len() < max {
        let mut attr = zeroed_attr();
        attr.batch.in_batch = if first {
            0
        } else {
            std::ptr::from_ref(&token_in) as u64
        };
        attr.batch.out_batch = std::ptr::from_mut(&mut token_out) as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = BATCH_ENTRIES;
        attr.batch.map_fd = u32::try_from(fd.as_raw_fd()).unwrap_or_default();
        let done = match sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(_) => false,
            // The last batch: `count` still says how many it holds.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel wrote `count` back into the same member.
        let n = unsafe { attr.batch.count } as usize;
        out.extend(
            keys.iter()
                .zip(&values)
                .take(n.min(keys.len()))
                .map(|(k, v)| (*k, *v)),
        );
        if done {
            break;
        }
        token_in = token_out;
        first = false;
    }
    out.truncate(max);
    Ok(out)
}
