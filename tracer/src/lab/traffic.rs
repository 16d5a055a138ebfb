//! Traffic the lab's scenarios send: all of it between namespaces the lab
//! created, nothing to any other address.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};

use super::dns;
use crate::netns;

/// A UDP sink in a pod: counts datagrams, echoes them back when `echo`.
pub struct UdpServer {
    pub received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl UdpServer {
    pub fn start(pod: &str, ip: Ipv4Addr, port: u16, echo: bool) -> Result<Self, std::io::Error> {
        let socket = netns::run_in(pod, move || UdpSocket::bind((ip, port)))
            .map_err(std::io::Error::other)??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        // A bound socket keeps its namespace; the thread can live anywhere.
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    if echo {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            }
        });
        Ok(Self {
            received,
            stop,
            thread,
        })
    }

    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.received.load(Ordering::Relaxed)
    }
}

/// Sends `rate` datagrams per second for `duration` from `pod` to `to`.
pub fn udp_stream(pod: &str, to: SocketAddrV4, rate: u64, duration: Duration) -> u64 {
    netns::run_in(pod, move || {
        let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
            return 0;
        };
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            let due = Duration::from_micros(sent * 1_000_000 / rate.max(1));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            if socket.send_to(&[0u8; 64], to).is_ok() {
                sent += 1;
            }
        }
        sent
    })
    .unwrap_or(0)
}

/// As fast as one socket goes, for `duration`; datagrams sent.
pub fn udp_blast(pod: &str, to: SocketAddrV4, duration: Duration) -> u64 {
    netns::run_in(pod, move || {
        let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
            return 0;
        };
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            for _ in 0..64 {
                if socket.send_to(&[0u8; 64], to).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    })
    .unwrap_or(0)
}

/// Round-trip times (µs) of `rounds` UDP request/responses to an echo server.
pub fn udp_rtts(pod: &str, to: SocketAddrV4, rounds: usize) -> Vec<f64> {
    netns::run_in(pod, move || {
        let mut rtts = Vec::with_capacity(rounds);
        let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
            return rtts;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 64];
        for _ in 0..rounds {
            let start = Instant::now();
            if socket.send_to(&[1u8; 32], to).is_ok() && socket.recv(&mut buf).is_ok() {
                rtts.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        rtts
    })
    .unwrap_or_default()
}

/// A TCP echo server in a pod: each of the next `connections` connections
/// is served on its own thread; every socket has timeouts, so nothing here
/// can hang the lab.
pub fn tcp_echo(
    pod: &str,
    ip: Ipv4Addr,
    port: u16,
    connections: usize,
) -> Result<JoinHandle<()>, std::io::Error> {
    let listener = netns::run_in(pod, move || TcpListener::bind((ip, port)))
        .map_err(std::io::Error::other)??;
    listener.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        let start = Instant::now();
        let mut served = Vec::new();
        while served.len() < connections && start.elapsed() < Duration::from_secs(60) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served.push(std::thread::spawn(move || {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }));
        }
        for t in served {
            let _ = t.join();
        }
    }))
}

/// TCP request/response RTTs (µs) over one connection, then bulk
/// throughput (Mbit/s, echoed) for `bulk`.
pub fn tcp_figures(pod: &str, to: SocketAddrV4, rounds: usize, bulk: Duration) -> (Vec<f64>, f64) {
    netns::run_in(pod, move || {
        let mut rtts = Vec::with_capacity(rounds);
        let Ok(mut stream) = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) else {
            return (rtts, 0.0);
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 32];
        for _ in 0..rounds {
            let start = Instant::now();
            if stream.write_all(&[2u8; 32]).is_err() || stream.read_exact(&mut buf).is_err() {
                break;
            }
            rtts.push(start.elapsed().as_secs_f64() * 1e6);
        }
        drop(stream);
        // Bulk: a second connection, written and drained by two threads.
        let Ok(bulk_stream) = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) else {
            return (rtts, 0.0);
        };
        let Ok(mut reader) = bulk_stream.try_clone() else {
            return (rtts, 0.0);
        };
        let _ = reader.set_read_timeout(Some(Duration::from_millis(500)));
        let drained = std::thread::spawn(move || {
            let mut total = 0u64;
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        });
        let mut writer = bulk_stream;
        let _ = writer.set_write_timeout(Some(Duration::from_secs(2)));
        let chunk = vec![3u8; 65536];
        let start = Instant::now();
        while start.elapsed() < bulk {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
        let bytes = drained.join().unwrap_or(0);
        (
            rtts,
            bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6,
        )
    })
    .unwrap_or_default()
}

/// The conntrack race, on purpose: per round, a new UDP socket connected to
/// `service`, and two threads pinned to CPUs 0 and 1 each send one DNS
/// query on it at the same instant (glibc's A and AAAA, but truly
/// concurrent). The threads meet on spinning flags, not a futex: a wake-up
/// takes tens of µs, longer than the window the race needs. Returns the
/// rounds run.
pub fn conntrack_race(pod: &str, service: SocketAddrV4, duration: Duration) -> u64 {
    use std::{
        os::fd::AsRawFd as _,
        sync::atomic::{AtomicI32, AtomicU64},
    };

    let fd = Arc::new(AtomicI32::new(-1));
    // Round numbers: `armed` by the opener once the socket is there,
    // `ack` by the second sender when it is spinning on `go`, `go` fires
    // both, `done` counts the second sender's sends.
    let armed = Arc::new(AtomicU64::new(0));
    let ack = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let spin = |flag: &AtomicU64, want: u64, stop: &AtomicBool| {
        let mut n = 0u32;
        while flag.load(Ordering::Acquire) < want {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(4096) {
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        true
    };
    let second = {
        let (fd, armed, ack, go, done, stop) = (
            Arc::clone(&fd),
            Arc::clone(&armed),
            Arc::clone(&ack),
            Arc::clone(&go),
            Arc::clone(&done),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let mut set = CpuSet::new();
            let _ = set.set(1);
            let _ = sched_setaffinity(Pid::from_raw(0), &set);
            let q = dns::query(0x2000, super::LOOKUP_NAME);
            let mut round = 1;
            while spin(&armed, round, &stop) {
                ack.store(round, Ordering::Release);
                if !spin(&go, round, &stop) {
                    break;
                }
                // SAFETY: send(2) on the round's socket, which the opener
                // keeps open until `done` reaches this round.
                unsafe { libc::send(fd.load(Ordering::Acquire), q.as_ptr().cast(), q.len(), 0) };
                done.store(round, Ordering::Release);
                round += 1;
            }
        })
    };
    let pod = pod.to_owned();
    let stop_outer = Arc::clone(&stop);
    let rounds = netns::run_in(&pod, move || {
        let mut set = CpuSet::new();
        let _ = set.set(0);
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
        let q = dns::query(0x1000, super::LOOKUP_NAME);
        let start = Instant::now();
        let mut round = 0u64;
        while start.elapsed() < duration {
            let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                break;
            };
            if socket.connect(service).is_err() {
                break;
            }
            round += 1;
            fd.store(socket.as_raw_fd(), Ordering::Release);
            armed.store(round, Ordering::Release);
            if !spin(&ack, round, &stop) {
                break;
            }
            go.store(round, Ordering::Release);
            let _ = socket.send(&q);
            if !spin(&done, round, &stop) {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        round
    })
    .unwrap_or(0);
    stop_outer.store(true, Ordering::Relaxed);
    let _ = second.join();
    rounds
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
