//! deploy/'s pod templates under a real container runtime: Debian's podman
//! (4.3, with crun), driven by `podman kube play`.
//!
//! podman 4.3 plays Pods and Deployments, not DaemonSets or Jobs ("YAML
//! document does not contain any supported kube kind"), so
//! [`pod_from_template`] makes the Pod a controller would make from a
//! template: the template's spec unchanged (image, command, args,
//! securityContext, capabilities, hostNetwork, hostPID, volumes, mounts,
//! probes, resources, grace period) but for three podman 4.3 behaviours:
//! seccomp is read from an annotation, a hostNetwork container's `ports`
//! are refused, a missing `hostPath` of type `""` is refused (each below;
//! deploy/README.md has the table).
//!
//! "A lab node" is a network namespace. A `hostNetwork` pod shares the
//! network namespace of whoever runs podman, and podman 4.3 refuses to put
//! a pod into a namespace by path (`--network ns:/run/netns/X`: "pods
//! presently do not support network mode path"), so [`PlayedPod::play`]
//! runs `podman kube play` under `nsenter --net=/run/netns/NODE`: conmon,
//! crun and the pod then live in the node's namespace exactly as a
//! kubelet's pod lives in the node's. Only the network namespace changes;
//! the mount namespace, hence podman's storage, stays the host's.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, SeccompProfile},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use tracer::netns;

use crate::manifests::deploy;

/// podman 4.3 ignores `securityContext.seccompProfile` (measured: a pod
/// asking `Unconfined` in the field still got podman's default profile in
/// its OCI config) and reads the annotation Kubernetes used before the
/// field (1.19).
const SECCOMP_ANNOTATION: &str = "container.seccomp.security.alpha.kubernetes.io/";
/// The profile podman applies for `runtime/default` (containers.conf's
/// `seccomp_profile`, Debian's golang-github-containers-common).
const DEFAULT_PROFILE: &str = "/usr/share/containers/seccomp.json";
/// podman lowers its own RLIMIT_NPROC to this before starting conmon
/// (strace: `setrlimit(RLIMIT_NPROC, 32768)`), so no container can get more.
const PODMAN_NPROC: u64 = 32 * 1024;

/// podman is installed (`cargo xtask setup`); under CI=true its absence is
/// a failure, not a skip.
pub fn available(test: &str) -> bool {
    let found = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} cannot run: podman is missing (cargo xtask setup installs it). \
             Under CI=true a skipped test is a failure."
        );
        eprintln!("SKIPPED {test}: podman is missing (cargo xtask setup installs it)");
    }
    found
}

/// Builds `deploy/Containerfile` with its documented context, `target/dist`
/// (`cargo xtask dist`; `cargo xtask test` runs it first), tagged `tag`.
/// The image stays for the next run (layer cache); the one it replaces, if
/// the binary changed, is removed so old images do not pile up. ~1 s.
pub fn build_image(tag: &str) -> Duration {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dist");
    assert!(
        dist.join("tracer").exists(),
        "{} is missing: build it with `cargo xtask dist` (cargo xtask test does)",
        dist.join("tracer").display()
    );
    let start = Instant::now();
    let before = image_id(tag);
    let out = Command::new("podman")
        .args(["build", "--quiet", "--file"])
        .arg(deploy("Containerfile"))
        .args(["--tag", tag])
        .arg(&dist)
        .output()
        .expect("spawning podman build");
    assert!(out.status.success(), "podman build: {}", text(&out));
    if let Some(old) = before.filter(|old| Some(old) != image_id(tag).as_ref()) {
        // Fails harmlessly while a concurrent test's container still uses it.
        let _ = Command::new("podman").args(["rmi", &old]).output();
    }
    start.elapsed()
}

/// The id of the image tagged `tag`, if there is one.
fn image_id(tag: &str) -> Option<String> {
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The seccomp profile Kubernetes applies to `container`: its own, else the
/// pod's, else `Unconfined` — the kubelet's default unless it runs with
/// `--seccomp-default`.
pub fn effective_seccomp(spec: &PodSpec, container: &Container) -> SeccompProfile {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.clone())
        .or_else(|| {
            spec.security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.clone())
        })
        .unwrap_or_else(|| SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        })
}

/// The annotation value podman reads for a profile.
fn seccomp_annotation(profile: &SeccompProfile) -> String {
    match profile.type_.as_str() {
        "RuntimeDefault" => "runtime/default".into(),
        "Unconfined" => "unconfined".into(),
        "Localhost" => format!(
            "localhost/{}",
            profile.localhost_profile.as_deref().unwrap_or_default()
        ),
        other => panic!("unknown seccompProfile type {other}"),
    }
}

/// The Pod a controller makes from `template`, named `name`, as `podman
/// kube play` takes it. The spec is the template's; each container's
/// effective seccomp profile is written out in its securityContext (an
/// absent one as the `Unconfined` Kubernetes gives it) and mirrored into
/// the annotation podman 4.3 reads; `ports` of a hostNetwork pod are left
/// out (below).
pub fn pod_from_template(name: &str, namespace: Option<&str>, template: &PodTemplateSpec) -> Pod {
    let mut spec = template.spec.clone().expect("pod template has a spec");
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let profiles: Vec<SeccompProfile> = spec
        .containers
        .iter()
        .map(|c| effective_seccomp(&spec, c))
        .collect();
    let host_network = spec.host_network == Some(true);
    for (container, profile) in spec.containers.iter_mut().zip(profiles) {
        // In the host's network a declared port maps nothing: the process
        // listens on the node's port itself, and the declaration only lets
        // the scheduler refuse a node where the port is taken. podman 4.3
        // turns it into a port mapping and refuses the pod ("PortMappings
        // can only be used with Bridge or slirp4netns networking").
        if host_network {
            container.ports = None;
        }
        annotations.insert(
            format!("{SECCOMP_ANNOTATION}{}", container.name),
            seccomp_annotation(&profile),
        );
        container
            .security_context
            .get_or_insert_with(Default::default)
            .seccomp_profile = Some(profile);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: template_meta.labels,
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether podman's default seccomp profile lets a process holding `caps`
/// (`CAP_BPF`, …) make `syscall`, read from the profile podman applies: an
/// allow rule naming it whose `includes.caps` are all held and none of whose
/// `excludes.caps` is.
pub fn default_profile_allows(syscall: &str, caps: &[String]) -> bool {
    let text = std::fs::read_to_string(DEFAULT_PROFILE)
        .unwrap_or_else(|e| panic!("reading podman's default profile {DEFAULT_PROFILE}: {e}"));
    let profile: serde_json::Value = serde_json::from_str(&text).expect("seccomp JSON");
    let held = |list: &serde_json::Value| -> Vec<bool> {
        list.as_array()
            .map(|l| {
                l.iter()
                    .map(|c| caps.iter().any(|h| Some(h.as_str()) == c.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    };
    profile["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
        .filter(|rule| {
            rule["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == syscall))
        })
        .any(|rule| {
            held(&rule["includes"]["caps"]).iter().all(|h| *h)
                && !held(&rule["excludes"]["caps"]).iter().any(|h| *h)
        })
}

/// A pod played with `podman kube play`; dropping it runs `podman kube
/// down` (if [`PlayedPod::down`] did not) and removes its files.
pub struct PlayedPod {
    pub name: String,
    /// The lab node's network namespace, which `play` and `start` run in:
    /// podman gives a hostNetwork container the namespace podman runs in.
    node: PathBuf,
    file: PathBuf,
    conf: PathBuf,
    /// The containers' log (k8s-file format), kept outside podman's
    /// per-container directory so it outlives `podman kube down`, as a
    /// kubelet's `/var/log/pods` outlives the container.
    log: PathBuf,
    /// Missing `hostPath` sources of type `""` made for the pod (see
    /// [`make_missing_sources`]), removed again when empty.
    created: Vec<PathBuf>,
    up: bool,
}

impl PlayedPod {
    /// `podman kube play` of `pod` inside `node`'s network namespace.
    pub fn play(node: &str, pod: &Pod) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let stem = std::env::temp_dir().join(format!(
            "tracer-podman-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let played = Self {
            name: pod.metadata.name.clone().expect("pod name"),
            node: netns::path_of(node),
            file: stem.with_extension("yaml"),
            conf: stem.with_extension("conf"),
            log: stem.with_extension("log"),
            created: make_missing_sources(pod),
            up: true,
        };
        std::fs::write(&played.file, serde_yaml::to_string(pod).expect("pod YAML"))
            .expect("writing the pod YAML");
        std::fs::write(&played.conf, containers_conf()).expect("writing containers.conf");
        let out = Command::new("nsenter")
            .env("CONTAINERS_CONF", &played.conf)
            .arg(format!("--net={}", netns::path_of(node).display()))
            .args([
                "podman",
                "kube",
                "play",
                "--log-driver",
                "k8s-file",
                "--log-opt",
            ])
            .arg(format!("path={}", played.log.display()))
            .arg(&played.file)
            .output()
            .expect("spawning nsenter podman kube play");
        assert!(out.status.success(), "podman kube play: {}", text(&out));
        played
    }

    /// podman in the node's network namespace, with this pod's
    /// containers.conf.
    fn in_node(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node.display()))
            .arg("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .stdin(Stdio::null());
        cmd
    }

    /// podman with this pod's containers.conf.
    fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf).stdin(Stdio::null());
        cmd
    }

    /// The name podman gives the pod's container `container`.
    pub fn container(&self, container: &str) -> String {
        format!("{}-{container}", self.name)
    }

    /// `podman inspect --format FORMAT` of one of the pod's containers.
    pub fn inspect(&self, container: &str, format: &str) -> String {
        let out = self
            .podman()
            .args(["inspect", "--format", format])
            .arg(self.container(container))
            .output()
            .expect("spawning podman inspect");
        assert!(out.status.success(), "podman inspect: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The pod's stdout and stderr so far, also after `podman kube down`
    /// (k8s-file lines: `TIME STREAM TAG TEXT`, tag `P` for a partial line).
    pub fn logs(&self) -> (String, String) {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let (mut stdout, mut stderr) = (String::new(), String::new());
        for line in raw.lines() {
            let mut fields = line.splitn(4, ' ');
            let (_, stream, tag) = (fields.next(), fields.next(), fields.next());
            let sink = if stream == Some("stderr") {
                &mut stderr
            } else {
                &mut stdout
            };
            sink.push_str(fields.next().unwrap_or_default());
            if tag != Some("P") {
                sink.push('\n');
            }
        }
        (stdout, stderr)
    }

    /// Waits until `container` has exited at least once (also when a
    /// restart policy started it again); the exit code of its last ended run.
    pub fn wait_exited(&self, container: &str, timeout: Duration) -> i64 {
        let start = Instant::now();
        loop {
            let state = self.inspect(
                container,
                "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}",
            );
            let fields: Vec<&str> = state.split_whitespace().collect();
            // A restarted container shows its new run's state: the code of
            // the run that ended comes from podman's events log.
            if let [status, restarts, _] = fields[..]
                && (status == "exited" || restarts != "0")
                && let Some(code) = self.exit_code(container)
            {
                return code;
            }
            assert!(
                start.elapsed() < timeout,
                "{} still running after {timeout:?}: {state}; logs: {:?}",
                self.container(container),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman pod stop --time GRACE`: what a kubelet does when the pod is
    /// deleted (SIGTERM, SIGKILL after the grace period). How long it took.
    pub fn stop(&self, grace: Duration) -> Duration {
        let start = Instant::now();
        let out = self
            .podman()
            .args(["pod", "stop", "--time"])
            .arg(grace.as_secs().to_string())
            .arg(&self.name)
            .output()
            .expect("spawning podman pod stop");
        assert!(out.status.success(), "podman pod stop: {}", text(&out));
        start.elapsed()
    }

    /// `podman pod start`: the stopped pod's containers run again, in the
    /// node's namespace (started from the host's, they would join the
    /// host's).
    pub fn start(&self) {
        let out = self
            .in_node()
            .args(["pod", "start", &self.name])
            .output()
            .expect("spawning podman pod start");
        assert!(out.status.success(), "podman pod start: {}", text(&out));
    }

    /// `podman kube down`: how long it took. podman 4.3 stops the pod's
    /// containers with timeout 0, i.e. SIGKILL at once (its debug log:
    /// "Stopping ctr … (timeout 0)", "Sending signal 9"), not with SIGTERM
    /// and a grace period.
    pub fn down(&mut self) -> Duration {
        let start = Instant::now();
        let out = self.kube_down();
        let took = start.elapsed();
        assert!(out.status.success(), "podman kube down: {}", text(&out));
        took
    }

    fn kube_down(&mut self) -> Output {
        self.up = false;
        self.podman()
            .args(["kube", "down"])
            .arg(&self.file)
            .output()
            .expect("spawning podman kube down")
    }

    /// The exit code podman recorded when `container` last died (its
    /// events log), also after `podman kube down` removed it.
    pub fn exit_code(&self, container: &str) -> Option<i64> {
        let out = self
            .podman()
            .args([
                "events",
                "--stream=false",
                "--format",
                "{{.ContainerExitCode}}",
            ])
            .args(["--filter", "event=died", "--filter"])
            .arg(format!("container={}", self.container(container)))
            .output()
            .expect("spawning podman events");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
    }

    /// The pod's containers podman still knows (`podman ps -a`), and whether
    /// the pod itself still exists.
    pub fn leftovers(name: &str) -> (Vec<String>, bool) {
        let out = Command::new("podman")
            .args(["ps", "--all", "--format", "{{.Names}}", "--filter"])
            .arg(format!("pod={name}"))
            .output()
            .expect("spawning podman ps");
        let containers = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let pod = Command::new("podman")
            .args(["pod", "exists", name])
            .status()
            .expect("spawning podman pod exists")
            .success();
        (containers, pod)
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        if self.up {
            let _ = self.kube_down();
        }
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.conf);
        let _ = std::fs::remove_file(&self.log);
        for dir in &self.created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// For a `hostPath` of type `""` (no check) whose path is missing, the
/// kubelet hands the bind mount to the runtime, and containerd and CRI-O
/// create an empty directory there (deploy/README.md: Azure CNI's state
/// file on a node without Azure CNI). podman 4.3 refuses the pod instead
/// ("in parsing HostPath in YAML: stat …: no such file or directory"), so
/// the directory is made here, as those runtimes would; the paths made.
fn make_missing_sources(pod: &Pod) -> Vec<PathBuf> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref())
        .filter(|h| h.type_.as_deref().unwrap_or_default().is_empty())
        .map(|h| PathBuf::from(&h.path))
        .filter(|path| !path.exists())
        .inspect(|path| {
            std::fs::create_dir_all(path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        })
        .collect()
}

/// A containers.conf granting containers the resource limits podman itself
/// has. Rootful podman's default RLIMIT_NOFILE (1048576) cannot be set
/// where podman lacks CAP_SYS_RESOURCE (this machine's bounding set has
/// none): crun's `setrlimit` fails with EPERM and no container starts. A
/// kubelet's runtime passes its own limits too; the pod spec has no say in
/// them.
fn containers_conf() -> String {
    let hard = |resource| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit through a valid pointer.
        let rc = unsafe { libc::getrlimit(resource, &mut limit) };
        assert_eq!(rc, 0, "getrlimit");
        limit.rlim_max
    };
    let nofile = hard(libc::RLIMIT_NOFILE);
    let nproc = hard(libc::RLIMIT_NPROC).min(PODMAN_NPROC);
    format!(
        "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n"
    )
}

/// A command's exit status, stdout and stderr, for a failure message.
fn text(out: &Output) -> String {
    format!(
        "{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The added capabilities of `container` as the kernel names them
/// (`CAP_BPF`), for [`default_profile_allows`].
pub fn kernel_cap_names(container: &Container) -> Vec<String> {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .iter()
        .map(|c| format!("CAP_{}", c.trim_start_matches("CAP_").to_ascii_uppercase()))
        .collect()
}

/// Rows of a table report (`tracer watch`'s default output): interface →
/// (pod, [in packets, in bytes, out packets, out bytes]).
pub fn table_rows(report: &str) -> BTreeMap<String, (String, [u64; 4])> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("POD "))
        .skip(1)
        .map_while(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let numbers: Vec<u64> = fields
                .iter()
                .rev()
                .take(4)
                .rev()
                .map_while(|f| f.parse().ok())
                .collect();
            (fields.len() >= 6 && numbers.len() == 4).then(|| {
                (
                    fields[1].to_owned(),
                    (
                        fields[0].to_owned(),
                        [numbers[0], numbers[1], numbers[2], numbers[3]],
                    ),
                )
            })
        })
        .collect()
}
