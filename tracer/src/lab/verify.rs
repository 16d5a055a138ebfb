//! `tracer lab --verify`: ground truth for tracer's figures — tcpdump
//! captures on the same veths, read back with tcpdump or tshark, and the
//! kernel's own conntrack counters.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{LabError, traffic::percentile};
use crate::report::Report;

/// tracer's value next to the ground truth.
#[derive(Debug, Serialize)]
pub struct VerifyRow {
    pub figure: String,
    pub tracer: String,
    pub truth: String,
    pub difference: String,
    /// The capture lost packets (tcpdump's "dropped by kernel"): the truth
    /// is then only a lower bound, and the row says so.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truth_lower_bound: bool,
}

impl VerifyRow {
    pub fn new(figure: &str, tracer: u64, truth: u64) -> Self {
        Self {
            figure: figure.to_owned(),
            tracer: tracer.to_string(),
            truth: truth.to_string(),
            difference: format!("{:+}", i128::from(tracer) - i128::from(truth)),
            truth_lower_bound: false,
        }
    }

    /// Marks the row when the capture behind its truth lost `dropped`
    /// packets.
    #[must_use]
    pub fn capture_dropped(mut self, dropped: u64) -> Self {
        if dropped > 0 {
            self.truth_lower_bound = true;
            self.figure = format!("{} [tcpdump dropped {dropped}: truth ≥]", self.figure);
        }
        self
    }

    fn ms(figure: &str, tracer: f64, truth: f64) -> Self {
        let pct = if truth > 0.0 {
            100.0 * (tracer - truth) / truth
        } else {
            0.0
        };
        Self {
            figure: figure.to_owned(),
            tracer: format!("{tracer:.3}"),
            truth: format!("{truth:.3}"),
            difference: format!("{pct:+.1}%"),
            truth_lower_bound: false,
        }
    }
}

/// tcpdump writing a pcap, started in a namespace, stopped by its PID.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    /// tcpdump's stderr, read to its end (its closing statistics).
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Capture {
    /// Starts `tcpdump -i iface filter` in `netns`; returns once it listens.
    pub fn start(netns: &str, iface: &str, filter: &str) -> Result<Self, LabError> {
        let file =
            std::env::temp_dir().join(format!("tracer-lab-{}-{iface}.pcap", std::process::id()));
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "tcpdump",
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-n",
                "-i",
                iface,
                "-w",
            ])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::Verify(format!("tcpdump: {e} (install tcpdump)")))?;
        // tcpdump prints "listening on IFACE" once its filter is in place.
        let stderr = child.stderr.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut lines = Vec::new();
            if let Some(stderr) = stderr {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if line.contains("listening on") {
                        let _ = tx.send(());
                    }
                    lines.push(line);
                }
            }
            lines
        });
        let capture = Self {
            child: Some(child),
            file,
            stderr: Some(reader),
        };
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| LabError::Verify(format!("tcpdump on {iface} did not start")))?;
        Ok(capture)
    }

    fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Packets tcpdump says the kernel dropped before it could read them
    /// (its closing "N packets dropped by kernel"), once it has exited.
    fn kernel_drops(&mut self) -> u64 {
        let lines = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        lines
            .iter()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops and counts the captured packets: (packets, packets the kernel
    /// dropped before tcpdump read them).
    pub fn count(mut self) -> Result<(u64, u64), LabError> {
        std::thread::sleep(Duration::from_millis(100));
        self.halt();
        let dropped = self.kernel_drops();
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-q"])
            .stderr(Stdio::null())
            .output()
            .map_err(|e| LabError::Verify(format!("tcpdump -r: {e}")))?;
        Ok((
            String::from_utf8_lossy(&out.stdout).lines().count() as u64,
            dropped,
        ))
    }

    /// Stops and returns tshark's `fields` (tab-separated, one line per
    /// packet) of the packets matching the display filter `filter`.
    pub fn tshark(mut self, filter: &str, fields: &[&str]) -> Result<String, LabError> {
        std::thread::sleep(Duration::from_millis(100));
        self.halt();
        let mut cmd = Command::new("tshark");
        cmd.arg("-r")
            .arg(&self.file)
            .args(["-n", "-Y", filter, "-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd
            .stderr(Stdio::null())
            .output()
            .map_err(|e| LabError::Verify(format!("tshark: {e} (install tshark)")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops and returns (queries, answers' dns.time in ms) via tshark.
    pub fn stop(mut self) -> Result<(u64, Vec<f64>), LabError> {
        std::thread::sleep(Duration::from_millis(100));
        self.halt();
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&self.file)
            .args([
                "-n",
                "-Y",
                "dns",
                "-T",
                "fields",
                "-e",
                "dns.flags.response",
                "-e",
                "dns.time",
            ])
            .stderr(Stdio::null())
            .output()
            .map_err(|e| LabError::Verify(format!("tshark: {e} (install tshark)")))?;
        let mut queries = 0;
        let mut times = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut fields = line.split('\t');
            match (fields.next(), fields.next()) {
                (Some("True" | "1"), Some(t)) => {
                    if let Ok(t) = t.parse::<f64>() {
                        times.push(t * 1000.0);
                    }
                }
                (Some("False" | "0"), _) => queries += 1,
                _ => {}
            }
        }
        Ok((queries, times))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// DNS figures of `iface` against tshark on the same veth.
pub fn dns(label: &str, report: &Report, iface: &str, truth: &(u64, Vec<f64>)) -> Vec<VerifyRow> {
    let (queries, times) = truth;
    let rows: Vec<_> = report
        .dns
        .latency
        .iter()
        .filter(|l| l.interface == iface)
        .collect();
    let answers: u64 = rows.iter().map(|l| l.answers).sum();
    let mut out = vec![VerifyRow::new(
        &format!("{label} answers on {iface} (tracer vs tshark)"),
        answers,
        times.len() as u64,
    )];
    if let Some(row) = rows.iter().max_by_key(|l| l.answers) {
        out.push(VerifyRow::ms(
            &format!("{label} p50 ms (tracer vs tshark dns.time)"),
            row.p50_ms,
            percentile(times, 0.5),
        ));
        out.push(VerifyRow::ms(
            &format!("{label} p99 ms (tracer vs tshark dns.time)"),
            row.p99_ms,
            percentile(times, 0.99),
        ));
    }
    let _ = queries;
    out
}
