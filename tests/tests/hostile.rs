//! Hostile input reaching the operator: DNS names a pod chose (ESC
//! sequences, NUL, newlines, invalid UTF-8, maximal names) and an interface
//! named with control bytes, through a real veth, while tracer draws on a
//! real pseudo-terminal (`script`). The exact bytes that reach the pty must
//! carry no control byte of theirs, only the `dig`-style escapes
//! (`\027`, `\.`); JSON must carry the same escaped text, from which the raw
//! bytes are recovered; Prometheus must carry no name at all.

use std::{
    ffi::OsStr,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    os::unix::ffi::OsStrExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tracer::{
    escape,
    lab::topology::{Datapath, Topology},
    netns,
};
use tracer_tests::{TracerRun, frames::DnsMsg, privileged, tracer_bin};

/// An interface name a hostile CNI (or anyone with CAP_NET_ADMIN on the
/// node) can choose: the kernel refuses `/`, `:`, whitespace and NUL in
/// names (`dev_valid_name`), not ESC or BEL. It would set the terminal's
/// title.
const EVIL_IF: &[u8] = b"\x1b]2;PWN\x07";
const EVIL_IF_SHOWN: &str = "\\027]2;PWN\\007";
const EVIL_PEER: &[u8] = b"evil\x1b[5mpeer";

/// The hostile question names, as raw labels.
fn hostile_names() -> Vec<Vec<Vec<u8>>> {
    vec![
        // Clear screen, retitle, NUL, newline, a dot inside a label, bytes
        // that are not UTF-8.
        vec![
            b"\x1b[2J\x1b]0;owned\x07".to_vec(),
            b"nul\0nl\ncr\r".to_vec(),
            b"a.b".to_vec(),
            b"\xff\xfe\xc3".to_vec(),
        ],
        // A 255-byte name of ESC bytes (3 × 63 + 61 + length bytes + root):
        // longer than the kernel's 128-byte question copy, so it is cut.
        vec![
            vec![0x1b; 63],
            vec![0x1b; 63],
            vec![0x1b; 63],
            vec![0x1b; 61],
        ],
    ]
}

/// How the first name must look everywhere (presentation format, as dig).
const NAME0_SHOWN: &str =
    "\\027[2J\\027]0\\;owned\\007.nul\\000nl\\010cr\\013.a\\.b.\\255\\254\\195";

fn wire(labels: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for label in labels {
        out.push(u8::try_from(label.len()).expect("label ≤ 63"));
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// Sends every hostile query from pod `from` to `to`:53, where nothing
/// listens (so none is ever answered: each is reported as unanswered).
fn send_hostile_queries(from: &str, to: Ipv4Addr) {
    let queries: Vec<Vec<u8>> = hostile_names()
        .iter()
        .enumerate()
        .map(|(i, labels)| {
            DnsMsg::query(0x4000 + u16::try_from(i).unwrap(), "x", 1)
                .raw_name(&wire(labels))
                .bytes()
        })
        .collect();
    netns::run_in(from, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        for q in &queries {
            socket.send_to(q, SocketAddrV4::new(to, 53)).expect("send");
        }
    })
    .expect("in the pod");
}

/// A veth pair with control bytes in its names, in the node namespace:
/// tracer traces every veth, so it lists it, attaches to it, logs it.
fn add_evil_veth(node: &str) {
    let status = Command::new("ip")
        .args(["-n", node, "link", "add"])
        .arg(OsStr::from_bytes(EVIL_IF))
        .args(["type", "veth", "peer", "name"])
        .arg(OsStr::from_bytes(EVIL_PEER))
        .status()
        .expect("ip link add");
    assert!(status.success(), "the kernel takes ESC/BEL in a name");
}

/// Every control byte in `pty` except tracer's own screen control and line
/// ends.
fn foreign_controls(pty: &[u8]) -> Vec<(usize, u8)> {
    // tracer's own: clear-and-home per frame, and entering/leaving the
    // alternate screen with the cursor hidden (tracer/src/live.rs).
    let own: [&[u8]; 3] = [
        b"\x1b[2J\x1b[H",
        b"\x1b[?1049h\x1b[?25l",
        b"\x1b[?25h\x1b[?1049l",
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < pty.len() {
        if let Some(seq) = own.iter().find(|seq| pty[i..].starts_with(seq)) {
            i += seq.len();
            continue;
        }
        let b = pty[i];
        if (b < 0x20 && b != b'\n' && b != b'\r') || b == 0x7f {
            out.push((i, b));
        }
        i += 1;
    }
    out
}

fn wait_for_file(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "tracer not ready in {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On a real pty: the live view, the log lines and the final table.
#[test]
fn hostile_names_reach_the_terminal_escaped() {
    if !privileged("hostile_names_reach_the_terminal_escaped") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    add_evil_veth(&topo.node);
    let ready = std::env::temp_dir().join(format!("tracer-hostile-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    // Info logs (they name interfaces), the live view every 0.3 s, the
    // report at the end; NO_COLOR: tracer's own colours would be ESC too.
    let command = format!(
        "{} --netns {} --log info watch --duration 4 --interval 0.3 --dns-timeout 0.5 --ready-file {}",
        tracer_bin().display(),
        topo.node,
        ready.display()
    );
    let script = std::thread::spawn(move || {
        Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env("NO_COLOR", "1")
            .output()
            .expect("run script (util-linux)")
    });
    wait_for_file(&ready, Duration::from_secs(30));
    send_hostile_queries(&topo.pods[0].netns, topo.pods[1].ip);
    let out = script.join().expect("script");
    let pty = out.stdout;
    let text = String::from_utf8_lossy(&pty);
    assert!(out.status.success(), "{text}");

    let foreign = foreign_controls(&pty);
    assert!(
        foreign.is_empty(),
        "control bytes reached the terminal at {foreign:?}:\n{text}"
    );
    assert!(!pty.contains(&0xff), "no raw invalid UTF-8");
    // The interface: in the log line, the live view and the table.
    assert!(
        text.matches(EVIL_IF_SHOWN).count() >= 3,
        "interface shown escaped in log, view and table:\n{text}"
    );
    // The names, in the table's `unanswered:` lines.
    let line_of = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("unanswered: {prefix}")))
            .unwrap_or_else(|| panic!("an unanswered line for {prefix}:\n{text}"))
            .to_owned()
    };
    let first = line_of(NAME0_SHOWN);
    assert!(first.contains(" A "), "{first}");
    let long = line_of("\\027\\027\\027");
    let shown = long
        .strip_prefix("unanswered: ")
        .and_then(|l| l.split(' ').next())
        .unwrap();
    assert!(
        shown.ends_with('…') && shown.chars().count() <= escape::TERMINAL_CAP + 1,
        "capped at {} characters: {} ({shown})",
        escape::TERMINAL_CAP,
        shown.chars().count()
    );
    let _ = std::fs::remove_file(&ready);
}

/// JSON: valid UTF-8, the same escaped names, raw bytes recoverable; the
/// Prometheus exposition carries no name and no control byte.
#[test]
fn hostile_names_in_json_are_escaped_and_recoverable_and_never_in_metrics() {
    if !privileged("hostile_names_in_json_are_escaped_and_recoverable_and_never_in_metrics") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    add_evil_veth(&topo.node);
    let metrics = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 19464);
    let run = TracerRun::start(
        &topo.node,
        &[
            "--dns-names",
            "--dns-timeout",
            "0.5",
            "--prometheus",
            &metrics.to_string(),
        ],
    );
    send_hostile_queries(&topo.pods[0].netns, topo.pods[1].ip);
    std::thread::sleep(Duration::from_secs(2));
    let exposition = netns::run_in(&topo.node, move || {
        let mut s = TcpStream::connect(metrics).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut body = Vec::new();
        s.read_to_end(&mut body).expect("response");
        body
    })
    .expect("in the node");
    let report = run.stop(Signal::SIGINT);

    let body = String::from_utf8(exposition).expect("UTF-8 exposition");
    assert!(body.contains("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.bytes().all(|b| b >= 0x20 || b == b'\n' || b == b'\r'),
        "no control byte in /metrics"
    );
    for word in ["owned", "nul", "\\\\027\\\\027"] {
        assert!(!body.contains(word), "no DNS name in /metrics ({word})");
    }
    assert!(
        body.contains(&format!(
            "interface=\"{}\"",
            EVIL_IF_SHOWN.replace('\\', "\\\\")
        )),
        "the interface label escaped: {body}"
    );

    let unanswered = report["dns"]["unanswered"].as_array().expect("unanswered");
    let names: Vec<&str> = unanswered
        .iter()
        .filter_map(|u| u["question"]["name"].as_str())
        .collect();
    assert!(names.contains(&NAME0_SHOWN), "{names:?}");
    assert_eq!(
        escape::unescape(NAME0_SHOWN).unwrap(),
        hostile_names()[0].join(&b'.'),
        "raw bytes recovered"
    );
    let cut = names
        .iter()
        .find(|n| n.starts_with("\\027\\027"))
        .expect("the long name");
    assert!(cut.ends_with('…'), "{cut}");
    assert_eq!(
        escape::unescape(cut.trim_end_matches('…')).unwrap(),
        [vec![0x1b; 63], b".".to_vec(), vec![0x1b; 63]].concat(),
        "the two whole labels of the kernel's 128-byte copy"
    );
    let iface_names: Vec<&str> = report["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(
        iface_names.contains(&std::str::from_utf8(EVIL_IF).unwrap()),
        "JSON keeps the interface's real name (serde escapes ESC as \\u001b): {iface_names:?}"
    );
}
