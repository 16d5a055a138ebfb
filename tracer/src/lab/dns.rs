//! A real DNS service for the lab: dnsmasq (Debian's dnsmasq-base) in
//! backend pods, glibc resolver configuration for client pods, and lookups
//! by glibc itself (`getent ahosts`).

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns;

/// Errors of the lab's DNS pieces.
#[derive(Debug, thiserror::Error)]
pub enum LabDnsError {
    #[error(
        "starting dnsmasq in {netns}: {source} (install dnsmasq-base; `cargo xtask setup` does)"
    )]
    Spawn {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dnsmasq in {0} did not answer within 5 s")]
    NotAnswering(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` failed")]
    Command(String),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
}

/// dnsmasq serving fixed A and AAAA records in a pod; killed (by its own
/// PID) when dropped.
pub struct DnsServer {
    child: Child,
}

impl DnsServer {
    /// Starts dnsmasq on `listen`:53 in `netns` with `name → (v4, v6)`
    /// records and no cache, upstream or hosts file; returns once it answers.
    pub fn start(
        netns: &str,
        listen: Ipv4Addr,
        records: &[(&str, Ipv4Addr, &str)],
    ) -> Result<Self, LabDnsError> {
        Self::start_with(netns, listen, records, &[])
    }

    /// [`DnsServer::start`] with more dnsmasq options (e.g. `--server=` to
    /// forward what it has no record for).
    pub fn start_with(
        netns: &str,
        listen: Ipv4Addr,
        records: &[(&str, Ipv4Addr, &str)],
        extra: &[String],
    ) -> Result<Self, LabDnsError> {
        let mut args = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            netns.to_owned(),
            "dnsmasq".to_owned(),
        ];
        args.extend(
            [
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--pid-file",
                "--cache-size=0",
                "--no-negcache",
                "--bind-interfaces",
                "--local-ttl=0",
                "--port=53",
            ]
            .map(str::to_owned),
        );
        args.push(format!("--listen-address={listen}"));
        args.extend_from_slice(extra);
        for (name, v4, v6) in records {
            args.push(format!("--host-record={name},{v4},{v6}"));
        }
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LabDnsError::Spawn {
                netns: netns.to_owned(),
                source,
            })?;
        let server = Self { child };
        let name = records.first().map_or("ready.invalid", |r| r.0).to_owned();
        let to = SocketAddrV4::new(listen, 53);
        let answered = netns::run_in(netns, move || {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .ok()?;
            let start = Instant::now();
            let mut buf = [0u8; 512];
            while start.elapsed() < Duration::from_secs(5) {
                let _ = socket.send_to(&query(0x4242, &name), to);
                if socket.recv(&mut buf).is_ok() {
                    return Some(());
                }
            }
            None
        })?;
        answered.ok_or_else(|| LabDnsError::NotAnswering(netns.to_owned()))?;
        Ok(server)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Our own child (`ip netns exec` execs dnsmasq in place), by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A wire-format A query for `name`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(u8::try_from(label.len()).unwrap_or(63).min(63));
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// glibc resolver configuration of a pod: `/etc/netns/<pod>/` files that
/// `ip netns exec` bind-mounts over `/etc`; removed when dropped.
pub struct ResolvConf {
    dir: PathBuf,
}

impl ResolvConf {
    /// `nameserver` with `options`, and `hosts: dns` so only DNS answers.
    pub fn write(netns: &str, nameserver: Ipv4Addr, options: &[&str]) -> Result<Self, LabDnsError> {
        let dir = PathBuf::from("/etc/netns").join(netns);
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| LabDnsError::Write { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let guard = Self { dir };
        let mut resolv = format!("nameserver {nameserver}\n");
        if !options.is_empty() {
            let _ = writeln!(resolv, "options {}", options.join(" "));
        }
        let nsswitch: String = fs::read_to_string("/etc/nsswitch.conf")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("hosts:"))
            .map(|l| format!("{l}\n"))
            .chain(std::iter::once("hosts: dns\n".to_owned()))
            .collect();
        for (file, text) in [
            ("resolv.conf", resolv.as_str()),
            ("nsswitch.conf", &nsswitch),
            ("hosts", ""),
        ] {
            let path = guard.dir.join(file);
            fs::write(&path, text).map_err(io(&path))?;
        }
        Ok(guard)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// glibc asks AAAA only when the host has IPv6 (AI_ADDRCONFIG): give the
/// pod's `lo` an IPv6 address (its `eth0` stays IPv4-only), so lookups send
/// A and AAAA in parallel as on real nodes.
pub fn enable_aaaa_lookups(netns: &str) -> Result<(), LabDnsError> {
    for args in [
        vec![
            "netns",
            "exec",
            netns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.lo.disable_ipv6=0",
        ],
        vec![
            "-n",
            netns,
            "-6",
            "addr",
            "replace",
            "fd00:ffff::1/128",
            "dev",
            "lo",
        ],
    ] {
        let ok = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(LabDnsError::Command(format!("ip {}", args.join(" "))));
        }
    }
    Ok(())
}

/// One lookup by glibc (`getent ahosts`, AF_UNSPEC) in `netns`; its wall time.
pub fn getent(netns: &str, name: &str) -> Option<Duration> {
    let start = Instant::now();
    let ok = Command::new("ip")
        .args(["netns", "exec", netns, "getent", "ahosts", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encodes_the_name() {
        let q = query(7, "a.bc");
        assert_eq!(&q[..2], &[0, 7]);
        assert_eq!(&q[12..], &[1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
    }
}
