//! Traffic.

use super::*;

pub(crate) fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

/// Sends 64-byte datagrams to `to` with `sendmmsg` as fast as the CPU allows
/// until `stop` (what arrives is counted at the receiver).
pub(crate) fn blast(to: SocketAddrV4, cpu: usize, stop: &AtomicBool) -> io::Result<()> {
    pin(cpu);
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(to)?;
    let payload = [0x5a_u8; PACKET_PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..SEND_BATCH)
        .map(|_| {
            let mut m = zeroed_mmsghdr();
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs point at one valid iovec over `payload`, all alive.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), SEND_BATCH as u32, 0) };
    }
    Ok(())
}

/// A minimal UDP DNS responder: echoes each query with QR set
/// (`recvmmsg`/`sendmmsg`, one pinned thread), until dropped.
pub(crate) struct Responder {
    pub(crate) stop: Arc<AtomicBool>,
    /// `/proc/self/task/TID/schedstat` of its thread.
    pub(crate) schedstat: String,
    pub(crate) handle: Option<JoinHandle<Result<io::Result<()>, netns::NetnsError>>>,
}

impl Responder {
    pub(crate) fn start(netns: &str, ip: Ipv4Addr, cpu: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let handle = netns::spawn_in(netns, move || respond(ip, cpu, &stop2, &ready_tx));
        let mut responder = Self {
            stop,
            schedstat: String::new(),
            handle: Some(handle),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(tid) => {
                responder.schedstat = format!("/proc/self/task/{tid}/schedstat");
                Ok(responder)
            }
            Err(_) => {
                let err = responder.join();
                bail!("DNS responder did not start: {err:?}")
            }
        }
    }

    pub(crate) fn join(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => bail!("responder: {e}"),
                Ok(Err(e)) => bail!("responder netns: {e}"),
                Err(_) => bail!("responder panicked"),
            }
        }
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

pub(crate) fn respond(
    ip: Ipv4Addr,
    cpu: usize,
    stop: &AtomicBool,
    ready: &mpsc::Sender<libc::pid_t>,
) -> io::Result<()> {
    const BATCH: usize = 64;
    pin(cpu);
    let socket = UdpSocket::bind(SocketAddrV4::new(ip, 53))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let fd = socket.as_raw_fd();
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt reads a valid c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    // SAFETY: gettid has no preconditions.
    let _ = ready.send(unsafe { libc::gettid() });
    let mut bufs = vec![[0u8; 512]; BATCH];
    // SAFETY: sockaddr_in is plain data.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| zeroed_mmsghdr()).collect();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i].iov_len = 512;
            let m = &mut msgs[i];
            m.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &raw mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            let len = msgs[i].msg_len as usize;
            if len >= 12 {
                bufs[i][2] |= 0x80; // QR: a response, rcode 0
            }
            iovs[i].iov_len = len;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: as above; names are the queries' sources.
            let sent = unsafe {
                libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0)
            };
            if sent <= 0 {
                break;
            }
            done += sent as usize;
        }
    }
    Ok(())
}

/// What the DNS load generator is asked to do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    /// Queries per second; `None` = as fast as possible.
    pub(crate) rate: Option<u64>,
    pub(crate) duration: Option<Duration>,
    pub(crate) total: Option<u64>,
    /// Replace a socket (new source port) after this many queries; 0 never.
    pub(crate) reopen_every: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LoadResult {
    pub(crate) sent: u64,
    pub(crate) errors: u64,
    pub(crate) answers: u64,
    /// Queries given up on after 1 s without an answer.
    pub(crate) timeouts: u64,
    pub(crate) secs: f64,
    /// CPU time of the generator thread (softirqs run in its context too).
    pub(crate) cpu_ns: u64,
}

impl LoadResult {
    pub(crate) fn sent_rate(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    pub(crate) fn answer_rate(&self) -> f64 {
        self.answers as f64 / self.secs
    }
}

/// Runs the load generator in `netns` on `cpu`; `progress` counts queries.
pub(crate) fn generate(
    netns: &str,
    server: SocketAddrV4,
    load: Load,
    cpu: usize,
    progress: Arc<AtomicU64>,
) -> Result<LoadResult> {
    netns::run_in(netns, move || generate_here(server, load, cpu, &progress))?
}

pub(crate) fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |ts| {
        u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0)
    })
}

/// A client socket: like a resolver's, one query in flight at a time.
pub(crate) struct Client {
    pub(crate) socket: UdpSocket,
    pub(crate) next_id: u16,
    pub(crate) queries: u32,
    pub(crate) in_flight: Option<Instant>,
}

pub(crate) fn generate_here(
    server: SocketAddrV4,
    load: Load,
    cpu: usize,
    progress: &AtomicU64,
) -> Result<LoadResult> {
    pin(cpu);
    let open = || -> io::Result<UdpSocket> {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(server)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let mut clients: Vec<Client> = (0..DNS_SOCKETS)
        .map(|i| {
            Ok(Client {
                socket: open()?,
                next_id: (i as u16).wrapping_mul(40503),
                queries: 0,
                in_flight: None,
            })
        })
        .collect::<io::Result<_>>()
        .context("opening client sockets")?;
    let mut query = DnsMsg::query(0, QNAME, 1).bytes();
    let mut buf = [0u8; 512];
    let mut r = LoadResult::default();
    let mut cursor = 0usize;
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let end = load.duration.map(|d| start + d);
    loop {
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) || load.total.is_some_and(|t| r.sent >= t) {
            break;
        }
        let mut quota = match load.rate {
            Some(rate) => {
                let due = (rate as f64 * (now - start).as_secs_f64()) as u64;
                if due <= r.sent + r.errors {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                (due - r.sent - r.errors).min(1024)
            }
            None => 256,
        };
        if let Some(total) = load.total {
            quota = quota.min(total - r.sent);
        }
        // Visit sockets round robin; a socket still waiting for its answer
        // is skipped (closed loop: at most one query per socket in flight).
        let mut visited = 0;
        while quota > 0 && visited < DNS_SOCKETS {
            let c = &mut clients[cursor];
            cursor = (cursor + 1) % DNS_SOCKETS;
            visited += 1;
            while c.socket.recv(&mut buf).is_ok() {
                r.answers += 1;
                c.in_flight = None;
            }
            if let Some(at) = c.in_flight {
                if at.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                r.timeouts += 1;
            }
            if load.reopen_every > 0 && c.queries >= load.reopen_every {
                c.socket = open().context("reopening a client socket")?;
                c.queries = 0;
            }
            query[..2].copy_from_slice(&c.next_id.to_be_bytes());
            c.next_id = c.next_id.wrapping_add(1);
            c.queries += 1;
            match c.socket.send(&query) {
                Ok(_) => {
                    r.sent += 1;
                    c.in_flight = Some(Instant::now());
                }
                Err(_) => r.errors += 1,
            }
            quota -= 1;
            visited = 0;
        }
        if visited >= DNS_SOCKETS && load.rate.is_some() {
            // Every socket waits for its answer: do not spin.
            std::thread::sleep(Duration::from_micros(50));
        }
        progress.store(r.sent, Ordering::Relaxed);
    }
    r.secs = start.elapsed().as_secs_f64();
    // Answers still in flight.
    let grace = Instant::now() + Duration::from_millis(150);
    while Instant::now() < grace {
        for c in &clients {
            while c.socket.recv(&mut buf).is_ok() {
                r.answers += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    r.cpu_ns = thread_cpu_ns() - cpu0;
    Ok(r)
}
