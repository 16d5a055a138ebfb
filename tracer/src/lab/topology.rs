//! Throwaway node/pod topologies in network namespaces, for the lab and the
//! tests. Nothing is created in the namespace tracer runs in: a **node**
//! namespace stands for the Kubernetes node, one namespace per **pod**.
//!
//! Two datapaths, as Azure CNI builds them (see the AKS FAQ in shared/seed):
//! - *bridge mode*: bridge `azure0` holding the node address and the node's
//!   `eth0`, one veth per pod with its host end enslaved to the bridge;
//! - *transparent mode*: no bridge; the node address on `eth0`, a host-side
//!   veth `azv<hash>` per pod with proxy ARP and a `/32 proto static` route.
//!
//! The pods are the same in both: `eth0` with an address in 10.240.0.0/16 and
//! a default route via the node address 10.240.0.4. The node's `eth0` is a
//! veth whose peer sits alone in an **uplink** namespace with no address (the
//! VNet stand-in): what the node sends there is dropped, nothing the lab
//! sends can leave the machine. (A dummy device would do, but CONFIG_DUMMY is
//! not built on every kernel, ours included.)
//!
//! [`Topology`] is an RAII guard: dropping it deletes every namespace it
//! made (and with them every link, route and qdisc), also during a panic.

use std::{
    net::Ipv4Addr,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// The node's address, on `azure0` (bridge) or `eth0` (transparent).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 4);
/// Prefix length of the node/pod subnet.
pub const PREFIX_LEN: u8 = 16;
/// Name of the bridge in bridge mode, as Azure CNI names it.
pub const BRIDGE: &str = "azure0";

/// Which datapath the node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Datapath {
    Bridge,
    Transparent,
}

impl Datapath {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Transparent => "transparent",
        }
    }
}

/// A pod: its namespace, address and host-side interface.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Network namespace name (`ip netns`).
    pub netns: String,
    /// Address of the pod's `eth0`.
    pub ip: Ipv4Addr,
    /// Host-side veth name, in the node namespace.
    pub host_if: String,
}

/// Errors building a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("running `{cmd}`: {source} (is iproute2 installed?)")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("at most {max} pods fit the pod range, {asked} asked")]
    TooManyPods { max: usize, asked: usize },
}

/// A built topology; dropping it deletes it.
#[derive(Debug)]
pub struct Topology {
    pub datapath: Datapath,
    /// The bridge's name in bridge mode ([`BRIDGE`] unless
    /// [`Topology::build_with_bridge`] named it otherwise).
    pub bridge: String,
    /// The node namespace.
    pub node: String,
    pub pods: Vec<Pod>,
    /// Every namespace created, in creation order, for cleanup.
    created: Vec<String>,
}

const MAX_PODS: usize = 4000;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// Builds a node with `pods` pods on `datapath`. Namespace names start
    /// with `tr<pid>x<n>-`, unique per process and call.
    pub fn build(datapath: Datapath, pods: usize) -> Result<Self, TopologyError> {
        Self::build_with_bridge(datapath, pods, BRIDGE)
    }

    /// [`Topology::build`] with the bridge named `bridge` (`cni0`,
    /// `docker0`, …): tracer must not depend on Azure's name.
    pub fn build_with_bridge(
        datapath: Datapath,
        pods: usize,
        bridge: &str,
    ) -> Result<Self, TopologyError> {
        if pods > MAX_PODS {
            return Err(TopologyError::TooManyPods {
                max: MAX_PODS,
                asked: pods,
            });
        }
        let mut topo = Self::node_only(datapath, bridge)?;
        let node = topo.node.clone();
        match datapath {
            Datapath::Bridge => {
                ip(&["-n", &node, "link", "add", bridge, "type", "bridge"])?;
                ip(&["-n", &node, "link", "set", "eth0", "master", bridge, "up"])?;
                ip(&["-n", &node, "addr", "add", &node_cidr(), "dev", bridge])?;
                ip(&["-n", &node, "link", "set", bridge, "up"])?;
            }
            Datapath::Transparent => {
                ip(&["-n", &node, "addr", "add", &node_cidr(), "dev", "eth0"])?;
                ip(&["-n", &node, "link", "set", "eth0", "up"])?;
            }
        }
        for index in 0..pods {
            topo.add_pod(index)?;
        }
        Ok(topo)
    }

    /// A node with its `eth0` and the uplink namespace behind it, nothing
    /// configured yet (no address, no bridge, no pod): what a VM looks like
    /// to the CNI before its first pod (the `bridge-setup` scenario).
    pub fn node_only(datapath: Datapath, bridge: &str) -> Result<Self, TopologyError> {
        let prefix = format!(
            "tr{}x{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let mut topo = Self {
            datapath,
            bridge: bridge.to_owned(),
            node: format!("{prefix}-node"),
            pods: Vec::new(),
            created: Vec::new(),
        };
        // On any error below, dropping `topo` removes what was made so far.
        topo.add_netns(&topo.node.clone())?;
        let node = topo.node.clone();
        let uplink = topo.uplink();
        topo.add_netns(&uplink)?;
        ip(&[
            "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &uplink,
        ])?;
        ip(&["-n", &uplink, "link", "set", "eth0", "up"])?;
        sysctl(&node, "net.ipv4.ip_forward", "1")?;
        Ok(topo)
    }

    /// The uplink namespace (the VNet stand-in behind the node's `eth0`).
    pub fn uplink(&self) -> String {
        self.node.replace("-node", "-uplink")
    }

    fn add_netns(&mut self, name: &str) -> Result<(), TopologyError> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        // No IPv6: router solicitations and DAD would add packets the tests
        // do not send. Set before any link lands in the namespace.
        sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")?;
        // An interface coming up sends its unsolicited IGMP reports spread
        // over igmp_qrv × 1 s; the bridge's would land at random inside the
        // tests' counting windows. 1 ms gets them out during set-up.
        for key in [
            "net.ipv4.conf.all.igmpv3_unsolicited_report_interval",
            "net.ipv4.conf.default.igmpv3_unsolicited_report_interval",
            "net.ipv4.conf.all.igmpv2_unsolicited_report_interval",
            "net.ipv4.conf.default.igmpv2_unsolicited_report_interval",
        ] {
            sysctl(name, key, "1")?;
        }
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Adds pod `index` the way the node's datapath plugs pods in (a port
    /// of the bridge, or a routed veth with proxy ARP).
    pub fn add_pod(&mut self, index: usize) -> Result<(), TopologyError> {
        let netns = self.node.replace("-node", &format!("-pod{index}"));
        let ip_addr = pod_ip(index);
        let host_if = host_if_name(&netns);
        self.add_netns(&netns)?;
        let node = self.node.clone();
        ip(&[
            "-n", &node, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ])?;
        match self.datapath {
            Datapath::Bridge => {
                let bridge = self.bridge.clone();
                ip(&[
                    "-n", &node, "link", "set", &host_if, "master", &bridge, "up",
                ])?;
            }
            Datapath::Transparent => {
                sysctl(&node, &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
                ip(&["-n", &node, "link", "set", &host_if, "up"])?;
                ip(&[
                    "-n",
                    &node,
                    "route",
                    "add",
                    &format!("{ip_addr}/32"),
                    "dev",
                    &host_if,
                    "proto",
                    "static",
                ])?;
            }
        }
        let cidr = format!("{ip_addr}/{PREFIX_LEN}");
        ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &NODE_IP.to_string(),
        ])?;
        self.pods.push(Pod {
            netns,
            ip: ip_addr,
            host_if,
        });
        Ok(())
    }

    /// Runs `program args…` inside namespace `netns` (`ip netns exec`) and
    /// fails unless it exits 0.
    pub fn exec(&self, netns: &str, program: &str, args: &[&str]) -> Result<Output, TopologyError> {
        let mut full = vec!["netns", "exec", netns, program];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Makes `service` (a virtual IP, as kube-proxy's ClusterIP) reach
    /// `backends` (pod addresses) on `port`, UDP and TCP, the way kube-proxy's
    /// iptables mode does: nat PREROUTING DNAT with `statistic --mode random`
    /// spreading new connections evenly, conntrack doing the reverse NAT.
    ///
    /// In bridge mode the backend's answer to a client on the same bridge is
    /// bridged, not routed; `bridge-nf-call-iptables=1` (br_netfilter) is what
    /// sends it through conntrack for the reverse NAT, as on real nodes.
    pub fn add_service(
        &self,
        service: Ipv4Addr,
        port: u16,
        backends: &[Ipv4Addr],
    ) -> Result<(), TopologyError> {
        if self.datapath == Datapath::Bridge {
            sysctl(&self.node, "net.bridge.bridge-nf-call-iptables", "1")?;
        }
        let port = port.to_string();
        for proto in ["udp", "tcp"] {
            for (i, backend) in backends.iter().enumerate() {
                let remaining = backends.len() - i;
                let mut rule = vec!["-t", "nat", "-A", "PREROUTING", "-d"];
                let service = format!("{service}/32");
                let to = format!("{backend}:{port}");
                let probability = format!("{:.5}", 1.0 / remaining as f64);
                rule.extend_from_slice(&[&service, "-p", proto, "--dport", &port]);
                if remaining > 1 {
                    rule.extend_from_slice(&[
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &probability,
                    ]);
                }
                rule.extend_from_slice(&["-j", "DNAT", "--to-destination", &to]);
                self.exec(&self.node, "iptables", &rule)?;
            }
        }
        Ok(())
    }

    /// Every namespace of this topology, node first.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.created.iter().map(String::as_str)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Pods first, so their veths vanish before the bridge does.
        for name in self.created.iter().rev() {
            if let Err(err) = ip(&["netns", "del", name]) {
                tracing::warn!("cleaning up namespace {name}: {err}");
            }
        }
    }
}

/// Address of pod `index`: 10.240.1.1 upwards, inside the node's /16.
pub fn pod_ip(index: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 240, 1, 1));
    Ipv4Addr::from(base + u32::try_from(index).unwrap_or(u32::MAX))
}

pub(crate) fn node_cidr() -> String {
    format!("{NODE_IP}/{PREFIX_LEN}")
}

/// `azv` + 11 hex digits, like Azure CNI's host-side names (≤ 15 bytes).
fn host_if_name(pod: &str) -> String {
    // FNV-1a: stable across runs and platforms; only needs to spread names.
    let hash = pod.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("azv{:011x}", hash & 0xfff_ffff_ffff)
}

pub(crate) fn sysctl(netns: &str, key: &str, value: &str) -> Result<Output, TopologyError> {
    ip(&[
        "netns",
        "exec",
        netns,
        "sysctl",
        "-q",
        "-w",
        &format!("{key}={value}"),
    ])
}

pub(crate) fn ip(args: &[&str]) -> Result<Output, TopologyError> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<Output, TopologyError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let output = cmd.output().map_err(|source| TopologyError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(TopologyError::Failed {
            cmd: shown,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_ifnamsiz_and_differ() {
        let a = host_if_name("tr1x0-pod0");
        let b = host_if_name("tr1x0-pod1");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("azv"));
        assert_ne!(a, b);
    }

    #[test]
    fn pod_addresses_stay_in_the_node_subnet() {
        assert_eq!(pod_ip(0), Ipv4Addr::new(10, 240, 1, 1));
        assert_eq!(pod_ip(300), Ipv4Addr::new(10, 240, 2, 45));
        let last = u32::from(pod_ip(MAX_PODS - 1));
        assert_eq!(last >> 16, u32::from(NODE_IP) >> 16);
    }
}
