//! The real `tracer` binary: its command line, its one-line errors, and a
//! whole trace inside a lab node namespace stopped by a signal.

use std::{
    net::SocketAddrV4,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{
    Receiver, UDP_OVERHEAD, privileged, send_udp, tcx_programs, tracer_bin, warm_up,
};

#[test]
fn help_and_version() {
    let help = Command::new(tracer_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--netns"), "{text}");
    let version = Command::new(tracer_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("tracer {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Without the capabilities: exit non-zero with one line naming them.
#[test]
fn unprivileged_run_prints_one_line() {
    let mut cmd = if nix::unistd::geteuid().is_root() {
        // Dropping to uid 65534 clears the effective capability set.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(tracer_bin());
        cmd
    } else {
        Command::new(tracer_bin())
    };
    let out = cmd.args(["watch", "-d", "1"]).output().expect("run tracer");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn missing_netns_is_one_line() {
    if !privileged("missing_netns_is_one_line") {
        return;
    }
    let out = Command::new(tracer_bin())
        .args(["--netns", "tracer-no-such-ns", "-d", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ip netns list"), "{stderr}");
}

struct Running {
    child: Child,
    ready: PathBuf,
}

impl Running {
    fn start(node: &str) -> Self {
        let ready = std::env::temp_dir().join(format!("tracer-ready-{node}"));
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(tracer_bin())
            .args([
                "--netns",
                node,
                "watch",
                "--output",
                "json",
                "--interval",
                "0.2",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer");
        let start = Instant::now();
        let mut running = Self { child, ready };
        while !running.ready.exists() {
            if let Some(status) = running.child.try_wait().unwrap() {
                let out = running.child.wait_with_output_ref();
                panic!("tracer exited early ({status}): {out}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tracer not ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        running
    }

    fn stop(mut self, signal: Signal) -> serde_json::Value {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal tracer");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tracer ignored {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        let out = child.wait_with_output().unwrap();
        assert!(
            status.success(),
            "{status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!self.ready.exists(), "ready file removed at exit");
        serde_json::from_slice(&out.stdout).expect("JSON report")
    }
}

trait OutputText {
    fn wait_with_output_ref(&mut self) -> String;
}

impl OutputText for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(err) = self.stderr.as_mut() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trace_and_stop(datapath: Datapath, signal: Signal) {
    const COUNT: u64 = 200;
    const PAYLOAD: usize = 64;
    let topo = Topology::build(datapath, 2).expect("topology");
    let (a, b) = (&topo.pods[0], &topo.pods[1]);
    let rx = Receiver::start(&b.netns, b.ip, 6000);
    let to = SocketAddrV4::new(b.ip, 6000);
    warm_up(&a.netns, &rx, to, 6000);

    let tracer = Running::start(&topo.node);
    send_udp(&a.netns, to, 6000, COUNT, PAYLOAD);
    assert!(rx.wait_for(COUNT + 1, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(100));
    let report = tracer.stop(signal);

    assert_eq!(report["schema_version"], 1);
    let row = |name: &str| -> &serde_json::Value {
        report["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in report: {report:#}"))
    };
    assert_eq!(row(&a.host_if)["ingress"]["packets"], COUNT);
    assert_eq!(
        row(&a.host_if)["ingress"]["bytes"],
        COUNT * (UDP_OVERHEAD + PAYLOAD as u64)
    );
    assert_eq!(row(&b.host_if)["egress"]["packets"], COUNT);
    if datapath == Datapath::Bridge {
        assert_eq!(row("azure0")["kind"], "bridge");
        assert_eq!(row(&a.host_if)["master"], "azure0");
    }
    assert!(
        report["losses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["count"] == 0)
    );
    for pod in &topo.pods {
        assert_eq!(tcx_programs(&topo.node, &pod.host_if), Vec::<String>::new());
    }
    rx.finish();
}

#[test]
fn watch_bridge_node_stopped_by_sigint() {
    if privileged("watch_bridge_node_stopped_by_sigint") {
        trace_and_stop(Datapath::Bridge, Signal::SIGINT);
    }
}

#[test]
fn watch_transparent_node_stopped_by_sigterm() {
    if privileged("watch_transparent_node_stopped_by_sigterm") {
        trace_and_stop(Datapath::Transparent, Signal::SIGTERM);
    }
}
