//! Child processes.

use super::*;

/// A child we spawned; stopped by its own PID, also on drop.
pub(crate) struct ChildGuard {
    pub(crate) child: Child,
}

impl ChildGuard {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `signal` to our child's PID (only while it is unreaped, so the PID is
    /// still ours), then wait; SIGKILL after `grace`.
    pub(crate) fn stop(&mut self, signal: Signal, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects a stream's lines on a thread.
pub(crate) fn drain_lines<R: io::Read + Send + 'static>(
    stream: Option<R>,
) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        if let Some(stream) = stream {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines lock").push(line);
            }
        }
    });
    lines
}

pub(crate) fn lines_of(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    lines.lock().expect("lines lock").clone()
}

/// The real `tracer` binary: `tracer --netns NODE watch -o json`.
pub(crate) struct TracerProc {
    pub(crate) guard: ChildGuard,
    pub(crate) ready: PathBuf,
    pub(crate) stdout: Option<JoinHandle<Vec<u8>>>,
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
    /// Spawn to ready file.
    pub(crate) startup: Duration,
    /// Just before the spawn (to pick its programs out of the kernel's list).
    pub(crate) spawned_at: SystemTime,
}

impl TracerProc {
    /// Starts it; `interfaces` empty = every pod interface (the default).
    pub(crate) fn start(bin: &Path, node: &str, interfaces: &[&str]) -> Result<Self> {
        Self::start_with(bin, node, interfaces, &[])
    }

    /// [`Self::start`] with more `watch` arguments.
    pub(crate) fn start_with(
        bin: &Path,
        node: &str,
        interfaces: &[&str],
        extra: &[&str],
    ) -> Result<Self> {
        let ready = std::env::temp_dir().join(format!("tracer-bench-ready-{node}"));
        let _ = std::fs::remove_file(&ready);
        let spawned_at = SystemTime::now();
        let t0 = Instant::now();
        let mut child = Command::new(bin)
            .args(["--netns", node, "watch", "--output", "json", "--ready-file"])
            .arg(&ready)
            .args(interfaces.iter().flat_map(|i| ["--interface", i]))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut out = child.stdout.take();
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(out) = out.as_mut() {
                let _ = out.read_to_end(&mut buf);
            }
            buf
        });
        let stderr = drain_lines(child.stderr.take());
        let mut guard = ChildGuard { child };
        while !ready.exists() {
            if let Some(status) = guard.exited() {
                std::thread::sleep(Duration::from_millis(50));
                bail!(
                    "tracer exited before ready ({status}): {}",
                    lines_of(&stderr).join("\n")
                );
            }
            if STOP.load(Ordering::SeqCst) {
                guard.stop(Signal::SIGTERM, Duration::from_secs(5));
                bail!("interrupted");
            }
            if t0.elapsed() > Duration::from_secs(90) {
                guard.stop(Signal::SIGTERM, Duration::from_secs(5));
                bail!("tracer not ready after {:?}", t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Self {
            guard,
            ready,
            stdout: Some(stdout),
            stderr,
            startup: t0.elapsed(),
            spawned_at,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// SIGINT, wait, and the JSON report.
    pub(crate) fn stop(mut self) -> Result<Value> {
        let status = self.guard.stop(Signal::SIGINT, Duration::from_secs(20));
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.ready);
        ensure!(
            status.is_some_and(|s| s.success()),
            "tracer exited with {status:?}: {}",
            lines_of(&self.stderr).join("\n")
        );
        serde_json::from_slice(&stdout).context("tracer's JSON report")
    }
}

/// `tcpdump -i IFACE port 53 -w /dev/null` inside the node namespace.
pub(crate) struct Tcpdump {
    pub(crate) guard: ChildGuard,
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Tcpdump {
    pub(crate) fn start(node: &str, iface: &str) -> Result<Self> {
        // `ip netns exec` execs tcpdump in place: the child PID is tcpdump's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", node, "tcpdump", "-i", iface])
            .args(["port", "53", "-w", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump (apt-get install tcpdump)")?;
        let stderr = drain_lines(child.stderr.take());
        let mut guard = ChildGuard { child };
        let t0 = Instant::now();
        while !lines_of(&stderr).iter().any(|l| l.contains("listening on")) {
            if let Some(status) = guard.exited() {
                bail!(
                    "tcpdump exited ({status}): {}",
                    lines_of(&stderr).join("\n")
                );
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "tcpdump not listening"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self { guard, stderr })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// SIGINT; (captured, dropped by kernel) from its summary.
    pub(crate) fn stop(mut self) -> (u64, u64) {
        self.guard.stop(Signal::SIGINT, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
        let lines = lines_of(&self.stderr);
        let find = |what: &str| {
            lines
                .iter()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (find("captured"), find("dropped by kernel"))
    }
}
