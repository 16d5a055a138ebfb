//! Faults of the node around a running tracer: each gives one clear line,
//! and tracer keeps tracing or exits with its documented code (1 = error).
//! The Prometheus port taken, the ready file's directory missing, the Azure
//! CNI state file truncated / huge / replaced mid-run, SIGHUP, the bridge
//! deleted and recreated under its name, interfaces renamed, a full disk
//! under `--output json > file`. (`/var/log/pods` symlinks pointing outside
//! are a unit test in `tracer/src/pods/tests.rs`: only entry names are
//! read.)

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;
use tracer::{
    lab::topology::{Datapath, Topology},
    netns,
};
use tracer_tests::{
    Receiver, TracerRun, attached_programs, privileged, send_udp, tracer_bin, wait_until, warm_up,
};

fn ip(node: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", node])
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tracer(node: &str, args: &[&str]) -> Output {
    Command::new(tracer_bin())
        .args([
            "--netns",
            node,
            "--log",
            "error",
            "watch",
            "--duration",
            "1",
        ])
        .args(args)
        .output()
        .expect("run tracer")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn port_taken_and_missing_ready_dir_exit_1_with_one_line() {
    if !privileged("port_taken_and_missing_ready_dir_exit_1_with_one_line") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 1).expect("topology");
    let taken = netns::run_in(&topo.node, || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind")
    })
    .expect("in the node");
    let addr = taken.local_addr().unwrap().to_string();
    let out = tracer(&topo.node, &["--prometheus", &addr]);
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "tracer: error: --prometheus: listening on {addr}: "
        )) && lines[0].contains("in use"),
        "{lines:?}"
    );

    let ready = Path::new("/nonexistent-tracer-dir").join("ready");
    let out = tracer(&topo.node, &["--ready-file", ready.to_str().unwrap()]);
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with("tracer: error: writing ready file /nonexistent-tracer-dir/ready")
            && lines[0].contains("No such file or directory"),
        "{lines:?}"
    );
    assert!(
        attached_programs(&topo.node, &topo.pods[0].host_if).is_empty(),
        "nothing left attached"
    );
}

/// An Azure CNI state naming pod 0.
fn azure_state(topo: &Topology, namespace: &str, name: &str) -> String {
    serde_json::json!({"Network": {"ExternalInterfaces": {"eth0": {
        "Name": "eth0", "BridgeName": "azure0",
        "Networks": {"azure": {"Id": "azure", "Mode": "bridge", "Endpoints": {
            "aaaa-eth0": {"Id": "aaaa-eth0", "HostIfName": topo.pods[0].host_if,
                "IPAddresses": [{"IP": topo.pods[0].ip.to_string(), "Mask": "//8AAA=="}],
                "PODName": name, "PODNameSpace": namespace}
    }}}}}}})
    .to_string()
}

/// Replaces `path` the way Azure CNI does (write aside, rename over).
fn replace(path: &Path, write: impl FnOnce(&Path)) {
    let aside = path.with_extension("new");
    write(&aside);
    fs::rename(&aside, path).expect("rename");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("tracer-faults-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn row<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter(|i| i["name"] == name)
        .collect()
}

/// One pod's traffic, proven delivered (so the counts below are exact).
fn traffic(topo: &Topology, port: u16, count: u64) {
    let (a, b) = (&topo.pods[0], &topo.pods[1]);
    let rx = Receiver::start(&b.netns, b.ip, port);
    let to = SocketAddrV4::new(b.ip, port);
    warm_up(&a.netns, &rx, to, port);
    send_udp(&a.netns, to, port, count, 64);
    assert!(rx.wait_for(count + 1, Duration::from_secs(5)));
    rx.finish();
}

#[test]
fn azure_state_truncated_huge_replaced_and_sighup_keep_tracing() {
    if !privileged("azure_state_truncated_huge_replaced_and_sighup_keep_tracing") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let dir = TempDir::new("azure");
    let state = dir.0.join("azure-vnet.json");
    fs::write(&state, azure_state(&topo, "kube-system", "coredns-abc")).unwrap();
    let run = TracerRun::start(&topo.node, &["--azure-state", state.to_str().unwrap()]);
    let hup = || {
        kill(Pid::from_raw(run.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
        // One tick (0.2 s) re-reads the files.
        std::thread::sleep(Duration::from_millis(500));
    };
    let valid = azure_state(&topo, "shop", "web-0");
    replace(&state, |p| fs::write(p, &valid[..valid.len() / 2]).unwrap());
    hup();
    hup(); // The same fault again: not logged again.
    replace(&state, |p| {
        fs::File::create(p).unwrap().set_len(1 << 30).unwrap();
    });
    hup();
    traffic(&topo, 9300, 100);
    replace(&state, |p| fs::write(p, &valid).unwrap());
    hup();
    traffic(&topo, 9301, 100);
    let (report, log) = run.stop_with_log(Signal::SIGINT);

    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("SIGHUP: re-reading"), 4, "{log}");
    assert_eq!(count("not valid JSON"), 1, "truncated: one line\n{log}");
    assert_eq!(count("over the 16 MiB"), 1, "huge: one line\n{log}");
    assert_eq!(count("panicked"), 0, "{log}");
    let pod0 = row(&report, &topo.pods[0].host_if);
    assert_eq!(pod0.len(), 1);
    assert_eq!(pod0[0]["pod"], "shop/web-0", "the replaced state is read");
    let sent = pod0[0]["ingress"]["packets"].as_u64().unwrap();
    assert!(sent >= 200, "traced all along: {sent} packets");
}

#[test]
fn bridge_recreated_and_interfaces_renamed_mid_trace() {
    if !privileged("bridge_recreated_and_interfaces_renamed_mid_trace") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let node = topo.node.clone();
    let run = TracerRun::start(&node, &[]);
    // The bridge goes and comes back under its name, its ports re-enslaved.
    ip(&node, &["link", "del", "azure0"]);
    ip(&node, &["link", "add", "azure0", "type", "bridge"]);
    for port in ["eth0", &topo.pods[0].host_if, &topo.pods[1].host_if] {
        ip(&node, &["link", "set", port, "master", "azure0"]);
    }
    ip(&node, &["link", "set", "azure0", "up"]);
    assert!(
        wait_until(Duration::from_secs(3), || !attached_programs(
            &node, "azure0"
        )
        .is_empty()),
        "the new azure0 is traced"
    );
    traffic(&topo, 9400, 100);
    // Pod 1's host veth renamed (a name change needs the link down).
    let old = topo.pods[1].host_if.clone();
    ip(&node, &["link", "set", &old, "down"]);
    ip(&node, &["link", "set", &old, "name", "renamed1"]);
    ip(&node, &["link", "set", "renamed1", "up"]);
    std::thread::sleep(Duration::from_millis(500));
    traffic(&topo, 9401, 100);
    // A new veth taking the old name is a new interface: attached too.
    ip(
        &node,
        &[
            "link", "add", &old, "type", "veth", "peer", "name", "oldpeer",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(3), || !attached_programs(&node, &old)
            .is_empty()),
        "the new {old} is traced, not mistaken for the renamed one"
    );
    let (report, log) = run.stop_with_log(Signal::SIGINT);

    let bridges = row(&report, "azure0");
    assert_eq!(bridges.len(), 2, "old and new azure0: {bridges:?}");
    assert_eq!(
        bridges.iter().filter(|b| b["vanished"] == true).count(),
        1,
        "{bridges:?}"
    );
    assert!(log.contains("new pod interface azure0: attached"), "{log}");
    assert!(
        log.contains(&format!(
            "interface {old} renamed to renamed1: still traced"
        )),
        "{log}"
    );
    let renamed = row(&report, "renamed1");
    assert_eq!(renamed.len(), 1, "{report:#}");
    let delivered = renamed[0]["egress"]["packets"].as_u64().unwrap();
    assert!(delivered >= 200, "both batches counted: {delivered}");
    let reused = row(&report, &old);
    assert_eq!(reused.len(), 1, "the new veth under the old name");
    assert_eq!(reused[0]["egress"]["packets"], 0, "{reused:?}");
}

/// A small tmpfs, unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let path = std::env::temp_dir().join(format!("tracer-full-{}", std::process::id()));
        fs::create_dir_all(&path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount tmpfs");
        Self(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn full_disk_for_json_output_is_one_line_and_exit_1() {
    if !privileged("full_disk_for_json_output_is_one_line_and_exit_1") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 1).expect("topology");
    let disk = Tmpfs::mount("4k");
    let file = fs::File::create(disk.0.join("report.json")).expect("file");
    let out = Command::new(tracer_bin())
        .args([
            "--netns", &topo.node, "--log", "error", "watch", "-d", "1", "-o", "json",
        ])
        .stdout(Stdio::from(file))
        .output()
        .expect("run tracer");
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:?}");
    assert_eq!(
        lines,
        ["tracer: error: writing the report to stdout: No space left on device (os error 28)"],
    );
    assert!(
        attached_programs(&topo.node, &topo.pods[0].host_if).is_empty(),
        "detached before writing"
    );
}
