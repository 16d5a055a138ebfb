//! The real `tracer` binary: its command line, its one-line errors, and a
//! whole trace inside a lab node namespace stopped by a signal.

use std::{net::SocketAddrV4, process::Command, time::Duration};

use nix::sys::signal::Signal;
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{
    Receiver, TracerRun, UDP_OVERHEAD, attached_programs, privileged, send_udp, tracer_bin, warm_up,
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

fn trace_and_stop(datapath: Datapath, signal: Signal) {
    const COUNT: u64 = 200;
    const PAYLOAD: usize = 64;
    let topo = Topology::build(datapath, 2).expect("topology");
    let (a, b) = (&topo.pods[0], &topo.pods[1]);
    let rx = Receiver::start(&b.netns, b.ip, 6000);
    let to = SocketAddrV4::new(b.ip, 6000);
    warm_up(&a.netns, &rx, to, 6000);

    let tracer = TracerRun::start(&topo.node, &[]);
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
        assert_eq!(
            attached_programs(&topo.node, &pod.host_if),
            Vec::<String>::new()
        );
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

/// SIGINT while the probes are still loading (before the ready file) still
/// ends the trace with a report and exit 0: the handlers come first.
#[test]
fn sigint_during_startup_still_reports() {
    if !privileged("sigint_during_startup_still_reports") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let child = Command::new(tracer_bin())
        .args([
            "--netns", &topo.node, "--log", "error", "watch", "-o", "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tracer");
    std::thread::sleep(Duration::from_millis(150));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGINT).expect("SIGINT");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["schema_version"], 1);
}
