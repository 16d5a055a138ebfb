//! `tracer diff` on real reports: two `tracer watch -o json` runs of one lab
//! node, the second with a bridge flood. The flood run is a regression
//! against the quiet one (exit 1, the flood figures marked WORSE), the
//! reverse is not (exit 0), a report against itself has no change, and the
//! threshold flags decide what counts.

use std::{net::SocketAddrV4, path::PathBuf, process::Command, time::Duration};

use nix::sys::signal::Signal;
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{Receiver, TracerRun, privileged, tracer_bin, warm_up};

/// Two report files, removed on drop.
struct Reports(Vec<PathBuf>);

impl Reports {
    fn write(reports: &[serde_json::Value]) -> Self {
        Self(
            reports
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let path = std::env::temp_dir()
                        .join(format!("tracer-diff-{}-{i}.json", std::process::id()));
                    std::fs::write(&path, r.to_string()).expect("write report");
                    path
                })
                .collect(),
        )
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn diff(old: &PathBuf, new: &PathBuf, flags: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(tracer_bin())
        .arg("diff")
        .arg(old)
        .arg(new)
        .args(flags)
        .output()
        .expect("run tracer diff");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test_log::test]
fn a_flood_is_a_regression_and_its_end_is_not() {
    if !privileged("a_flood_is_a_regression_and_its_end_is_not") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 3).expect("topology");
    let (a, b) = (topo.pods[0].clone(), topo.pods[1].clone());
    let rx = Receiver::start(&b.netns, b.ip, 9100);
    let to = SocketAddrV4::new(b.ip, 9100);
    warm_up(&a.netns, &rx, to, 9100);

    let quiet = TracerRun::start(&topo.node, &[]);
    tracer::lab::traffic::udp_stream(&a.netns, to, 200, Duration::from_secs(1));
    let quiet = quiet.stop(Signal::SIGINT);

    tracer_tests::set_fdb_ageing(&topo, 100);
    let flooded = TracerRun::start(&topo.node, &[]);
    std::thread::sleep(Duration::from_secs(2));
    tracer::lab::traffic::udp_stream(&a.netns, to, 1000, Duration::from_secs(3));
    let flooded = flooded.stop(Signal::SIGINT);
    rx.finish();
    assert!(
        flooded["flood"]["episodes"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "the second run saw a flood"
    );

    let files = Reports::write(&[quiet, flooded]);
    let (old, new) = (&files.0[0], &files.0[1]);
    let (code, out) = diff(old, new, &[]);
    assert_eq!(code, Some(1), "{out}");
    let worse: Vec<&str> = out.lines().filter(|l| l.ends_with("WORSE")).collect();
    assert!(
        worse.iter().any(|l| l.starts_with("flood.")),
        "the flood figures are worse:\n{out}"
    );
    assert!(
        out.lines().nth(1).is_some_and(|l| l.ends_with("WORSE")),
        "worst first:\n{out}"
    );
    eprintln!("{out}");

    let (code, out) = diff(new, old, &[]);
    assert_eq!(code, Some(0), "the flood's end is no regression:\n{out}");
    assert!(out.contains(" better"), "{out}");

    let (code, out) = diff(old, old, &["--all"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 worse, 0 better, 0 changed"), "{out}");

    // Thresholds: a change must exceed both to count.
    let (code, out) = diff(old, new, &["--min-change", "1000000000"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = diff(old, &PathBuf::from("/nonexistent/report.json"), &[]);
    assert_eq!(code, Some(2), "{out}");
}
