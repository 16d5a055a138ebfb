//! `tracer lab` end to end (short scenarios): the flood shows in bridge mode
//! and not in transparent mode in every run, the verdict is a significant
//! difference, tracer's figure equals tcpdump's, and nothing is left behind.

use std::process::Command;

use tracer_tests::{privileged, tracer_bin};

#[test_log::test]
fn lab_flood_scenario_side_by_side_and_verified() {
    if !privileged("lab_flood_scenario_side_by_side_and_verified") {
        return;
    }
    let out = Command::new(tracer_bin())
        .args([
            "lab",
            "--pods",
            "3",
            "--scenario",
            "flood",
            "--duration",
            "4",
            "--repeat",
            "2",
            "--verify",
            "-o",
            "json",
        ])
        .output()
        .expect("run tracer lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tracer lab failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let runs = report["runs"].as_array().expect("runs");
    let flood = |dp: &str| -> Vec<u64> {
        runs.iter()
            .filter(|r| r["datapath"] == dp)
            .map(|r| r["flood"]["frames_flooded"].as_u64().unwrap())
            .collect()
    };
    // Every run is kept, not only the aggregate.
    assert_eq!(flood("bridge").len(), 2, "{report:#}");
    assert!(
        flood("bridge").iter().all(|&f| f > 1000),
        "bridge mode floods in every run: {report:#}"
    );
    assert_eq!(
        flood("transparent"),
        [0, 0],
        "transparent mode cannot flood"
    );
    let row = report["comparison"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["figure"] == "frames flooded")
        .expect("comparison row");
    assert_eq!(row["resolved"], "yes", "{row:#}");
    assert!(row["p_holm"].as_f64().unwrap() < 0.05, "{row:#}");
    let bridge = &row["bridge_stats"];
    assert_eq!(bridge["runs"], 2);
    let mean = bridge["mean"].as_f64().unwrap();
    assert!(
        bridge["ci_low"].as_f64().unwrap() <= mean && mean <= bridge["ci_high"].as_f64().unwrap()
    );
    // None in two runs: the exact Poisson interval's upper end, 3.689 / 2.
    let upper = row["transparent_stats"]["ci_high"].as_f64().unwrap();
    assert!((upper - 3.688_879 / 2.0).abs() < 1e-3, "{row:#}");
    for v in report["verify"].as_array().unwrap() {
        if v["truth_lower_bound"] == true {
            // tcpdump lost packets: its count is only a lower bound.
            let (ours, truth): (u64, u64) = (
                v["tracer"].as_str().unwrap().parse().unwrap(),
                v["truth"].as_str().unwrap().parse().unwrap(),
            );
            assert!(ours >= truth, "tracer vs tcpdump: {v:#}");
        } else {
            assert_eq!(v["difference"], "+0", "tracer vs tcpdump: {v:#}");
        }
    }
    // Nothing left: the lab's namespaces are gone.
    let pid = out.status.code().map(|_| ()).and(None::<u32>);
    let _ = pid;
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let leftovers: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.contains("-uplink") || l.contains("-node"))
        .filter(|l| {
            // Only namespaces of a tracer lab process that no longer runs.
            let pid: Option<i32> = l
                .strip_prefix("tr")
                .and_then(|r| r.split('x').next())
                .and_then(|p| p.parse().ok());
            pid.is_some_and(|p| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_err()
            })
        })
        .map(str::to_owned)
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// `tracer lab --plot DIR`: SVG and PNG of the DNS latency CDF, the flood
/// copies per port over time and the pod-to-pod RTT CDF, each with the
/// run's parameters in its caption; the text table still goes to stdout.
/// `TRACER_UPDATE_PICTURES=1` keeps the PNGs in docs/lab/ (the README's).
#[test_log::test]
fn lab_plot_draws_the_run() {
    if !privileged("lab_plot_draws_the_run") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tracer-lab-plot-{}", std::process::id()));
    let out = Command::new(tracer_bin())
        .args(["--log", "warn", "lab", "--pods", "3", "--duration", "2"])
        .args(["--repeat", "1"])
        .args([
            "--scenario",
            "dns",
            "--scenario",
            "flood",
            "--scenario",
            "pod-to-pod",
        ])
        .arg("--plot")
        .arg(&dir)
        .output()
        .expect("run tracer lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let table = String::from_utf8_lossy(&out.stdout);
    let files: Vec<(String, Vec<u8>)> = ["dns-latency-cdf", "flood-copies", "pod-to-pod-rtt"]
        .iter()
        .flat_map(|n| ["svg", "png"].map(|e| format!("{n}.{e}")))
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap_or_default();
            (f, bytes)
        })
        .collect();
    if std::env::var("TRACER_UPDATE_PICTURES").as_deref() == Ok("1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lab");
        std::fs::create_dir_all(&docs).expect("docs/lab");
        for (name, bytes) in files.iter().filter(|(n, _)| n.ends_with(".png")) {
            std::fs::write(docs.join(name), bytes).expect("keep picture");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "tracer lab failed: {stderr}");
    assert!(
        table.contains("SYMPTOM") && table.contains("BRIDGE"),
        "{table}"
    );
    for (name, bytes) in &files {
        assert!(bytes.len() > 2000, "{name}: {} bytes", bytes.len());
        if name.ends_with(".png") {
            assert_eq!(&bytes[1..4], b"PNG", "{name}");
        } else {
            let svg = String::from_utf8_lossy(bytes);
            assert!(
                svg.contains("3 workload pods per node, 2 s per scenario"),
                "{name}: caption"
            );
            assert!(
                svg.contains("bridge") && svg.contains("transparent"),
                "{name}: both datapaths"
            );
        }
    }
}
