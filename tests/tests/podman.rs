//! tracer's image under a real container runtime: Debian's podman (crun)
//! builds `deploy/Containerfile` from `target/dist`, and plays the pods that
//! `deploy/daemonset.yaml` and `deploy/examples/check-job.yaml` would
//! create (translated by `tracer_tests::podman`, which says what changes
//! and why) in a lab node's network namespace.
//!
//! The DaemonSet's pod must attach to the node's pod veths, serve
//! `/metrics` where its args say, count a known number of datagrams exactly
//! (ground truth: the datagrams sent, and the kernel's rx counter of the
//! same veth), stop on `podman kube down`
//! (SIGTERM) with exit 0 within the grace period, and leave no TC program,
//! container, pod or namespace behind. The check Job's exit codes (0, 1, 2)
//! must reach podman.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    batch::v1::Job,
    core::v1::{Container, PodTemplateSpec, SeccompProfile},
};
use tracer::lab::topology::{BRIDGE, Datapath, Topology};
use tracer_tests::{
    Receiver, attached_programs,
    kubepod::KubePod,
    manifests::{documents, object},
    podman::{self, PlayedPod},
    privileged,
    prometheus::http_get,
    send_udp, warm_up,
};

const COUNT: u64 = 200;
const PORT: u16 = 6200;
/// The capabilities' bits (include/uapi/linux/capability.h).
const CAP_BITS: [(&str, u32); 3] = [("CAP_NET_ADMIN", 12), ("CAP_PERFMON", 38), ("CAP_BPF", 39)];

fn the_container(template: &PodTemplateSpec) -> &Container {
    let spec = template.spec.as_ref().expect("pod spec");
    assert_eq!(spec.containers.len(), 1, "one container");
    &spec.containers[0]
}

/// `--prometheus ADDR` of the container's args.
fn metrics_addr(container: &Container) -> SocketAddr {
    let args = container.args.as_deref().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--prometheus")
        .expect("--prometheus in the args");
    args[at + 1].parse().expect("--prometheus ADDR")
}

/// The template as a runtime whose default profile refuses bpf() to the
/// pod's capabilities must run it: with `seccompProfile: Unconfined`, as
/// deploy/README.md tells such runtimes' users.
fn unconfined(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    let spec = template.spec.as_mut().expect("pod spec");
    for container in &mut spec.containers {
        container
            .security_context
            .get_or_insert_with(Default::default)
            .seccomp_profile = Some(SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        });
    }
    template
}

/// Plays the template as written. Where podman's default profile refuses
/// bpf() to the pod's capabilities (Debian 12: only CAP_SYS_ADMIN may call
/// it), a `RuntimeDefault` pod must fail the way deploy/README.md says
/// (EPERM, exit 2 for `check`, non-zero for `watch`), and the returned
/// template is the README's remedy; otherwise the template as written.
fn as_this_runtime_runs_it(node: &str, name: &str, template: &PodTemplateSpec) -> PodTemplateSpec {
    let spec = template.spec.as_ref().expect("pod spec");
    let container = the_container(template);
    let profile = podman::effective_seccomp(spec, container);
    let caps = podman::kernel_cap_names(container);
    if profile.type_ != "RuntimeDefault" || podman::default_profile_allows("bpf", &caps) {
        return template.clone();
    }
    let pod = podman::pod_from_template(name, None, template);
    let mut played = PlayedPod::play(node, &pod);
    let code = played.wait_exited(&container.name, Duration::from_secs(60));
    let (stdout, stderr) = played.logs();
    played.down();
    assert_ne!(
        code, 0,
        "tracer ran under a profile refusing bpf(): {stderr}"
    );
    assert!(
        stderr.contains("Operation not permitted") || stdout.contains("Operation not permitted"),
        "RuntimeDefault with {caps:?}: exit {code}, expected EPERM: {stdout}{stderr}"
    );
    eprintln!(
        "RuntimeDefault under podman's default profile with {caps:?}: exit {code}, \
         EPERM as deploy/README.md says; playing it again Unconfined"
    );
    unconfined(template)
}

/// CapEff, Uid, NoNewPrivs and Seccomp of a process.
fn status_of(pid: &str) -> (u64, String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    (
        u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff"),
        field("Uid:"),
        field("NoNewPrivs:"),
        field("Seccomp:"),
    )
}

/// The kernel's count of packets `iface` in `node` received from its peer
/// (`ip -s -j link`): what TC ingress sees on a host-side veth.
fn rx_packets(node: &str, iface: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-n", node, "-s", "-j", "link", "show", "dev", iface])
        .output()
        .expect("spawning ip");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j JSON");
    links[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("rx packets of {iface}: {links}"))
}

/// The container's process as the template says: the manifest's
/// capabilities and nothing else, uid 0, no_new_privs
/// (allowPrivilegeEscalation: false), the seccomp mode of its profile (0:
/// none, 2: filter), the memory limit as its memory cgroup's (BPF maps are
/// charged to it), and a read-only root (readOnlyRootFilesystem).
fn assert_process_as_written(pid: &str, template: &PodTemplateSpec) {
    let container = the_container(template);
    let caps = podman::kernel_cap_names(container);
    let mask = CAP_BITS
        .iter()
        .filter(|(name, _)| caps.iter().any(|c| c == name))
        .fold(0u64, |m, (_, bit)| m | 1 << bit);
    assert_eq!(caps.len(), mask.count_ones() as usize, "{caps:?} all known");
    let seccomp = podman::effective_seccomp(template.spec.as_ref().expect("pod spec"), container);
    let mode = if seccomp.type_ == "Unconfined" {
        "0"
    } else {
        "2"
    };
    assert_eq!(
        status_of(pid),
        (mask, "0".into(), "1".into(), mode.into()),
        "CapEff, Uid, NoNewPrivs, Seccomp of the container's tracer"
    );
    let limit = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .expect("a memory limit");
    assert_eq!(
        Some(memory_limit(pid)),
        quantity_bytes(&limit.0),
        "memory limit {limit:?}"
    );
    assert!(root_read_only(pid), "readOnlyRootFilesystem");
}

/// The memory limit of a process's memory cgroup: cgroup v1
/// `memory.limit_in_bytes` or v2 `memory.max`.
fn memory_limit(pid: &str) -> u64 {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let (dir, file) = cgroups
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            if controllers.split(',').any(|c| c == "memory") {
                Some((
                    format!("/sys/fs/cgroup/memory{path}"),
                    "memory.limit_in_bytes",
                ))
            } else if controllers.is_empty() && !Path::new("/sys/fs/cgroup/memory").exists() {
                Some((format!("/sys/fs/cgroup{path}"), "memory.max"))
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no memory cgroup in {cgroups}"));
    let text = std::fs::read_to_string(Path::new(&dir).join(file))
        .unwrap_or_else(|e| panic!("{dir}/{file}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{dir}/{file}: {text}"))
}

/// A Kubernetes memory quantity in bytes (`1Gi`, `64Mi`, `512`).
fn quantity_bytes(quantity: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 3] = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)];
    SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| {
            quantity
                .strip_suffix(suffix)
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| n * unit)
        })
        .or_else(|| quantity.parse().ok())
}

/// Whether the process's root is mounted read-only (its mountinfo: the
/// last mount on `/` is the one it sees).
fn root_read_only(pid: &str) -> bool {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    info.lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[4] == "/")
        .is_some_and(|f| f[5].split(',').any(|o| o == "ro"))
}

/// The named network namespaces podman makes for a pod that has its own
/// network (`cni-…` with the CNI backend of Debian 12's podman, `netns-…`
/// with netavark). Other names belong to the tests and engineers sharing
/// the machine, who make and remove theirs meanwhile.
fn podman_netns() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("cni-") || name.starts_with("netns-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The log line tracer writes just before its session reads the counters'
/// baseline: packets counted before that are not the session's.
const SESSION_LOG: &str = "INFO datapath: ";
/// From that line to the baseline: the flood collector's start, a few
/// map reads (milliseconds; the margin is for a loaded machine).
const SESSION_SETTLE: Duration = Duration::from_secs(1);

/// Polls until `/metrics` in `node` answers 200 with `tracer_up 1`, a
/// program is attached to each of `ifaces`, and the session has started
/// (`SESSION_LOG` + `SESSION_SETTLE`). `/metrics` and the TC programs are
/// up before the session: the manifest's args give no readiness signal of
/// their own (no `--ready-file`, no probe). The first full snapshot comes
/// one `--interval` after the start, 60 s with the manifest's args: until
/// then a scrape shows `tracer_up` alone.
fn wait_until_tracing(node: &str, addr: SocketAddr, ifaces: &[&str], played: &PlayedPod) {
    let start = Instant::now();
    let runs_before = played.logs().1.matches(SESSION_LOG).count();
    loop {
        let response = http_get(node, addr, "/metrics", None);
        let (stdout, stderr) = played.logs();
        if response.status == 200
            && response.body.lines().any(|l| l == "tracer_up 1")
            && stderr.matches(SESSION_LOG).count() > runs_before
            && ifaces
                .iter()
                .all(|i| !attached_programs(node, i).is_empty())
        {
            std::thread::sleep(SESSION_SETTLE);
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not serving on {addr}, attached to {ifaces:?} and tracing after 60 s ({} {}\n{}); \
             logs: {stdout}{stderr}",
            response.status,
            response.head,
            response.body,
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn daemonset_pod_runs_under_podman() {
    const TEST: &str = "daemonset_pod_runs_under_podman";
    if !privileged(TEST) || !podman::available(TEST) {
        return;
    }
    let started = Instant::now();
    let ds: DaemonSet = object(&documents("daemonset.yaml"));
    let template = ds.spec.expect("DaemonSet spec").template;
    let container = the_container(&template).clone();
    let image = container.image.clone().expect("image");
    let built = podman::build_image(&image);

    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (a, b) = (&topo.pods[0], &topo.pods[1]);
    let named = KubePod::name(&a.netns, "shop", "web-1");
    let rx = Receiver::start(&b.netns, b.ip, PORT);
    let to = SocketAddrV4::new(b.ip, PORT);
    warm_up(&a.netns, &rx, to, PORT);
    let netns_before = podman_netns();

    // A DaemonSet's pods are named <daemonset>-<suffix>.
    let name = format!("tracer-{}", std::process::id());
    let template = as_this_runtime_runs_it(&topo.node, &name, &template);
    let pod = podman::pod_from_template(&name, ds.metadata.namespace.as_deref(), &template);
    let mut played = PlayedPod::play(&topo.node, &pod);

    let addr = metrics_addr(&container);
    let ifaces = [a.host_if.as_str(), b.host_if.as_str(), BRIDGE];
    wait_until_tracing(&topo.node, addr, &ifaces, &played);
    let ready = started.elapsed();

    let pid = played.inspect(&container.name, "{{.State.Pid}}");
    assert_process_as_written(&pid, &template);

    let before = rx_packets(&topo.node, &a.host_if);
    send_udp(&a.netns, to, PORT, COUNT, 64);
    assert!(rx.wait_for(COUNT + 1, Duration::from_secs(5)));
    let grace = grace_period(&template);
    let stop = played.stop(grace);
    let seen = rx_packets(&topo.node, &a.host_if) - before;
    rx.finish();

    let code = played.exit_code(&container.name);
    let (stdout, stderr) = played.logs();
    assert_eq!(
        code,
        Some(0),
        "tracer's exit on SIGTERM after {stop:?}: {stdout}{stderr}"
    );
    assert!(
        stop < grace,
        "podman pod stop took {stop:?}, the grace period is {grace:?}: {stderr}"
    );
    let rows = podman::table_rows(&stdout);
    let (pod_name, row) = rows
        .get(&a.host_if)
        .unwrap_or_else(|| panic!("no row for {} in the report: {stdout}", a.host_if));
    // Not asserted: with the manifest's capabilities (no CAP_SYS_PTRACE)
    // tracer cannot stat another root process's /proc/PID/ns/net, so the
    // veth → process → pod path finds nothing here (deploy/README.md).
    // The named pod still makes /var/log/pods exist, which the pod mounts
    // (type Directory), as on a node.
    eprintln!(
        "{} is shown as pod {pod_name:?} (named {})",
        a.host_if, named.label
    );
    assert_eq!(
        (row[0], seen),
        (COUNT, COUNT),
        "packets the pod sent into {}: tracer's report (left), the kernel's rx \
         counter (right)\n{stdout}{stderr}",
        a.host_if
    );
    assert_nothing_attached(&topo.node, &ifaces, "SIGTERM");

    // `podman kube down` (4.3: SIGKILL at once) of a running pod: the
    // kernel drops the TCX links with the process.
    played.start();
    wait_until_tracing(&topo.node, addr, &ifaces, &played);
    let down = played.down();
    assert_eq!(played.exit_code(&container.name), Some(137), "SIGKILL");
    assert_nothing_attached(&topo.node, &ifaces, "kube down");
    assert_eq!(
        PlayedPod::leftovers(&name),
        (Vec::new(), false),
        "containers, pod"
    );
    let added: Vec<String> = podman_netns().difference(&netns_before).cloned().collect();
    assert!(
        added.is_empty(),
        "network namespaces left by podman: {added:?}"
    );
    eprintln!(
        "podman: image build {built:?}, serving {ready:?} after the test's start, \
         {seen} packets counted = the kernel's, pod stop (SIGTERM) {stop:?} (grace period \
         {grace:?}), kube down (SIGKILL) {down:?}, test {:?}",
        started.elapsed()
    );
}

fn assert_nothing_attached(node: &str, ifaces: &[&str], after: &str) {
    for iface in ifaces {
        let left = attached_programs(node, iface);
        assert!(left.is_empty(), "{iface} still has {left:?} after {after}");
    }
}

fn grace_period(template: &PodTemplateSpec) -> Duration {
    let seconds = template
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).expect("grace period >= 0"))
}

/// `tracer check` as the Job's pod: exit 0 on a quiet node, 1 on a flooding
/// one, 2 where it cannot trace; podman records each code. The three 30 s
/// checks (the Job's `--duration 30`) run at once.
#[test]
fn check_job_exit_codes_reach_podman() {
    const TEST: &str = "check_job_exit_codes_reach_podman";
    if !privileged(TEST) || !podman::available(TEST) {
        return;
    }
    let started = Instant::now();
    let job: Job = object(&documents("examples/check-job.yaml"));
    let written = job.spec.expect("Job spec").template;
    let container = the_container(&written).clone();
    podman::build_image(container.image.as_deref().expect("image"));

    let quiet = Topology::build(Datapath::Bridge, 2).expect("topology");
    let flooding = Topology::build(Datapath::Bridge, 3).expect("topology");
    let unknown = Topology::build(Datapath::Bridge, 2).expect("topology");
    // A named pod: /var/log/pods exists (the Job mounts it, type Directory),
    // as on a node. The check names the flooded veth, not this name: see
    // daemonset_pod_runs_under_podman.
    let _named = KubePod::name(&flooding.pods[2].netns, "shop", "bystander-1");
    tracer_tests::set_fdb_ageing(&flooding, 100);

    // Job pods are named <job>-<suffix>.
    let name = |what: &str| format!("tracer-check-{what}-{}", std::process::id());
    let (runnable, cannot_trace) = runnable_and_cannot_trace(&written);
    let namespace = job.metadata.namespace.as_deref();
    let mut pods: Vec<(PlayedPod, i64, &str)> = Vec::new();
    let mut play = |node: &str, what: &str, template: &PodTemplateSpec, code, prefix| {
        let pod = podman::pod_from_template(&name(what), namespace, template);
        pods.push((PlayedPod::play(node, &pod), code, prefix));
    };
    play(&unknown.node, "unknown", &cannot_trace, 2, "UNKNOWN:");
    play(&quiet.node, "quiet", &runnable, 0, "OK:");
    play(&flooding.node, "flooding", &runnable, 1, "PROBLEM:");

    // A silent receiver whose FDB entry ages out while the check runs: the
    // bridge floods to the third pod (as in deploy.rs and check.rs).
    let (a, b) = (&flooding.pods[0], &flooding.pods[1]);
    let start = Instant::now();
    while attached_programs(&flooding.node, &a.host_if).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "check never attached"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rx = Receiver::start(&b.netns, b.ip, 9100);
    let to = SocketAddrV4::new(b.ip, 9100);
    warm_up(&a.netns, &rx, to, 9100);
    tracer::lab::traffic::udp_stream(&a.netns, to, 1000, Duration::from_secs(5));
    rx.finish();

    for (played, expected, prefix) in &mut pods {
        let code = played.wait_exited(&container.name, Duration::from_secs(90));
        let (stdout, stderr) = played.logs();
        assert_eq!(code, *expected, "{}: {stdout}{stderr}", played.name);
        assert_eq!(podman_exit(played, &container), Some(*expected));
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with(*prefix),
            "{}: one {prefix} line: {stdout}",
            played.name
        );
        if *expected == 1 {
            assert!(stdout.contains("flooding"), "{stdout}");
            assert!(stdout.contains(&flooding.pods[2].host_if), "{stdout}");
        }
        played.down();
    }
    eprintln!("check Job under podman: 0/1/2 in {:?}", started.elapsed());
}

/// The exit code as `podman inspect` shows it and as its events log kept it.
fn podman_exit(played: &PlayedPod, container: &Container) -> Option<i64> {
    let shown: i64 = played
        .inspect(&container.name, "{{.State.ExitCode}}")
        .parse()
        .expect("exit code");
    assert_eq!(played.exit_code(&container.name), Some(shown));
    Some(shown)
}

/// The template to run, and one with which tracer cannot trace: as written
/// where this runtime's profile refuses bpf() (Debian 12's podman; then the
/// runnable one is the README's Unconfined remedy), else as written without
/// its added capabilities.
fn runnable_and_cannot_trace(written: &PodTemplateSpec) -> (PodTemplateSpec, PodTemplateSpec) {
    let spec = written.spec.as_ref().expect("pod spec");
    let container = the_container(written);
    let profile = podman::effective_seccomp(spec, container);
    let caps = podman::kernel_cap_names(container);
    if profile.type_ == "RuntimeDefault" && !podman::default_profile_allows("bpf", &caps) {
        return (unconfined(written), written.clone());
    }
    let mut without = written.clone();
    for c in &mut without.spec.as_mut().expect("pod spec").containers {
        if let Some(caps) = c
            .security_context
            .as_mut()
            .and_then(|s| s.capabilities.as_mut())
        {
            caps.add = None;
        }
    }
    (written.clone(), without)
}

/// The Pod played is the template's spec but for the documented
/// differences (deploy/README.md): seccomp written out and mirrored into
/// podman's annotation, a hostNetwork container's ports left out. Without
/// a profile in the manifest, the Pod says Kubernetes' `Unconfined`.
#[test]
fn the_played_pod_is_the_template() {
    let ds: DaemonSet = object(&documents("daemonset.yaml"));
    let job: Job = object(&documents("examples/check-job.yaml"));
    let mut templates = vec![
        ds.spec.expect("DaemonSet spec").template,
        job.spec.expect("Job spec").template,
    ];
    let mut silent = templates[0].clone();
    for c in &mut silent.spec.as_mut().expect("pod spec").containers {
        c.security_context
            .as_mut()
            .expect("securityContext")
            .seccomp_profile = None;
    }
    templates.push(silent);
    for (template, annotation) in
        templates
            .iter()
            .zip(["runtime/default", "runtime/default", "unconfined"])
    {
        let pod = podman::pod_from_template("p", Some("ns"), template);
        let written = template.spec.as_ref().expect("pod spec");
        let mut played = pod.spec.clone().expect("pod spec");
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        for (c, w) in played.containers.iter_mut().zip(&written.containers) {
            assert_eq!(
                annotations
                    .get(&format!(
                        "container.seccomp.security.alpha.kubernetes.io/{}",
                        c.name
                    ))
                    .map(String::as_str),
                Some(annotation)
            );
            let sc = c.security_context.as_mut().expect("securityContext");
            let profile = sc.seccomp_profile.take().expect("seccomp written out");
            assert_eq!(profile, podman::effective_seccomp(written, w));
            sc.seccomp_profile = w
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.clone());
            c.ports = w.ports.clone();
        }
        assert_eq!(&played, written, "the played pod's spec is the template's");
        assert_eq!(
            pod.metadata.labels,
            template.metadata.as_ref().and_then(|m| m.labels.clone())
        );
    }
}
