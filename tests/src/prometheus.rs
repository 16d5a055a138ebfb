//! A real Prometheus (Debian's package) in a lab node namespace, and the
//! plain HTTP the tests use to talk to it and to tracer's `/metrics`.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;
use tracer::netns;

/// Debian's Prometheus (package `prometheus`).
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Debian's promtool (package `prometheus`).
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// Like [`crate::privileged`]: true when Prometheus is installed; otherwise
/// skips, and under `CI=true` fails.
pub fn prometheus_installed(test: &str) -> bool {
    installed(test, PROMETHEUS)
}

/// True when `program` (from Debian's `prometheus` package) exists;
/// otherwise skips, and under `CI=true` fails.
pub fn installed(test: &str, program: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    let reason = format!(
        "{program} is missing (Debian package prometheus; `cargo xtask setup` installs it)"
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run: {reason}. Under CI=true a skipped test is a failure."
    );
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// Two distinct free TCP ports on the loopback of `netns`.
pub fn free_ports(netns: &str) -> (u16, u16) {
    netns::run_in(netns, || {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind");
        (
            a.local_addr().expect("addr").port(),
            b.local_addr().expect("addr").port(),
        )
    })
    .expect("enter node namespace")
}

/// A response: status, head, body.
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// A minimal HTTP/1.0 GET (the server closes after the body: no chunking)
/// from a thread inside `netns`.
pub fn http_get(netns: &str, addr: SocketAddr, target: &str, accept: Option<&str>) -> Response {
    let mut request = format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(accept) = accept {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    request.push_str("\r\n");
    let raw = netns::run_in(netns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok::<_, std::io::Error>(raw)
    })
    .expect("enter node namespace");
    let raw = match raw {
        Ok(raw) => raw,
        Err(err) => {
            return Response {
                status: 0,
                head: err.to_string(),
                body: String::new(),
            };
        }
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Percent-encodes a query parameter.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// A Prometheus server in `netns`, scraping one target every second, with
/// its storage in a temporary directory. Dropping it sends SIGTERM to its
/// PID only, waits, and removes the directory.
pub struct Prometheus {
    child: Child,
    netns: String,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(netns: &str, port: u16, target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tracer-test-prometheus-{}-{port}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus config");
        let log = fs::File::create(dir.join("prometheus.log")).expect("log file");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // `ip netns exec` execs Prometheus itself: the child's PID is
        // Prometheus'.
        let child = Command::new("ip")
            .args(["netns", "exec", netns, PROMETHEUS])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut prometheus = Self {
            child,
            netns: netns.to_owned(),
            addr,
            dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    prometheus.log()
                );
            }
            if prometheus.get("/-/ready").status == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "prometheus not ready in 20 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    pub fn get(&self, target: &str) -> Response {
        http_get(&self.netns, self.addr, target, None)
    }

    /// An API call's `data`.
    pub fn api(&self, target: &str) -> Value {
        let response = self.get(target);
        assert_eq!(
            response.status, 200,
            "{target}: {}\n{}",
            response.head, response.body
        );
        let json: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{target}: {e}: {}", response.body));
        assert_eq!(json["status"], "success", "{target}: {json}");
        json["data"].clone()
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that selects exactly one series.
    pub fn value(&self, promql: &str) -> f64 {
        let result = self.query(promql);
        assert_eq!(result.len(), 1, "{promql}: {result:?}");
        result[0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{promql}: {result:?}"))
    }

    /// Polls `promql` (one series) until `ok` holds for its value.
    pub fn wait_for(&self, promql: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            let result = self.query(promql);
            if let Some(v) = result
                .first()
                .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
                && ok(v)
            {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: {promql} = {result:?} after 10 s; targets: {}\n{}",
                self.api("/api/v1/targets"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Our own child, by PID: SIGTERM, then SIGKILL if it lingers.
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let start = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if start.elapsed() > Duration::from_secs(5) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
