//! `tracer check`, the node-problem-detector plugin: one line on stdout and
//! exit 0 (ok), 1 (problem) or 2 (unknown), within its time bound.

use std::{
    net::SocketAddrV4,
    process::Command,
    time::{Duration, Instant},
};

use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{Receiver, privileged, tracer_bin, warm_up};

fn check(node: &str, seconds: &str) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let out = Command::new(tracer_bin())
        .args([
            "--netns",
            node,
            "--log",
            "error",
            "check",
            "--duration",
            seconds,
        ])
        .output()
        .expect("run tracer check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        start.elapsed(),
    )
}

#[test_log::test]
fn quiet_node_is_ok_and_flooding_node_is_a_problem() {
    if !privileged("quiet_node_is_ok_and_flooding_node_is_a_problem") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 3).expect("topology");
    let (code, stdout, took) = check(&topo.node, "2");
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.starts_with("OK:"), "{stdout}");
    assert!(took < Duration::from_secs(15), "bounded: {took:?}");

    // A silent receiver whose FDB entry ages out while the check runs: the
    // bridge floods.
    topo.exec(
        &topo.node,
        "ip",
        &[
            "link",
            "set",
            "azure0",
            "type",
            "bridge",
            "ageing_time",
            "100",
        ],
    )
    .expect("ageing");
    let node = topo.node.clone();
    let checker = std::thread::spawn(move || check(&node, "7"));
    std::thread::sleep(Duration::from_secs(2));
    let (a, b) = (topo.pods[0].clone(), topo.pods[1].clone());
    let rx = Receiver::start(&b.netns, b.ip, 9100);
    let to = SocketAddrV4::new(b.ip, 9100);
    warm_up(&a.netns, &rx, to, 9100);
    tracer::lab::traffic::udp_stream(&a.netns, to, 1000, Duration::from_secs(4));
    let (code, stdout, _) = checker.join().expect("checker");
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(
        stdout.starts_with("PROBLEM:") && stdout.contains("flooding"),
        "{stdout}"
    );
    assert!(
        stdout.contains("transparent mode resolves: Yes"),
        "{stdout}"
    );
    rx.finish();
}

#[test]
fn check_that_cannot_trace_is_unknown() {
    if !privileged("check_that_cannot_trace_is_unknown") {
        return;
    }
    let (code, stdout, _) = check("tracer-no-such-namespace", "1");
    assert_eq!(code, Some(2), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.starts_with("UNKNOWN:"), "{stdout}");
}

/// `tracer watch` on a terminal redraws a per-interface view every interval
/// (run under `script`, which gives it a pseudo-terminal), then prints the
/// report.
#[test]
fn live_view_on_a_terminal() {
    if !privileged("live_view_on_a_terminal") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let command = format!(
        "{} --netns {} --log error watch --duration 2.5 --interval 0.5",
        tracer_bin().display(),
        topo.node
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let screens = text.matches("\x1b[2J\x1b[H").count();
    assert!(
        screens >= 3,
        "redrawn every 0.5 s: {screens} screens\n{text}"
    );
    assert!(text.contains("IN PPS") && text.contains("P99 MS"), "{text}");
    for pod in &topo.pods {
        assert!(text.contains(&pod.host_if), "{} in the view", pod.host_if);
    }
    assert!(
        text.contains("datapath: Bridge"),
        "final report follows: {text}"
    );
}
