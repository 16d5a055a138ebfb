//! The tracing hooks across kernels: which mechanism each hook gets, and
//! that what it reports equals the kernel's own counters and tcpdump.
//!
//! Runs here (6.18: fentry/fexit refused, no kprobes → the `kfree_skb` and
//! victim-port fallbacks) and in QEMU on Debian kernels, where nf_conntrack
//! and bridge are modules:
//! `cargo xtask vm run --kernel 6.12 -- <this test binary> matrix_ --test-threads=1`.
//! Each test asserts the mechanism this kernel must give, then measures.
//!
//! The hook tests load the programs in-process and attach only the
//! tracing hooks, so they say what a kernel gives each hook apart from the
//! TC programs; `matrix_every_tc_program_loads_and_attaches` and
//! `matrix_tracer_watch_…` then load and attach the TC programs the
//! kernel's way and run the real binary.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::Ebpf;
use serde_json::Value;
use tracer::{
    conntrack::{ConntrackCollector, stat::ConntrackStats},
    flood::collector::FloodCollector,
    hooks::{self, Attempt, Hook, HookKind, HookLinks, HookStatus},
    lab::topology::{BRIDGE, Datapath, Topology},
    netns, probes, watch,
};
use tracer_tests::{
    dns::Capture,
    frames::{Frame, L4},
    privileged,
};

const TCP_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const UDP_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 5300;
const TCP_SYN: u8 = 0x02;

/// The mechanism a hook must get on a kernel, and the BTF object for
/// fentry/fexit; `None`: no mechanism may attach.
type Want = Option<(HookKind, Option<&'static str>)>;

/// What each hook must attach with on the running kernel, by release.
/// Measured with these tests (see the README's kernel table).
fn expected(hook: &str) -> Want {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let debian_module_btf = (release.starts_with("6.1.") || release.starts_with("6.12."))
        && release.ends_with("-amd64");
    if release.starts_with("5.10.") {
        // Module BTF arrived in v5.11: fentry/fexit cannot name module
        // functions; kprobes need only the symbol.
        match hook {
            "conntrack_insert" | "conntrack_clash" => Some((HookKind::Kretprobe, None)),
            "flood_br_flood" => Some((HookKind::Kprobe, None)),
            _ => Some((HookKind::TpBtf, None)),
        }
    } else if debian_module_btf {
        match hook {
            "conntrack_insert" | "conntrack_clash" => Some((HookKind::Fexit, Some("nf_conntrack"))),
            "flood_br_flood" => Some((HookKind::Fentry, Some("bridge"))),
            _ => Some((HookKind::TpBtf, None)),
        }
    } else if release.contains("-fc-") {
        // This build host's 6.18: trampolines refused (EPERM), no kprobes.
        match hook {
            "conntrack_insert" => Some((HookKind::TpBtf, None)),
            "conntrack_clash" | "flood_br_flood" => None,
            _ => Some((HookKind::TpBtf, None)),
        }
    } else {
        panic!("no expectation for kernel {release}: measure it and add it here")
    }
}

/// nf_conntrack and bridge are modules on distribution kernels: their BTF
/// exists only once they are loaded. Built-in here (modprobe then fails
/// harmlessly).
fn load_modules() {
    for module in ["nf_conntrack", "bridge", "br_netfilter"] {
        let _ = Command::new("modprobe")
            .arg(module)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Loads the object and attaches the hooks of `area`, inside the current
/// thread's namespace.
fn attach(area: &'static str) -> (Ebpf, Vec<HookStatus>, HookLinks) {
    let kernel = probes::kernel_info();
    let mut ebpf = probes::load_full(&probes::ProbeSettings::default(), &kernel).expect("load");
    let allow = move |hook: &Hook, _: &Attempt| hook.area == area;
    let (statuses, links) = hooks::attach_filtered(&mut ebpf, &kernel, &allow);
    (ebpf, statuses, links)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn check_mechanisms(statuses: &[HookStatus]) {
    for s in statuses {
        let got = s.mechanism.map(|m| (m, s.btf_object.as_deref()));
        let want = expected(s.hook).map(|(m, o)| {
            (
                m,
                o.or(match m {
                    // fentry/fexit always name their BTF object; vmlinux when the
                    // kernel has the function built in.
                    HookKind::Fentry | HookKind::Fexit => Some("vmlinux"),
                    _ => None,
                }),
            )
        });
        eprintln!(
            "{}: {:?} (refused: {})",
            s.hook,
            got,
            s.refused
                .iter()
                .map(|r| format!("{} {}", r.kind.name(), r.error))
                .collect::<Vec<_>>()
                .join("; ")
        );
        assert_eq!(got, want, "{}: {s:#?}", s.hook);
    }
}

/// Every hook of every area attaches with the mechanism this kernel allows.
#[test_log::test]
fn matrix_hooks_attach_with_the_expected_mechanism() {
    if !privileged("matrix_hooks_attach_with_the_expected_mechanism") {
        return;
    }
    load_modules();
    let mut rows = Vec::new();
    // drops: attached here on every kernel, also before v5.17 where
    // `tracer watch` leaves it off: its reason read must pass the verifier
    // (pruned behind a load-time global) where the tracepoint has two
    // arguments.
    for area in ["conntrack", "flood", tracer::drops::AREA] {
        let (_ebpf, statuses, _links) = attach(area);
        assert!(!statuses.is_empty());
        rows.extend(statuses.iter().map(hook_row));
        check_mechanisms(&statuses);
    }
    write_matrix_file("hooks.json", &serde_json::Value::Array(rows));
}

/// One hook's outcome for the README's kernel table.
fn hook_row(s: &HookStatus) -> serde_json::Value {
    serde_json::json!({
        "hook": s.hook,
        "mechanism": s.mechanism.map(|m| m.name()),
        "btf_object": s.btf_object,
        "refused": s.refused.iter().map(|r| format!("{}: {}", r.kind.name(), r.error)).collect::<Vec<_>>(),
    })
}

/// Leaves `name` for `cargo xtask test --kernel`, which builds the README's
/// kernel × hook table from every kernel's files (`$TRACER_VM_OUT`; unset
/// outside a matrix run).
fn write_matrix_file(name: &str, value: &serde_json::Value) {
    let Some(dir) = std::env::var_os("TRACER_VM_OUT") else {
        return;
    };
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let doc = serde_json::json!({ "kernel": release, "rows": value });
    let path = std::path::Path::new(&dir).join(name);
    std::fs::write(&path, doc.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The second pod of the lab (`topology::pod_ip(1)`).
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 240, 1, 2);
const FIRST_PORT: u16 = 20000;

fn syn(round: u16) -> Vec<u8> {
    Frame::ipv4(
        CLIENT,
        TCP_SERVICE,
        L4::Tcp {
            src: FIRST_PORT + round,
            dst: TCP_PORT,
            flags: TCP_SYN,
            seq: 1000,
        },
        &[],
    )
    .tcp_dns_length_prefix(false)
    .build()
}

fn udp(round: u16) -> Vec<u8> {
    Frame::ipv4(
        CLIENT,
        UDP_SERVICE,
        L4::Udp {
            src: FIRST_PORT + round,
            dst: UDP_PORT,
        },
        &[0; 16],
    )
    .build()
}

fn kernel_counters(topo: &Topology) -> ConntrackStats {
    let out = topo
        .exec(&topo.node, "cat", &["/proc/net/stat/nf_conntrack"])
        .expect("read conntrack stats");
    ConntrackStats::parse(&String::from_utf8_lossy(&out.stdout)).expect("parse stats")
}

/// A tracer (the conntrack hooks and collector) running in `ns` until told
/// to stop; returns the conntrack report as JSON.
fn conntrack_tracer(ns: &str) -> (mpsc::Sender<()>, std::thread::JoinHandle<Value>) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = netns::spawn_in(ns, move || {
        // The collector's ring buffer registers with a tokio reactor.
        let rt = runtime();
        let _rt = rt.enter();
        let (mut ebpf, statuses, _links) = attach("conntrack");
        let mut collector = ConntrackCollector::new(&mut ebpf).expect("collector");
        ready_tx.send(()).expect("ready");
        while stop_rx.recv_timeout(Duration::from_millis(50)).is_err() {
            collector.drain();
        }
        std::thread::sleep(Duration::from_millis(200));
        collector.drain();
        let report = collector
            .report(&ebpf, statuses, &|_| None)
            .expect("report");
        serde_json::to_value(&report).expect("json")
    });
    ready_rx
        .recv_timeout(Duration::from_secs(300))
        .expect("tracer ready");
    (
        stop_tx,
        std::thread::spawn(move || handle.join().expect("tracer").expect("netns")),
    )
}

/// Identical TCP SYNs racing through DNAT lose an insert (TCP allows no
/// clash: NF_DROP in `__nf_conntrack_confirm`); identical UDP packets
/// racing are merged (`nf_ct_resolve_clash`, NF_ACCEPT). tracer's counts
/// equal the kernel's `insert_failed` and `clash_resolve`, and each drop is
/// attributed with its tuple — by whichever mechanism this kernel allows.
#[test_log::test]
fn matrix_conntrack_drops_and_clashes_equal_kernel_counters() {
    if !privileged("matrix_conntrack_drops_and_clashes_equal_kernel_counters") {
        return;
    }
    load_modules();
    let topo = Topology::build(Datapath::Transparent, 2).expect("topology");
    let (backend, client) = (topo.pods[0].clone(), topo.pods[1].clone());
    assert_eq!(client.ip, CLIENT, "pod addresses of the lab");
    topo.add_service(TCP_SERVICE, TCP_PORT, &[backend.ip])
        .expect("tcp service");
    topo.add_service(UDP_SERVICE, UDP_PORT, &[backend.ip])
        .expect("udp service");
    // What comes back (SYN-ACK/RST, ICMP) must not make the client answer.
    topo.exec(&client.netns, "iptables", &["-A", "INPUT", "-j", "DROP"])
        .expect("client firewall");

    let before = kernel_counters(&topo);
    let (stop, tracer) = conntrack_tracer(&topo.node);
    let start = Instant::now();
    let mut rounds = 0u32;
    loop {
        // A new source port per round: every round creates new entries.
        tracer_tests::race_pinned(&client.netns, TCP_SERVICE, 500, syn);
        tracer_tests::race_pinned(&client.netns, UDP_SERVICE, 500, udp);
        rounds += 500;
        let d = kernel_counters(&topo).delta(&before);
        let enough = d.insert_failed >= 3 && d.clash_resolved.unwrap_or(0) >= 3;
        if enough || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        // Sources repeat after this many rounds: flush to start afresh.
        topo.exec(&topo.node, "conntrack", &["-F"]).ok();
    }
    stop.send(()).expect("stop");
    let report = tracer.join().expect("tracer thread");
    let truth = kernel_counters(&topo).delta(&before);
    let statuses = report["hooks"].as_array().expect("hooks").clone();
    eprintln!(
        "{rounds} rounds: kernel insert_failed +{}, clash_resolve +{:?}; tracer mode {} {}",
        truth.insert_failed, truth.clash_resolved, report["mode"], report["tracer"]
    );
    let mechanism = |hook: &str| {
        statuses
            .iter()
            .find(|s| s["hook"] == hook)
            .map(|s| (s["mechanism"].clone(), s["btf_object"].clone()))
            .unwrap_or_else(|| panic!("{hook} in {statuses:#?}"))
    };
    for hook in ["conntrack_insert", "conntrack_clash"] {
        let want = expected(hook);
        let (m, object) = mechanism(hook);
        assert_eq!(
            m.as_str(),
            want.map(|(k, _)| k.name()),
            "{hook}: {statuses:#?}"
        );
        if let Some((_, Some(o))) = want {
            assert_eq!(object, o, "{hook}");
        }
    }
    assert!(
        truth.insert_failed >= 1,
        "the SYN race never lost an insert in {rounds} rounds"
    );
    let count = |name: &str| report["tracer"][name].as_u64().unwrap_or(0);
    let kind = match report["mode"].as_str() {
        Some("fexit" | "kretprobe") => "insert_drops",
        Some("kfree_skb") => "unconfirmed_drops",
        other => panic!("no conntrack insert hook ({other:?})"),
    };
    assert_eq!(count(kind), truth.insert_failed, "{report:#}");
    if expected("conntrack_clash").is_some() {
        let resolved = truth.clash_resolved.expect("kernel has clash_resolve");
        assert!(
            resolved >= 1,
            "the UDP race never clashed in {rounds} rounds"
        );
        assert_eq!(count("clashes_resolved"), resolved, "{report:#}");
    }
    let events: Vec<&Value> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect();
    // The report lists at most 500 events; the rest are counted per kind.
    let not_listed = report["events_not_listed"][kind].as_u64().unwrap_or(0);
    assert_eq!(events.len() as u64 + not_listed, truth.insert_failed);
    for e in events {
        assert_eq!(e["protocol"], "tcp", "{e}");
        let original = e["original"].as_str().unwrap();
        assert!(original.starts_with(&format!("{CLIENT}:")), "{original}");
        assert!(
            original.ends_with(&format!("-> {TCP_SERVICE}:{TCP_PORT}")),
            "{original}"
        );
        let reply = e["reply"].as_str().unwrap();
        assert!(
            reply.starts_with(&format!("{}:{TCP_PORT} ->", backend.ip)),
            "DNAT'd to the backend: {reply}"
        );
    }
}

/// The fake destination of the flood test: an address whose MAC the
/// bridge never learns.
const NOWHERE: Ipv4Addr = Ipv4Addr::new(10, 240, 9, 9);
const NOWHERE_MAC: &str = "02:00:00:00:00:99";
const FLOODED: u64 = 300;

/// Unicast frames to a MAC no port has: the bridge floods each to every
/// other port. br_flood's count (fentry or kprobe, whichever attached)
/// equals tcpdump's on a bystander port.
#[test_log::test]
fn matrix_br_flood_frames_equal_tcpdump_on_a_bystander_port() {
    if !privileged("matrix_br_flood_frames_equal_tcpdump_on_a_bystander_port") {
        return;
    }
    load_modules();
    let topo = Topology::build(Datapath::Bridge, 3).expect("topology");
    let (sender, bystander) = (topo.pods[0].clone(), topo.pods[2].clone());
    unknown_unicast_route(&topo, &sender.netns);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let tracer = netns::spawn_in(&topo.node, move || {
        let rt = runtime();
        let _rt = rt.enter();
        let (mut ebpf, statuses, _links) = attach("flood");
        let links = rt.block_on(tracer::interfaces::list()).expect("links");
        let mut collector = rt
            .block_on(FloodCollector::start(
                &mut ebpf,
                watch::monotonic_ns(),
                &links,
                &tracer::pods::PodIndex::default(),
                &[],
            ))
            .expect("collector");
        ready_tx.send(()).expect("ready");
        stop_rx.recv().expect("stop");
        std::thread::sleep(Duration::from_millis(200));
        let report = collector
            .report(&ebpf, watch::monotonic_ns(), statuses, &|i| i.to_string())
            .expect("report");
        serde_json::to_value(&report).expect("json")
    });
    ready_rx
        .recv_timeout(Duration::from_secs(300))
        .expect("tracer ready");
    let capture = Capture::start_filtered(
        &topo.node,
        &bystander.host_if,
        &format!("ether dst {NOWHERE_MAC}"),
    );
    netns::run_in(&sender.netns, || {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        for _ in 0..FLOODED {
            socket.send_to(&[0; 32], (NOWHERE, 9)).expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .expect("netns");
    let on_wire = capture.count();
    // FDB removals on the traced bridge: the scoped fdb_delete program reads
    // the bridge, port and entry members. Without a VLAN, `bridge fdb add`
    // makes one entry per VLAN of the port (vid 0, and the default pvid 1
    // on kernels built with VLAN filtering): `bridge fdb show` counts them.
    let fdb = |args: &[&str]| {
        let out = topo.exec(&topo.node, "bridge", args).expect("bridge fdb");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    fdb(&[
        "fdb",
        "add",
        FDB_MAC,
        "dev",
        &bystander.host_if,
        "master",
        "static",
    ]);
    let entries = fdb(&["fdb", "show", "br", BRIDGE])
        .lines()
        .filter(|l| l.starts_with(FDB_MAC))
        .count() as u64;
    fdb(&["fdb", "del", FDB_MAC, "dev", &bystander.host_if, "master"]);
    std::thread::sleep(Duration::from_millis(100));
    stop_tx.send(()).expect("stop");
    let report = tracer.join().expect("tracer").expect("netns");
    assert!(entries >= 1, "bridge fdb show: {entries} entries");
    assert_eq!(report["fdb_deletes"].as_u64(), Some(entries), "{report:#}");
    let hook = report["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .find(|h| h["hook"] == "flood_br_flood")
        .cloned()
        .expect("br_flood hook");
    let want = expected("flood_br_flood");
    assert_eq!(
        hook["mechanism"].as_str(),
        want.map(|(k, _)| k.name()),
        "{hook:#}"
    );
    let ours: u64 = report["bridge_floods"]
        .as_array()
        .expect("bridge_floods")
        .iter()
        .filter(|f| f["dst_mac"] == NOWHERE_MAC)
        .map(|f| f["frames"].as_u64().unwrap())
        .sum();
    eprintln!(
        "flooded to {NOWHERE_MAC}: br_flood {ours}, tcpdump on {} {on_wire}, sent {FLOODED}",
        bystander.host_if
    );
    assert_eq!(on_wire, FLOODED, "every frame flooded to the bystander");
    if want.is_some() {
        assert_eq!(ours, on_wire, "{report:#}");
    } else {
        assert_eq!(ours, 0, "no br_flood hook, no counts");
    }
}

/// A static entry added and deleted on the flood test's bridge.
const FDB_MAC: &str = "02:00:00:00:00:aa";

/// Every TC program of the object passes this kernel's verifier (the
/// combined ones, each area's, and the DNS tail-call target) and attaches
/// the way the kernel offers: TCX from v6.6, clsact + cls_bpf before. A
/// DNS query sent through the combined programs reaches the DNS program
/// (the tail call is linked: no `dns_tail_call_failed`).
#[test_log::test]
fn matrix_every_tc_program_loads_and_attaches() {
    use tracer::{
        attach::{TcAttachMode, TcAttachments},
        counter, dns, flood, loss, watch,
    };
    if !privileged("matrix_every_tc_program_loads_and_attaches") {
        return;
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let want_mode = if release.starts_with("5.") || release.starts_with("6.1.") {
        TcAttachMode::Legacy
    } else {
        TcAttachMode::Tcx
    };
    assert_eq!(TcAttachMode::detect(), want_mode, "kernel {release}");
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (client, server) = (topo.pods[0].clone(), topo.pods[1].clone());
    let host_ifs: Vec<String> = topo.pods.iter().map(|p| p.host_if.clone()).collect();
    let (modes, tail_failures) = netns::run_in(&topo.node, move || {
        let mut ebpf = probes::load().expect("load eBPF object");
        let mut modes = Vec::new();
        let mut sets = Vec::new();
        for programs in [
            &watch::TC_PROGRAMS[..],
            &counter::PROGRAMS[..],
            &dns::PROGRAMS[..],
            &flood::PROGRAMS[..],
        ] {
            let tc = TcAttachments::load(&mut ebpf, programs)
                .unwrap_or_else(|e| panic!("kernel {release}: {e}"));
            modes.push(tc.mode());
            sets.push(tc);
        }
        // The combined programs on every pod port, as `tracer watch` does.
        for iface in &host_ifs {
            sets[0].attach(&mut ebpf, iface).expect("attach");
        }
        // No server listens: the query alone must reach the DNS program.
        let _unanswered = tracer_tests::dns::query(
            &client.netns,
            std::net::SocketAddrV4::new(server.ip, 53),
            "matrix.lab.test",
            1,
            tracer_tests::dns::Transport::Udp,
            Duration::from_millis(200),
        );
        let failures = loss::read(&ebpf)
            .expect("losses")
            .into_iter()
            .find(|(l, _)| l.name() == "dns_tail_call_failed")
            .map_or(0, |(_, n)| n);
        let queries = dns::collector::read_stats(&ebpf).expect("DNS stats")
            [tracer_common::dns::DnsStat::Queries as usize];
        for mut tc in sets {
            tc.detach_all(&mut ebpf);
        }
        (modes, (failures, queries))
    })
    .expect("enter node namespace");
    assert!(modes.iter().all(|m| *m == want_mode), "{modes:?}");
    assert_eq!(
        tail_failures.0, 0,
        "every DNS packet reached the DNS program"
    );
    assert!(
        tail_failures.1 >= 1,
        "the query was seen by the DNS program"
    );
}

/// Routes [`NOWHERE`] out of `netns`'s eth0 to [`NOWHERE_MAC`], a MAC no
/// port owns: every frame sent there is unknown unicast, which the bridge
/// floods to every other port.
fn unknown_unicast_route(topo: &Topology, netns: &str) {
    let nowhere = NOWHERE.to_string();
    for args in [
        vec!["route", "add", &nowhere, "dev", "eth0"],
        vec![
            "neigh",
            "replace",
            &nowhere,
            "lladdr",
            NOWHERE_MAC,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    ] {
        topo.exec(netns, "ip", &args).expect("ip");
    }
}

/// The real `tracer watch` on this kernel's attach path (legacy before 6.6),
/// end to end on a bridge node: glibc lookups against dnsmasq counted and
/// timed as tshark sees them on the client's veth, and frames the bridge
/// floods counted on a bystander port as tcpdump sees them there. Loose on
/// time (TCG is slow), exact on counts.
#[test_log::test]
fn matrix_tracer_watch_dns_and_flood_equal_tshark_and_tcpdump() {
    use nix::sys::signal::Signal;
    use tracer_tests::{
        TracerRun,
        dns::{DnsServer, ResolvConf, allow_aaaa_lookups, getent_ahosts},
    };
    const LOOKUPS: usize = 5;
    if !privileged("matrix_tracer_watch_dns_and_flood_equal_tshark_and_tcpdump") {
        return;
    }
    load_modules();
    let topo = Topology::build(Datapath::Bridge, 3).expect("topology");
    let (client, server, bystander) = (
        topo.pods[0].clone(),
        topo.pods[1].clone(),
        topo.pods[2].clone(),
    );
    let records = [(
        "api.lab.test",
        Ipv4Addr::new(10, 0, 0, 1),
        "fd00::1".parse().expect("v6"),
    )];
    let _dns = DnsServer::start(&server.netns, server.ip, &records);
    let _resolv = ResolvConf::write(&client.netns, server.ip, &["timeout:5", "attempts:2"]);
    allow_aaaa_lookups(&client.netns);
    unknown_unicast_route(&topo, &client.netns);

    let tracer = TracerRun::start(&topo.node, &[]);
    let dns_capture = Capture::start(&topo.node, &client.host_if);
    for _ in 0..LOOKUPS {
        let lookup = getent_ahosts(&client.netns, "api.lab.test");
        assert!(lookup.ok(), "{lookup:?}");
    }
    let flood_capture = Capture::start_filtered(
        &topo.node,
        &bystander.host_if,
        &format!("ether dst {NOWHERE_MAC}"),
    );
    netns::run_in(&client.netns, || {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        for _ in 0..FLOODED {
            socket.send_to(&[0; 32], (NOWHERE, 9)).expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .expect("netns");
    let flooded_on_wire = flood_capture.count();
    let packets = dns_capture.stop();
    std::thread::sleep(Duration::from_millis(500));
    let report = tracer.stop(Signal::SIGINT);

    let answers = packets.iter().filter(|p| p.response).count() as u64;
    assert_eq!(answers, 2 * LOOKUPS as u64, "tshark: A + AAAA answers");
    let row = report["dns"]["latency"]
        .as_array()
        .expect("latency rows")
        .iter()
        .find(|r| r["interface"] == client.host_if.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no latency row for {}: {report:#}", client.host_if));
    assert_eq!(row["answers"].as_u64(), Some(answers), "{row:#}");
    let victims = report["flood"]["victims"]
        .as_array()
        .expect("victims")
        .iter()
        .find(|v| v["interface"] == bystander.host_if.as_str())
        .map_or(0, |v| v["victim_packets"].as_u64().unwrap_or(0));
    eprintln!(
        "tc_attach {}: DNS answers tracer {} / tshark {answers}; flooded copies on {} tracer {victims} / tcpdump {flooded_on_wire}",
        report["tc_attach"], row["answers"], bystander.host_if
    );
    assert_eq!(
        flooded_on_wire, FLOODED,
        "every frame flooded to the bystander"
    );
    assert_eq!(victims, flooded_on_wire, "victim copies = tcpdump's");
    let losses: u64 = report["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .map(|l| l["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(losses, 0, "{report:#}");
}
