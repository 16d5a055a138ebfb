//! Kubernetes packaging (`deploy/`): the manifests parse into typed API
//! objects and grant what the binary needs, nothing more; the Containerfile
//! packages what `cargo xtask dist` makes; and the real binary, run with
//! exactly the DaemonSet's capabilities as a non-root uid, attaches and
//! traces a lab node.
//!
//! The static build itself is checked by `cargo xtask dist` (it runs the
//! result from an empty directory and an empty chroot), which keeps this
//! suite from rebuilding the release binary.

use std::{
    collections::BTreeSet,
    io::Read as _,
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    batch::v1::Job,
    core::v1::{Container, Namespace, PodSpec, ServiceAccount},
};
use tracer::{
    lab::topology::{BRIDGE, Datapath, Topology},
    netns, privileges,
};
use tracer_tests::{
    Receiver,
    manifests::{deploy, documents, object},
    privileged, send_udp, tracer_bin, warm_up,
};

fn pod_spec(template: Option<&PodSpec>) -> &PodSpec {
    template.expect("pod template has a spec")
}

fn tracer_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container");
    assert!(spec.init_containers.is_none(), "no init containers");
    let container = &spec.containers[0];
    assert_eq!(container.name, "tracer");
    container
}

/// The DaemonSet of `deploy/daemonset.yaml` (with its Namespace and
/// ServiceAccount checked on the way).
fn daemonset() -> DaemonSet {
    let docs = documents("daemonset.yaml");
    assert_eq!(docs.len(), 3, "Namespace, ServiceAccount, DaemonSet");

    let ns: Namespace = object(&docs);
    let ns_name = ns.metadata.name.clone().expect("namespace name");
    assert_eq!(ns_name, "tracer-system");
    let labels = ns.metadata.labels.expect("namespace labels");
    // hostNetwork/hostPID/hostPath/added capabilities: only the
    // "privileged" Pod Security level admits the pod.
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged")
    );

    let sa: ServiceAccount = object(&docs);
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns_name.as_str()));
    assert_eq!(sa.automount_service_account_token, Some(false));

    let ds: DaemonSet = object(&docs);
    assert_eq!(ds.metadata.namespace.as_deref(), Some(ns_name.as_str()));
    let spec = ds.spec.as_ref().expect("DaemonSet spec");
    let selector = spec.selector.match_labels.as_ref().expect("matchLabels");
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("pod labels");
    for (key, value) in selector {
        assert_eq!(pod_labels.get(key), Some(value), "selector matches {key}");
    }
    let pod = pod_spec(spec.template.spec.as_ref());
    assert_eq!(
        pod.service_account_name.as_deref(),
        sa.metadata.name.as_deref()
    );
    ds
}

/// The capabilities the manifest adds, lower case without `CAP_` (setpriv's
/// spelling), in the manifest's order.
fn added_caps(container: &Container) -> Vec<String> {
    let caps = container
        .security_context
        .as_ref()
        .and_then(|sc| sc.capabilities.as_ref())
        .expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "drop ALL"
    );
    caps.add
        .as_ref()
        .expect("capabilities.add")
        .iter()
        .map(|cap| cap.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// What every tracer pod needs from its node, DaemonSet and Job alike.
fn assert_node_access(spec: &PodSpec) {
    // In the node's network namespace (no setns, no CAP_SYS_ADMIN), seeing
    // node processes.
    assert_eq!(spec.host_network, Some(true), "hostNetwork");
    assert_eq!(spec.host_pid, Some(true), "hostPID");
    assert_eq!(spec.automount_service_account_token, Some(false));
    let container = tracer_container(spec);
    let sc = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(sc.privileged, Some(false), "not privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );

    // Exactly what the probes need: the binary's own pre-check list, which
    // the privileged test below proves sufficient and minimal.
    let granted: BTreeSet<String> = added_caps(container).into_iter().collect();
    let needed: BTreeSet<String> = privileges::TRACE_CAPS
        .iter()
        .map(|cap| cap.name().trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    assert_eq!(granted, needed, "capabilities granted = what tracer needs");
    assert!(!granted.contains("sys_admin"), "no CAP_SYS_ADMIN");

    // Host paths mounted where they are on the host, read-only but for
    // /run/tracer (the legacy-TC owner locks, see deploy/README.md).
    let expected: [(&str, Option<&str>); 5] = [
        ("/sys/fs/bpf", Some("Directory")),
        ("/sys/kernel/tracing", Some("Directory")),
        // Optional: absent on nodes without Azure CNI ("" = no check).
        ("/var/run/azure-vnet.json", Some("")),
        ("/var/log/pods", Some("Directory")),
        ("/run/tracer", Some("DirectoryOrCreate")),
    ];
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    assert_eq!(mounts.len(), expected.len(), "mounts: {mounts:?}");
    assert_eq!(volumes.len(), expected.len(), "volumes: {volumes:?}");
    for (path, host_type) in expected {
        let mount = mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path} is mounted"));
        let writable = path == "/run/tracer";
        assert_eq!(
            mount.read_only.unwrap_or(false),
            !writable,
            "{path} read-only"
        );
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("volume {} exists", mount.name));
        let host = volume.host_path.as_ref().expect("a hostPath volume");
        assert_eq!(host.path, path, "host path mounted at the same place");
        assert_eq!(host.type_.as_deref(), host_type, "{path} hostPath type");
    }

    // The image `cargo xtask dist` + deploy/Containerfile make, at the
    // workspace version.
    let image = container.image.as_deref().expect("image");
    assert!(
        image.ends_with(&format!("/tracer:{}", env!("CARGO_PKG_VERSION"))),
        "{image} is tracer at the workspace version"
    );
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("resource limits");
    assert!(
        limits.contains_key("memory"),
        "a memory limit (BPF maps are charged to it)"
    );
}

/// The container's command, from the image's ENTRYPOINT location.
fn command_line(container: &Container) -> Vec<String> {
    let command = container.command.clone().expect("command");
    assert_eq!(command, [containerfile_binary()], "the image's binary");
    container.args.clone().unwrap_or_default()
}

#[test]
fn daemonset_parses_and_grants_what_tracer_needs() {
    let ds = daemonset();
    let spec = ds.spec.as_ref().unwrap();
    let pod = pod_spec(spec.template.spec.as_ref());
    assert_node_access(pod);
    assert!(
        pod.tolerations
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint: one tracer on every node"
    );

    let args = command_line(tracer_container(pod));
    assert_eq!(args.first().map(String::as_str), Some("watch"), "{args:?}");
    assert!(
        !args.iter().any(|a| a == "--duration" || a == "-d"),
        "runs until stopped: {args:?}"
    );
    assert!(!args.iter().any(|a| a == "--netns"), "no setns: {args:?}");
    let addr = flag_value(&args, "--prometheus").expect("--prometheus ADDR");
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("--prometheus {addr}: {e}"));
    assert!(
        addr.ip().is_loopback(),
        "metrics on the node's loopback by default, not on the node IP: {addr}"
    );
    let port = tracer_container(pod)
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("metrics port declared");
    assert_eq!(i64::from(addr.port()), i64::from(port.container_port));
}

#[test]
fn check_job_is_bounded_pinned_and_privileged_like_the_daemonset() {
    let docs = documents("examples/check-job.yaml");
    assert_eq!(docs.len(), 1, "one Job");
    let job: Job = object(&docs);
    assert_eq!(job.metadata.namespace.as_deref(), Some("tracer-system"));
    let spec = job.spec.as_ref().expect("Job spec");
    assert_eq!(spec.backoff_limit, Some(0), "one run, no retries");
    assert!(spec.active_deadline_seconds.is_some(), "bounded");
    let pod = pod_spec(spec.template.spec.as_ref());
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.node_name.as_deref(),
        Some("NODE_NAME_HERE"),
        "pinned via a placeholder"
    );
    assert_node_access(pod);

    let container = tracer_container(pod);
    let args = command_line(container);
    assert_eq!(args.first().map(String::as_str), Some("check"), "{args:?}");
    let duration: f64 = flag_value(&args, "--duration")
        .expect("--duration")
        .parse()
        .expect("seconds");
    let deadline = spec.active_deadline_seconds.unwrap();
    assert!(
        duration > 0.0 && duration < deadline as f64,
        "the check ({duration} s) ends before the Job's deadline ({deadline} s)"
    );

    // Same privileges and mounts as the DaemonSet, so they cannot drift.
    let ds = daemonset();
    let ds_pod = pod_spec(ds.spec.as_ref().unwrap().template.spec.as_ref());
    let ds_container = tracer_container(ds_pod);
    assert_eq!(container.security_context, ds_container.security_context);
    assert_eq!(container.volume_mounts, ds_container.volume_mounts);
    assert_eq!(container.image, ds_container.image);
    assert_eq!(pod.volumes, ds_pod.volumes);
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Where deploy/Containerfile puts the binary: COPY's destination, which the
/// ENTRYPOINT runs. Also checks the image's base and its build context.
fn containerfile_binary() -> String {
    let path = deploy("Containerfile");
    let text = std::fs::read_to_string(&path).expect("deploy/Containerfile");
    // Comments out, continuation lines (`\` at the end) joined.
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<Vec<&str>> = joined
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let of = |name: &str| -> Vec<&Vec<&str>> {
        instructions
            .iter()
            .filter(|i| i[0].eq_ignore_ascii_case(name))
            .collect()
    };
    let from = of("FROM");
    assert_eq!(from.len(), 1, "single stage");
    assert_eq!(
        from[0][1], "scratch",
        "minimal base: nothing but the binary"
    );
    let copy = of("COPY");
    assert_eq!(copy.len(), 1, "one COPY");
    // `tracer` is the file `cargo xtask dist` leaves alone in target/dist/,
    // the build context.
    assert_eq!(copy[0][1..], ["tracer", "/usr/local/bin/tracer"]);
    let entrypoint = of("ENTRYPOINT");
    assert_eq!(entrypoint.len(), 1);
    assert_eq!(entrypoint[0][1..], [r#"["/usr/local/bin/tracer"]"#]);
    assert!(
        of("ENV").iter().any(|i| i[1] == "PATH=/usr/local/bin"),
        "PATH set, so `kubectl debug ... -- tracer watch` finds it"
    );
    copy[0][2].to_owned()
}

#[test]
fn containerfile_packages_the_dist_binary_on_scratch() {
    assert_eq!(containerfile_binary(), "/usr/local/bin/tracer");
}

/// Long flags the binary's `help` text for `subcommand` lists.
fn known_flags(subcommand: &[&str]) -> Option<String> {
    let out = Command::new(tracer_bin())
        .args(subcommand)
        .arg("--help")
        .output()
        .expect("run tracer --help");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses the manifest's command line with the real binary (`--help` after
/// it: clap parses every argument before, then prints help). Flags the
/// binary does not have yet are dropped with a note.
fn assert_args_parse(args: &[String]) {
    let subcommand = args[0].as_str();
    let Some(help) = known_flags(&[subcommand]) else {
        eprintln!("NOTE: this tracer has no `{subcommand}` subcommand yet; not checked");
        return;
    };
    let mut kept = vec![args[0].clone()];
    let mut rest = args[1..].iter().peekable();
    while let Some(arg) = rest.next() {
        let is_value = |next: &&String| !next.starts_with('-');
        if arg.starts_with("--") && !help.contains(&format!("{arg} ")) {
            eprintln!("NOTE: this tracer has no `{subcommand} {arg}` yet; not checked");
            rest.next_if(is_value);
            continue;
        }
        kept.push(arg.clone());
    }
    let out = Command::new(tracer_bin())
        .args(&kept)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tracer {}: {}",
        kept.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn manifest_command_lines_parse() {
    let ds = daemonset();
    let pod = pod_spec(ds.spec.as_ref().unwrap().template.spec.as_ref());
    assert_args_parse(&command_line(tracer_container(pod)));
    let job: Job = object(&documents("examples/check-job.yaml"));
    let pod = pod_spec(job.spec.as_ref().unwrap().template.spec.as_ref());
    assert_args_parse(&command_line(tracer_container(pod)));
}

/// The capability bits of our bounding set: what we can hand on at all.
fn bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// Capability number of a setpriv-style name, via `setpriv --list-caps`
/// order (which is the kernel's numbering).
fn cap_bit(name: &str) -> u32 {
    let out = Command::new("setpriv").arg("--list-caps").output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    let index = list
        .lines()
        .position(|l| l.trim() == name)
        .unwrap_or_else(|| panic!("setpriv knows no capability {name}"));
    u32::try_from(index).unwrap()
}

/// `tracer ARGS` as a process of the node: in `node`'s network namespace
/// only (nsenter --net, as hostNetwork: the mount namespace, hence
/// /sys/kernel/btf and tracefs, stays the host's), uid/gid 65534, no
/// supplementary groups, no_new_privs (allowPrivilegeEscalation: false),
/// RLIMIT_MEMLOCK of 64 KiB (no CAP_SYS_RESOURCE to raise it), and exactly
/// `caps` as effective, permitted, inheritable, ambient and bounding set.
fn spawn_as_daemonset(node: &str, caps: &[String], args: &[&str]) -> Child {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    Command::new("nsenter")
        .arg(format!("--net={}", netns::path_of(node).display()))
        .args(["prlimit", "--memlock=65536:65536"])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg("--no-new-privs")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(tracer_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nsenter/prlimit/setpriv/tracer")
}

/// Waits for `child` (killed after `timeout`), draining its pipes meanwhile
/// so a large report cannot block it on a full pipe.
fn wait_output(mut child: Child, timeout: Duration) -> Output {
    fn drain<R: std::io::Read + Send + 'static>(
        pipe: Option<R>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "tracer still running after {timeout:?}: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The `CapEff:` mask and real uid of a running process.
fn creds_of(pid: u32) -> (u64, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    (
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        field("Uid:").parse().unwrap(),
    )
}

/// The tracer process under nsenter → prlimit → setpriv (each execs the
/// next, so it keeps the PID once setpriv has exec'd it).
fn wait_for_tracer(child: &mut Child, ready: &Path) {
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(err) = child.stderr.as_mut() {
                let _ = err.read_to_string(&mut stderr);
            }
            panic!("tracer with the DaemonSet's capabilities exited early ({status}): {stderr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tracer not ready in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The DaemonSet's capability set is enough (attach, trace, report) and
/// each capability in it is needed; CAP_SYS_ADMIN and CAP_SYS_RESOURCE are
/// not.
#[test]
fn daemonset_capabilities_suffice_and_each_is_needed() {
    if !privileged("daemonset_capabilities_suffice_and_each_is_needed") {
        return;
    }
    const COUNT: u64 = 100;
    let ds = daemonset();
    let pod = pod_spec(ds.spec.as_ref().unwrap().template.spec.as_ref());
    let caps = added_caps(tracer_container(pod));
    let bounding = bounding_set();
    let mask = caps.iter().fold(0u64, |m, c| m | (1 << cap_bit(c)));
    assert_eq!(
        bounding & mask,
        mask,
        "this machine's bounding set ({bounding:#x}) lacks some of the manifest's \
         capabilities {caps:?}: they cannot be granted here"
    );

    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (a, b) = (&topo.pods[0], &topo.pods[1]);
    let rx = Receiver::start(&b.netns, b.ip, 6100);
    let to = SocketAddrV4::new(b.ip, 6100);
    warm_up(&a.netns, &rx, to, 6100);

    let ready = std::env::temp_dir().join(format!("tracer-packaging-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let ready_arg = ready.to_str().expect("UTF-8 temp path");
    let mut child = spawn_as_daemonset(
        &topo.node,
        &caps,
        &[
            "watch",
            "--output",
            "json",
            "--duration",
            "3",
            "--ready-file",
            ready_arg,
        ],
    );
    wait_for_tracer(&mut child, &ready);
    let (eff, uid) = creds_of(child.id());
    assert_eq!(
        (eff, uid),
        (mask, 65534),
        "tracer runs as uid 65534 with exactly {caps:?}"
    );
    send_udp(&a.netns, to, 6100, COUNT, 64);
    assert!(rx.wait_for(COUNT + 1, Duration::from_secs(5)));
    let out = wait_output(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tracer with exactly {caps:?} failed ({}): {stderr}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}: {stderr}"));
    let names: Vec<&str> = report["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for iface in [a.host_if.as_str(), b.host_if.as_str(), BRIDGE] {
        assert!(names.contains(&iface), "{iface} traced: {names:?}");
    }
    let row = report["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == a.host_if.as_str())
        .unwrap();
    assert!(
        row["ingress"]["packets"].as_u64().unwrap_or(0) >= COUNT,
        "the probes saw the pod's datagrams: {row:#}"
    );
    rx.finish();

    // Nothing lost to the missing capabilities: every tracing hook (fentry,
    // fexit, tp_btf) that attaches as root attaches with the manifest's set.
    let as_root = Command::new("nsenter")
        .arg(format!("--net={}", netns::path_of(&topo.node).display()))
        .arg(tracer_bin())
        .args(["watch", "--output", "json", "--duration", "1"])
        .output()
        .expect("run tracer as root");
    assert!(
        as_root.status.success(),
        "tracer as root: {}",
        String::from_utf8_lossy(&as_root.stderr)
    );
    let root_report: serde_json::Value = serde_json::from_slice(&as_root.stdout).expect("JSON");
    assert_eq!(
        hooks_attached(&report),
        hooks_attached(&root_report),
        "hooks attached with {caps:?} (left) and as root (right)"
    );

    // Minimal: without any one of them, tracer cannot run.
    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        let child = spawn_as_daemonset(&topo.node, &fewer, &["watch", "--duration", "1"]);
        let out = wait_output(child, Duration::from_secs(20));
        assert!(
            !out.status.success(),
            "tracer ran with {fewer:?}, without CAP_{}: deploy/daemonset.yaml grants more \
             than tracer needs",
            dropped.to_ascii_uppercase()
        );
    }
}

/// `program → attached` of every `hooks` list anywhere in a report.
fn hooks_attached(report: &serde_json::Value) -> std::collections::BTreeMap<String, bool> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![report];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    if key == "hooks"
                        && let Some(hooks) = child.as_array()
                    {
                        for hook in hooks {
                            let program = hook["program"].as_str().unwrap_or("?").to_owned();
                            found.insert(program, hook["attached"] == true);
                        }
                    } else {
                        stack.push(child);
                    }
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}
