//! `tracer check`, the node-problem-detector plugin: one line on stdout and
//! exit 0 (ok), 1 (problem) or 2 (unknown), within its time bound.

use std::{
    net::SocketAddrV4,
    process::Command,
    time::{Duration, Instant},
};

use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{Receiver, kubepod::KubePod, privileged, tracer_bin, warm_up};

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
    tracer_tests::set_fdb_ageing(&topo, 100);
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

/// `tracer watch` on a terminal redraws a per-pod view in place every
/// interval on the alternate screen (run under `script`, which gives it a
/// pseudo-terminal), leaves the alternate screen on Ctrl-C (SIGINT, sent
/// by `timeout` as the terminal would), then prints the report. Rows name
/// the pods, the flooded one first.
#[test]
fn live_view_on_a_terminal() {
    if !privileged("live_view_on_a_terminal") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 3).expect("topology");
    let names: Vec<KubePod> = ["web-1", "sink-1", "idle-1"]
        .iter()
        .zip(&topo.pods)
        .map(|(name, pod)| KubePod::name(&pod.netns, "shop", name))
        .collect();
    // A silent receiver whose FDB entry ages out: the bridge floods the
    // stream to the third pod (and the uplink).
    tracer_tests::set_fdb_ageing(&topo, 100);
    let (a, b) = (topo.pods[0].clone(), topo.pods[1].clone());
    let rx = Receiver::start(&b.netns, b.ip, 9100);
    let to = SocketAddrV4::new(b.ip, 9100);
    warm_up(&a.netns, &rx, to, 9100);
    let stream = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        tracer::lab::traffic::udp_stream(&a.netns, to, 500, Duration::from_secs(2))
    });
    let command = format!(
        "timeout --preserve-status -s INT 4.5 {} --netns {} --log error watch --interval 0.5",
        tracer_bin().display(),
        topo.node
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    stream.join().expect("stream");
    rx.finish();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit 0 on Ctrl-C: {text}");
    let enter = text
        .find("\x1b[?1049h")
        .expect("enters the alternate screen");
    let leave = text
        .rfind("\x1b[?1049l")
        .expect("leaves the alternate screen");
    let frames: Vec<usize> = text
        .match_indices("\x1b[2J\x1b[H")
        .map(|(i, _)| i)
        .collect();
    assert!(
        frames.len() >= 3,
        "redrawn every 0.5 s: {} frames\n{text}",
        frames.len()
    );
    assert!(
        frames.iter().all(|&f| enter < f && f < leave),
        "frames on the alternate screen"
    );
    let report = &text[leave..];
    assert!(
        report.contains("datapath: Bridge"),
        "report after leaving: {report}"
    );
    let last = &text[frames[frames.len() - 1]..leave];
    assert!(last.contains("POD") && last.contains("P99 MS"), "{last}");
    for pod in &names {
        assert!(
            last.contains(&pod.label) && report.contains(&pod.label),
            "{} shown",
            pod.label
        );
    }
    // The flooded pod leads both tables.
    let first_row = |table: &str| {
        let header = table.find("POD ").expect("header");
        table[header..]
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(first_row(last).starts_with("shop/idle-1"), "{last}");
    assert!(first_row(report).starts_with("shop/idle-1"), "{report}");
}
