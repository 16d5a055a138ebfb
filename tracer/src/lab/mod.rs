//! The lab: both datapaths built side by side in network namespaces, the
//! same traffic through each, traced by the same probes.
//!
//! Today it runs the pod-to-pod UDP scenario with the counter probe; the
//! symptom scenarios plug in here as their probes land.

pub mod topology;

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tracer_common::counter::Direction;

use self::topology::{Datapath, Topology, TopologyError};
use crate::{attach::TcAttachments, counter, netns, probes};

/// What to run.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub pods: usize,
    /// Datagrams each pod sends to its neighbour.
    pub datagrams: u64,
    /// Set from a signal handler: stop between steps and clean up.
    pub cancel: Arc<AtomicBool>,
}

/// Errors of a lab run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Probe(#[from] probes::ProbeError),
    #[error(transparent)]
    Attach(#[from] crate::attach::AttachError),
    #[error("reading counters: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("socket in pod {pod}: {source}")]
    Socket {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted")]
    Cancelled,
    #[error("need at least 2 pods, got {0}")]
    TooFewPods(usize),
}

/// One datapath's figures for the pod-to-pod UDP scenario.
#[derive(Debug, Serialize)]
pub struct PodToPod {
    pub datapath: Datapath,
    pub pods: usize,
    pub sent: u64,
    pub delivered: u64,
    /// Packets the probes saw leaving pods (TC ingress of host veths).
    pub seen_from_pods: u64,
    /// Packets the probes saw delivered to pods (TC egress of host veths).
    pub seen_to_pods: u64,
}

/// The lab's report.
#[derive(Debug, Serialize)]
pub struct LabReport {
    pub schema_version: u32,
    pub pod_to_pod: Vec<PodToPod>,
}

/// Runs every datapath in turn; each topology is gone when this returns.
pub fn run(opts: &LabOptions) -> Result<LabReport, LabError> {
    if opts.pods < 2 {
        return Err(LabError::TooFewPods(opts.pods));
    }
    let mut pod_to_pod = Vec::new();
    for datapath in [Datapath::Bridge, Datapath::Transparent] {
        tracing::info!(
            "lab: building the {} node with {} pods",
            datapath.name(),
            opts.pods
        );
        let topo = Topology::build(datapath, opts.pods)?;
        pod_to_pod.push(udp_ring(&topo, opts)?);
    }
    Ok(LabReport {
        schema_version: crate::report::SCHEMA_VERSION,
        pod_to_pod,
    })
}

const PORT: u16 = 7000;

/// Every pod sends `datagrams` to the next one, traced on every host veth.
fn udp_ring(topo: &Topology, opts: &LabOptions) -> Result<PodToPod, LabError> {
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = topo
        .pods
        .iter()
        .map(|pod| receiver(&pod.netns, pod.ip, &delivered, &stop))
        .collect::<Result<_, _>>()?;
    let pods = topo.pods.clone();
    let datagrams = opts.datagrams;
    let cancel = Arc::clone(&opts.cancel);
    let delivered_in = Arc::clone(&delivered);
    let result = netns::run_in(&topo.node, move || -> Result<_, LabError> {
        let mut ebpf = probes::load()?;
        let mut tc = TcAttachments::load(&mut ebpf, &counter::PROGRAMS)?;
        for pod in &pods {
            tc.attach(&mut ebpf, &pod.host_if)?;
        }
        // Neighbour resolution first (proxy ARP waits up to 0.8 s), so the
        // figures are the steady state.
        send_ring(&pods, 1)?;
        wait_for(&delivered_in, pods.len() as u64);
        let before = counter::read(&ebpf)?;
        if cancel.load(Ordering::Relaxed) {
            return Err(LabError::Cancelled);
        }
        send_ring(&pods, datagrams)?;
        wait_for(&delivered_in, pods.len() as u64 * (datagrams + 1));
        let delta = counter::delta(&before, &counter::read(&ebpf)?);
        tc.detach_all(&mut ebpf);
        Ok(delta)
    })?;
    stop.store(true, Ordering::Relaxed);
    for handle in receivers {
        let _ = handle.join();
    }
    let delta = result?;
    let sum = |dir| -> u64 {
        delta
            .iter()
            .filter(|((_, d), _)| *d == dir)
            .map(|(_, c)| c.packets)
            .sum()
    };
    let pods = topo.pods.len() as u64;
    Ok(PodToPod {
        datapath: topo.datapath,
        pods: topo.pods.len(),
        sent: pods * opts.datagrams,
        delivered: delivered.load(Ordering::Relaxed).saturating_sub(pods),
        seen_from_pods: sum(Direction::Ingress),
        seen_to_pods: sum(Direction::Egress),
    })
}

fn send_ring(pods: &[topology::Pod], count: u64) -> Result<(), LabError> {
    for (i, pod) in pods.iter().enumerate() {
        let to = SocketAddrV4::new(pods[(i + 1) % pods.len()].ip, PORT);
        let name = pod.netns.clone();
        netns::run_in(&pod.netns, move || -> Result<(), LabError> {
            let socket_err = |source| LabError::Socket {
                pod: name.clone(),
                source,
            };
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT + 1)).map_err(socket_err)?;
            for n in 0..count {
                socket.send_to(&[0u8; 64], to).map_err(socket_err)?;
                if n % 64 == 63 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        })??;
    }
    Ok(())
}

fn receiver(
    netns_name: &str,
    ip: Ipv4Addr,
    delivered: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<(), netns::NetnsError>>, LabError> {
    let socket =
        netns::run_in(netns_name, move || UdpSocket::bind((ip, PORT)))?.map_err(|source| {
            LabError::Socket {
                pod: netns_name.to_owned(),
                source,
            }
        })?;
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|source| LabError::Socket {
            pod: netns_name.to_owned(),
            source,
        })?;
    let (delivered, stop) = (Arc::clone(delivered), Arc::clone(stop));
    // A bound socket keeps its namespace; the thread itself may live anywhere.
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if socket.recv(&mut buf).is_ok() {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }))
}

fn wait_for(counter: &AtomicU64, n: u64) {
    let start = std::time::Instant::now();
    while counter.load(Ordering::Relaxed) < n && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl LabReport {
    /// Side-by-side table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pod-to-pod UDP (each pod → its neighbour, 64-byte payloads)"
        );
        let _ = write!(out, "{:<28}", "");
        for row in &self.pod_to_pod {
            let _ = write!(out, "{:>14}", row.datapath.name());
        }
        let _ = writeln!(out);
        type Getter = fn(&PodToPod) -> u64;
        let lines: [(&str, Getter); 4] = [
            ("datagrams sent", |r| r.sent),
            ("datagrams delivered", |r| r.delivered),
            ("packets seen leaving pods", |r| r.seen_from_pods),
            ("packets seen entering pods", |r| r.seen_to_pods),
        ];
        for (label, get) in lines {
            let _ = write!(out, "{label:<28}");
            for row in &self.pod_to_pod {
                let _ = write!(out, "{:>14}", get(row));
            }
            let _ = writeln!(out);
        }
        out
    }
}
