//! Machine, processes, CPU.

use super::*;

pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "cpu_model": model,
        "cores": cores,
        "kernel": kernel,
        "memory_mib": mem_kib / 1024,
    })
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Pins the calling thread to `cpu` (modulo the CPUs there are).
pub(crate) fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu % cores()).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat`).
pub(crate) fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/PID/stat without ')'")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time of every live thread of a process, ns (`/proc/PID/task/*/schedstat`).
pub(crate) fn process_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .map(|t| schedstat(&t.path().join("schedstat").display().to_string()).0)
                .sum()
        })
        .unwrap_or(0)
}

/// Busy and total ticks over all CPUs (`/proc/stat`).
pub(crate) fn system_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() >= 8, "short /proc/stat line");
    // user nice system idle iowait irq softirq steal (guest is in user).
    let idle = v[3] + v[4];
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok((busy, busy + idle))
}

/// CPU use between two samples, in % of one core.
pub(crate) struct CpuWindow {
    pub(crate) at: Instant,
    pub(crate) system: (u64, u64),
    pub(crate) process: Option<(u32, u64)>,
}

impl CpuWindow {
    pub(crate) fn start(pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            system: system_ticks()?,
            process: pid.map(|p| proc_cpu_ticks(p).map(|t| (p, t))).transpose()?,
        })
    }

    /// (whole machine busy, the process) in % of one core.
    pub(crate) fn end(&self) -> Result<(f64, Option<f64>)> {
        let secs = self.at.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let (busy, _) = system_ticks()?;
        let system = (busy - self.system.0) as f64 / hz / secs * 100.0;
        let process = match self.process {
            Some((pid, before)) => Some((proc_cpu_ticks(pid)? - before) as f64 / hz / secs * 100.0),
            None => None,
        };
        Ok((system, process))
    }
}
