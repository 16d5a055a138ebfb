//! What deploy/ ships next to the DaemonSet, each checked by the tool that
//! consumes it:
//!
//! - the alerting rules (`deploy/prometheus/`): `promtool check rules`, then
//!   `promtool test rules` with each alert firing and staying quiet;
//! - the node-problem-detector monitor (`deploy/node-problem-detector/`):
//!   NPD's documented fields and its own start-up validation, then the exact
//!   command line it runs, against lab nodes (exit 0, 1, 2).

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{
    Receiver,
    kubepod::KubePod,
    privileged,
    prometheus::{PROMTOOL, installed},
    tracer_bin, warm_up,
};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_of<'a>(v: &'a Yaml, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {v:?}"))
}

// ---------------------------------------------------------------------------
// Alerting rules
// ---------------------------------------------------------------------------

/// The alerting rules by name.
fn alerts(rules: &Yaml) -> BTreeMap<String, Yaml> {
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| (str_of(r, "alert").to_owned(), r.clone()))
        .collect()
}

/// An annotation template rendered the way Prometheus does for the
/// `{{ $labels.NAME }}` references it holds (the only template construct
/// the rules use). A reference to a label the alert does not carry fails:
/// Prometheus would print `<no value>` into the page.
fn render(template: &str, labels: &serde_yaml::Mapping) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed {{") + start;
        let expr = rest[start + 2..end].trim();
        let name = expr
            .strip_prefix("$labels.")
            .unwrap_or_else(|| panic!("template construct {expr:?} is not $labels.NAME"));
        let value = labels
            .get(name)
            .and_then(Yaml::as_str)
            .unwrap_or_else(|| panic!("{template:?} uses label {name}, which the alert lacks"));
        out.push_str(value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The unit tests with every expected alert's annotations filled in from
/// its rule (see deploy/prometheus/tracer-rules.test.yaml).
fn complete_tests(tests: &mut Yaml, alerts: &BTreeMap<String, Yaml>) {
    for test in tests["tests"].as_sequence_mut().expect("tests") {
        for case in test["alert_rule_test"].as_sequence_mut().expect("cases") {
            let name = str_of(case, "alertname").to_owned();
            let rule = &alerts[&name];
            for alert in case["exp_alerts"].as_sequence_mut().expect("exp_alerts") {
                let labels = alert["exp_labels"].as_mapping().expect("labels").clone();
                let annotations: serde_yaml::Mapping = rule["annotations"]
                    .as_mapping()
                    .expect("annotations")
                    .iter()
                    .map(|(k, v)| {
                        let text = render(v.as_str().expect("annotation"), &labels);
                        (k.clone(), Yaml::String(text))
                    })
                    .collect();
                alert["exp_annotations"] = Yaml::Mapping(annotations);
            }
        }
    }
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn alerting_rules_fire_and_stay_quiet() {
    if !installed("alerting_rules_fire_and_stay_quiet", PROMTOOL) {
        return;
    }
    let started = Instant::now();
    let rules = yaml("prometheus/tracer-rules.yaml");
    let object = yaml("prometheus/prometheus-rule.yaml");
    assert_eq!(object["kind"], "PrometheusRule");
    assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        object["spec"], rules,
        "the PrometheusRule holds the same groups"
    );

    let alerts = alerts(&rules);
    let names: Vec<&str> = alerts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "TracerBridgeFlooding",
            "TracerConntrackInsertDrops",
            "TracerDnsTimeouts",
            "TracerDown",
            "TracerLostEvents"
        ]
    );
    for (name, rule) in &alerts {
        assert!(rule["for"].as_str().is_some(), "{name} has no for:");
        let description = str_of(&rule["annotations"], "description");
        assert!(description.len() > 200, "{name}: a runbook, not a line");
    }

    let dir = TempDir::new("rules");
    std::fs::copy(
        deploy("prometheus/tracer-rules.yaml"),
        dir.0.join("tracer-rules.yaml"),
    )
    .expect("copy rules");
    let (ok, out) = promtool(&["check", "rules", "tracer-rules.yaml"], &dir.0);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");

    let mut tests = yaml("prometheus/tracer-rules.test.yaml");
    // Each alert fires in at least one case; node-b's series, present in
    // every case, must stay quiet (promtool compares the full alert list).
    for name in alerts.keys() {
        let fires = tests["tests"][0]["alert_rule_test"]
            .as_sequence()
            .expect("cases")
            .iter()
            .any(|c| c["alertname"] == name.as_str() && c["exp_alerts"] != Yaml::Sequence(vec![]));
        assert!(fires, "{name} has no firing case");
    }
    complete_tests(&mut tests, &alerts);
    std::fs::write(
        dir.0.join("tests.yaml"),
        serde_yaml::to_string(&tests).expect("yaml"),
    )
    .expect("write tests");
    let (ok, out) = promtool(&["test", "rules", "tests.yaml"], &dir.0);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    eprintln!("promtool check + test rules: {:?}", started.elapsed());
}

/// The unit tests are able to fail: an alert whose threshold is raised
/// above node-a's rate no longer fires, and promtool says so.
#[test]
fn alerting_rules_tests_catch_a_wrong_threshold() {
    if !installed("alerting_rules_tests_catch_a_wrong_threshold", PROMTOOL) {
        return;
    }
    let dir = TempDir::new("rules-wrong");
    let rules = std::fs::read_to_string(deploy("prometheus/tracer-rules.yaml")).expect("rules");
    let raised = rules.replace("[5m])) > 10", "[5m])) > 100");
    assert_ne!(raised, rules);
    std::fs::write(dir.0.join("tracer-rules.yaml"), raised).expect("write");
    let mut tests = yaml("prometheus/tracer-rules.test.yaml");
    complete_tests(&mut tests, &alerts(&yaml("prometheus/tracer-rules.yaml")));
    std::fs::write(
        dir.0.join("tests.yaml"),
        serde_yaml::to_string(&tests).expect("yaml"),
    )
    .expect("write tests");
    let (ok, out) = promtool(&["test", "rules", "tests.yaml"], &dir.0);
    assert!(!ok, "{out}");
    assert!(out.contains("alertname: TracerBridgeFlooding"), "{out}");
}

// ---------------------------------------------------------------------------
// node-problem-detector
// ---------------------------------------------------------------------------

/// Go's `time.ParseDuration` for what NPD configs use: one or more
/// `<number><unit>` with units ns, us, ms, s, m, h.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn keys_within(object: &Json, allowed: &[&str], what: &str) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object"));
    for key in map.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}: {key:?} is not one of NPD's fields {allowed:?}"
        );
    }
}

fn string_field<'a>(object: &'a Json, key: &str, what: &str) -> &'a str {
    object[key]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what}: {key} must be a non-empty string"))
}

/// NPD's custom plugin monitor config, checked field by field against its
/// documentation (docs/custom_plugin_monitor.md) and the checks NPD runs at
/// start-up (pkg/custompluginmonitor/types/config.go: `ApplyConfiguration`
/// parses the durations, `Validate` wants plugin "custom", rule timeouts
/// within the global one, and a default condition for every permanent
/// rule). Returns the permanent rule.
fn validate_npd(config: &Json) -> Json {
    keys_within(
        config,
        &[
            "plugin",
            "pluginConfig",
            "source",
            "metricsReporting",
            "conditions",
            "rules",
        ],
        "config",
    );
    assert_eq!(config["plugin"], "custom");
    let global = &config["pluginConfig"];
    keys_within(
        global,
        &[
            "invoke_interval",
            "timeout",
            "max_output_length",
            "concurrency",
            "enable_message_change_based_condition_update",
            "skip_initial_status",
        ],
        "pluginConfig",
    );
    let duration = |v: &Json, key: &str| {
        go_duration(string_field(v, key, key)).unwrap_or_else(|| panic!("{key}: not a Go duration"))
    };
    let global_timeout = duration(global, "timeout");
    let interval = duration(global, "invoke_interval");
    assert!(
        global_timeout < interval,
        "a check must end before the next"
    );
    for key in ["max_output_length", "concurrency"] {
        assert!(global[key].as_u64().is_some_and(|n| n > 0), "{key}");
    }
    string_field(config, "source", "config");
    assert!(config["metricsReporting"].is_boolean());
    let conditions = config["conditions"].as_array().expect("conditions");
    for c in conditions {
        keys_within(c, &["type", "reason", "message"], "condition");
        for key in ["type", "reason", "message"] {
            string_field(c, key, "condition");
        }
    }
    let rules = config["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    keys_within(
        rule,
        &[
            "type",
            "condition",
            "reason",
            "path",
            "args",
            "timeout",
            "invoke_interval",
        ],
        "rule",
    );
    assert_eq!(rule["type"], "permanent");
    let condition = string_field(rule, "condition", "rule");
    assert!(
        conditions.iter().any(|c| c["type"] == condition),
        "a permanent rule needs a default condition"
    );
    string_field(rule, "reason", "rule");
    assert!(string_field(rule, "path", "rule").starts_with('/'));
    assert!(
        rule["args"]
            .as_array()
            .expect("args")
            .iter()
            .all(Json::is_string)
    );
    assert!(
        duration(rule, "timeout") <= global_timeout,
        "NPD's Validate"
    );
    rule.clone()
}

/// The rule's command line, exactly, run inside `node` (`ip netns exec`,
/// as NPD in a host-network pod runs it in the node's namespace) with the
/// path swapped for the binary under test. `as_nobody`: without
/// privileges, as an NPD lacking them would.
fn run_rule(rule: &Json, node: &str, as_nobody: bool) -> (Option<i32>, String, Duration) {
    let args: Vec<&str> = rule["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node]);
    if as_nobody {
        cmd.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]);
    }
    let start = Instant::now();
    let out = cmd
        .arg(tracer_bin())
        .args(&args)
        .output()
        .expect("run rule");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        start.elapsed(),
    )
}

fn npd_rule(test: &str) -> Option<Json> {
    if !privileged(test) {
        return None;
    }
    let text = std::fs::read_to_string(deploy("node-problem-detector/tracer-monitor.json"))
        .expect("monitor config");
    let config: Json = serde_json::from_str(&text).expect("valid JSON");
    let rule = validate_npd(&config);
    assert_eq!(rule["condition"], "BridgeNetworkProblem");
    assert_eq!(rule["path"], "/usr/local/bin/tracer", "the image's path");
    Some(rule)
}

/// The one line NPD makes the condition's message: the whole of stdout.
fn assert_one_line(stdout: &str, prefix: &str) {
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.starts_with(prefix), "{stdout}");
}

#[test_log::test]
fn npd_rule_on_a_quiet_node_is_ok_and_without_privileges_unknown() {
    let Some(rule) = npd_rule("npd_rule_on_a_quiet_node_is_ok_and_without_privileges_unknown")
    else {
        return;
    };
    let timeout = go_duration(rule["timeout"].as_str().expect("timeout")).expect("duration");
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (code, stdout, took) = run_rule(&rule, &topo.node, false);
    assert_eq!(code, Some(0), "{stdout}");
    assert_one_line(&stdout, "OK:");
    assert!(took < timeout, "{took:?} within NPD's timeout {timeout:?}");
    eprintln!("ok run: {took:?}: {stdout}");

    let (code, stdout, _) = run_rule(&rule, &topo.node, true);
    assert_eq!(code, Some(2), "{stdout}");
    assert_one_line(&stdout, "UNKNOWN:");
}

#[test_log::test]
fn npd_rule_on_a_flooding_node_is_a_problem() {
    let Some(rule) = npd_rule("npd_rule_on_a_flooding_node_is_a_problem") else {
        return;
    };
    let topo = Topology::build(Datapath::Bridge, 3).expect("topology");
    let victim = KubePod::name(&topo.pods[2].netns, "shop", "bystander-1");
    // A silent receiver whose FDB entry ages out while the check runs: the
    // bridge floods (as in check.rs) to the third pod.
    tracer_tests::set_fdb_ageing(&topo, 100);
    let node = topo.node.clone();
    let checker = std::thread::spawn(move || run_rule(&rule, &node, false));
    std::thread::sleep(Duration::from_secs(3));
    let (a, b) = (topo.pods[0].clone(), topo.pods[1].clone());
    let rx = Receiver::start(&b.netns, b.ip, 9100);
    let to = SocketAddrV4::new(b.ip, 9100);
    warm_up(&a.netns, &rx, to, 9100);
    tracer::lab::traffic::udp_stream(&a.netns, to, 1000, Duration::from_secs(5));
    let (code, stdout, took) = checker.join().expect("checker");
    rx.finish();
    assert_eq!(code, Some(1), "{stdout}");
    assert_one_line(&stdout, "PROBLEM:");
    assert!(stdout.contains("flooding"), "{stdout}");
    // The message names the pod the flood reached.
    assert!(
        stdout.contains(&format!("most affected: {}", victim.label)),
        "{stdout}"
    );
    eprintln!("problem run: {took:?}: {stdout}");
}
