//! Legacy TC over rtnetlink: the clsact qdisc and the filters on its two
//! hooks, listed and deleted one by one.
//!
//! aya attaches cls_bpf filters (kernels before v6.6 have no TCX) but can
//! only delete its own by (priority, handle), or every filter of a name
//! (`tc::qdisc_detach_program`), which would also delete a live tracer's.
//! Removing only what a dead tracer left needs the program id of each
//! filter (TCA_BPF_ID, dumped since v4.13), so this module dumps filters
//! itself (RTM_GETTFILTER) and deletes them by (parent, priority, handle)
//! (RTM_DELTFILTER), as `tc filter del … pref P handle H bpf` does.
//!
//! Messages are built and parsed here, with the constants of
//! `include/uapi/linux/{rtnetlink,pkt_sched,pkt_cls}.h`, so the parser can
//! be tested on messages captured from a real kernel (`testdata/`).

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent id.
pub const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// The clsact qdisc's own handle, `ffff:`.
pub const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// `TC_H_MIN_INGRESS`/`TC_H_MIN_EGRESS` under `ffff:`: the two hooks.
pub const PARENT_INGRESS: u32 = 0xFFFF_FFF2;
pub const PARENT_EGRESS: u32 = 0xFFFF_FFF3;

const NLMSG_HDR_LEN: usize = 16;
const TCMSG_LEN: usize = 20;
const NLA_HDR_LEN: usize = 4;
const NLA_TYPE_MASK: u16 = !(libc::NLA_F_NESTED as u16 | libc::NLA_F_NET_BYTEORDER as u16);

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_CHAIN: u16 = 11;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;

/// Errors talking rtnetlink or reading its answers.
#[derive(Debug, thiserror::Error)]
pub enum TcNetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed netlink message: {0}")]
    Malformed(&'static str),
}

impl TcNetlinkError {
    /// The errno the kernel answered, if it did.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } | Self::Socket(source) => source.raw_os_error(),
            Self::Malformed(_) => None,
        }
    }
}

/// Which clsact hook a filter sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub const BOTH: [Self; 2] = [Self::Ingress, Self::Egress];

    /// The filter parent (`tcm_parent`) of this hook.
    pub const fn parent(self) -> u32 {
        match self {
            Self::Ingress => PARENT_INGRESS,
            Self::Egress => PARENT_EGRESS,
        }
    }

    fn from_parent(parent: u32) -> Option<Self> {
        match parent {
            PARENT_INGRESS => Some(Self::Ingress),
            PARENT_EGRESS => Some(Self::Egress),
            _ => None,
        }
    }
}

/// What cls_bpf reports about its program (TCA_OPTIONS of a `bpf` filter).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfOptions {
    /// TCA_BPF_NAME: the name the loader gave (aya: the program's ELF name).
    pub name: Option<String>,
    /// TCA_BPF_ID: the kernel's id of the program (v4.13+).
    pub prog_id: Option<u32>,
    pub direct_action: bool,
}

/// One filter on a clsact hook, as RTM_NEWTFILTER describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub ifindex: u32,
    pub hook: Hook,
    pub priority: u16,
    /// Ethernet protocol, host order (`ETH_P_ALL` = 3 for aya's filters).
    pub protocol: u16,
    pub handle: u32,
    pub chain: u32,
    /// TCA_KIND: `bpf`, `matchall`, `u32`, `flower`, …
    pub kind: String,
    /// For `bpf` filters (not for the per-priority header message the
    /// kernel sends before a priority's filters, which has handle 0).
    pub bpf: Option<BpfOptions>,
}

/// One qdisc, as RTM_NEWQDISC describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
}

impl Qdisc {
    pub fn is_clsact(&self) -> bool {
        self.kind == "clsact" && self.parent == TC_H_CLSACT
    }
}

/// The `tcmsg` at the start of every TC message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TcMsg {
    ifindex: u32,
    handle: u32,
    parent: u32,
    info: u32,
}

impl TcMsg {
    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        out.extend_from_slice(&self.ifindex.to_ne_bytes());
        out.extend_from_slice(&self.handle.to_ne_bytes());
        out.extend_from_slice(&self.parent.to_ne_bytes());
        out.extend_from_slice(&self.info.to_ne_bytes());
    }

    fn parse(payload: &[u8]) -> Result<Self, TcNetlinkError> {
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(TcNetlinkError::Malformed("tcmsg cut short"))
        };
        Ok(Self {
            ifindex: word(4)?,
            handle: word(8)?,
            parent: word(12)?,
            info: word(16)?,
        })
    }
}

/// Netlink attributes of `buf`: (type without flag bits, value).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), TcNetlinkError>> {
    std::iter::from_fn(move || {
        if buf.len() < NLA_HDR_LEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDR_LEN || len > buf.len() {
            buf = &[];
            return Some(Err(TcNetlinkError::Malformed("attribute length")));
        }
        let value = &buf[NLA_HDR_LEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(Ok((kind, value)))
    })
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn u32_of(value: &[u8]) -> Option<u32> {
    value
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(NLA_HDR_LEN + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Parses the payload (after `nlmsghdr`) of an RTM_NEWTFILTER message.
/// `None` for filters that are not on a clsact hook.
pub fn parse_filter(payload: &[u8]) -> Result<Option<Filter>, TcNetlinkError> {
    let tc = TcMsg::parse(payload)?;
    let Some(hook) = Hook::from_parent(tc.parent) else {
        return Ok(None);
    };
    let mut filter = Filter {
        ifindex: tc.ifindex,
        hook,
        priority: (tc.info >> 16) as u16,
        protocol: u16::from_be(tc.info as u16),
        handle: tc.handle,
        chain: 0,
        kind: String::new(),
        bpf: None,
    };
    let mut options = None;
    for attr in attributes(&payload[TCMSG_LEN.min(payload.len())..]) {
        let (kind, value) = attr?;
        match kind {
            TCA_KIND => filter.kind = c_string(value),
            TCA_CHAIN => filter.chain = u32_of(value).unwrap_or(0),
            TCA_OPTIONS => options = Some(value),
            _ => {}
        }
    }
    if filter.kind == "bpf"
        && let Some(options) = options
    {
        let mut bpf = BpfOptions::default();
        for attr in attributes(options) {
            let (kind, value) = attr?;
            match kind {
                TCA_BPF_NAME => bpf.name = Some(c_string(value)),
                TCA_BPF_ID => bpf.prog_id = u32_of(value),
                TCA_BPF_FLAGS => {
                    bpf.direct_action =
                        u32_of(value).is_some_and(|f| f & TCA_BPF_FLAG_ACT_DIRECT != 0);
                }
                _ => {}
            }
        }
        filter.bpf = Some(bpf);
    }
    Ok(Some(filter))
}

/// Parses the payload of an RTM_NEWQDISC message.
pub fn parse_qdisc(payload: &[u8]) -> Result<Qdisc, TcNetlinkError> {
    let tc = TcMsg::parse(payload)?;
    let mut kind = String::new();
    for attr in attributes(&payload[TCMSG_LEN.min(payload.len())..]) {
        let (attr, value) = attr?;
        if attr == TCA_KIND {
            kind = c_string(value);
        }
    }
    Ok(Qdisc {
        ifindex: tc.ifindex,
        handle: tc.handle,
        parent: tc.parent,
        kind,
    })
}

/// Splits a datagram into (type, flags, seq, payload) messages.
fn messages(
    mut buf: &[u8],
) -> impl Iterator<Item = Result<(u16, u16, u32, &[u8]), TcNetlinkError>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDR_LEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            buf = &[];
            return Some(Err(TcNetlinkError::Malformed("message length")));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let payload = &buf[NLMSG_HDR_LEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(Ok((kind, flags, seq, payload)))
    })
}

/// A route netlink socket in the current thread's network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> Result<Self, TcNetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(TcNetlinkError::Socket)?;
        socket.bind_auto().map_err(TcNetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(TcNetlinkError::Socket)?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends one request and collects the payloads of the answers of type
    /// `answer` until the dump ends or the kernel acknowledges.
    fn request(
        &mut self,
        what: &dyn Fn() -> String,
        kind: u16,
        flags: u16,
        tc: TcMsg,
        attrs: &[u8],
        answer: u16,
    ) -> Result<Vec<Vec<u8>>, TcNetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + TCMSG_LEN + attrs.len());
        let len = u32::try_from(NLMSG_HDR_LEN + TCMSG_LEN + attrs.len()).unwrap_or(u32::MAX);
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        tc.emit(&mut msg);
        msg.extend_from_slice(attrs);
        self.socket
            .send(&msg, 0)
            .map_err(|source| TcNetlinkError::Kernel {
                what: what(),
                source,
            })?;
        // Not from `flags`: NLM_F_DUMP's bits mean CREATE/EXCL/REPLACE on
        // a NEW request. Dumps are the requests that expect answers.
        let dump = answer != 0;
        let mut out = Vec::new();
        loop {
            let (datagram, _) =
                self.socket
                    .recv_from_full()
                    .map_err(|source| TcNetlinkError::Kernel {
                        what: what(),
                        source,
                    })?;
            for message in messages(&datagram) {
                let (kind, _, msg_seq, payload) = message?;
                if msg_seq != seq {
                    continue;
                }
                match i32::from(kind) {
                    // A dump that failed part-way ends with a negative
                    // errno in NLMSG_DONE.
                    libc::NLMSG_DONE => {
                        let errno = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if errno < 0 {
                            return Err(TcNetlinkError::Kernel {
                                what: what(),
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                        return Ok(out);
                    }
                    libc::NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or(TcNetlinkError::Malformed("nlmsgerr cut short"))?;
                        if errno == 0 {
                            if !dump {
                                return Ok(out);
                            }
                        } else {
                            return Err(TcNetlinkError::Kernel {
                                what: what(),
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                    }
                    _ if kind == answer => out.push(payload.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// Every filter on the clsact hooks of `ifindex` (none when it has no
    /// clsact qdisc).
    pub fn filters(&mut self, ifindex: u32) -> Result<Vec<Filter>, TcNetlinkError> {
        let mut out = Vec::new();
        for hook in Hook::BOTH {
            let tc = TcMsg {
                ifindex,
                parent: hook.parent(),
                ..TcMsg::default()
            };
            let answers = match self.request(
                &|| format!("listing {hook:?} filters of ifindex {ifindex}"),
                libc::RTM_GETTFILTER,
                libc::NLM_F_DUMP as u16,
                tc,
                &[],
                libc::RTM_NEWTFILTER,
            ) {
                Ok(answers) => answers,
                // No clsact qdisc (or the link is gone): no filter.
                Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENODEV)) => {
                    continue;
                }
                Err(err) => return Err(err),
            };
            for payload in answers {
                out.extend(parse_filter(&payload)?);
            }
        }
        Ok(out)
    }

    /// Every qdisc of the namespace.
    pub fn qdiscs(&mut self) -> Result<Vec<Qdisc>, TcNetlinkError> {
        self.request(
            &|| "listing qdiscs".to_owned(),
            libc::RTM_GETQDISC,
            libc::NLM_F_DUMP as u16,
            TcMsg::default(),
            &[],
            libc::RTM_NEWQDISC,
        )?
        .iter()
        .map(|payload| parse_qdisc(payload))
        .collect()
    }

    /// Adds a clsact qdisc to `ifindex`: `Ok(true)` if this call created it,
    /// `Ok(false)` if it was there already.
    pub fn add_clsact(&mut self, ifindex: u32) -> Result<bool, TcNetlinkError> {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, TCA_KIND, b"clsact\0");
        let result = self.request(
            &|| format!("adding a clsact qdisc to ifindex {ifindex}"),
            libc::RTM_NEWQDISC,
            (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
            TcMsg {
                ifindex,
                handle: CLSACT_HANDLE,
                parent: TC_H_CLSACT,
                info: 0,
            },
            &attrs,
            0,
        );
        match result {
            Ok(_) => Ok(true),
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Deletes the clsact qdisc of `ifindex`, and with it every filter on
    /// it: callers check that none is left first.
    pub fn delete_clsact(&mut self, ifindex: u32) -> Result<(), TcNetlinkError> {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, TCA_KIND, b"clsact\0");
        self.request(
            &|| format!("deleting the clsact qdisc of ifindex {ifindex}"),
            libc::RTM_DELQDISC,
            libc::NLM_F_ACK as u16,
            TcMsg {
                ifindex,
                handle: CLSACT_HANDLE,
                parent: TC_H_CLSACT,
                info: 0,
            },
            &attrs,
            0,
        )
        .map(drop)
    }

    /// Deletes one filter by (hook, priority, protocol, handle) in its
    /// chain. TCA_KIND makes the kernel refuse if what sits there now is
    /// not of the same kind.
    pub fn delete_filter(&mut self, filter: &Filter) -> Result<(), TcNetlinkError> {
        let mut attrs = Vec::new();
        let mut kind = filter.kind.as_bytes().to_vec();
        kind.push(0);
        push_attr(&mut attrs, TCA_KIND, &kind);
        if filter.chain != 0 {
            push_attr(&mut attrs, TCA_CHAIN, &filter.chain.to_ne_bytes());
        }
        self.request(
            &|| {
                format!(
                    "deleting filter pref {} handle {:#x} ({:?}) of ifindex {}",
                    filter.priority, filter.handle, filter.hook, filter.ifindex
                )
            },
            libc::RTM_DELTFILTER,
            libc::NLM_F_ACK as u16,
            TcMsg {
                ifindex: filter.ifindex,
                handle: filter.handle,
                parent: filter.hook.parent(),
                info: (u32::from(filter.priority) << 16) | u32::from(filter.protocol.to_be()),
            },
            &attrs,
            0,
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dumps captured on 6.18 (`testdata/*.bin`, raw datagrams of
    /// RTM_GETTFILTER/RTM_GETQDISC answers) from a namespace where `va`
    /// (ifindex 3) had a clsact qdisc, a running tracer's two filters, and
    /// a foreign classic-BPF filter at pref 20 (`tc filter add dev va
    /// ingress pref 20 bpf bytecode '1,6 0 0 0,'`).
    const INGRESS: &[u8] = include_bytes!("testdata/filters-ingress-6.18.bin");
    const EGRESS: &[u8] = include_bytes!("testdata/filters-egress-6.18.bin");
    const QDISCS: &[u8] = include_bytes!("testdata/qdiscs-6.18.bin");

    fn parsed(datagram: &[u8], kind: u16) -> Vec<&[u8]> {
        messages(datagram)
            .map(|m| m.expect("well-formed message"))
            .filter(|(k, ..)| *k == kind)
            .map(|(.., payload)| payload)
            .collect()
    }

    fn filters(datagram: &[u8]) -> Vec<Filter> {
        parsed(datagram, libc::RTM_NEWTFILTER)
            .into_iter()
            .filter_map(|p| parse_filter(p).expect("filter parses"))
            .collect()
    }

    #[test]
    fn ingress_dump_has_our_filter_and_the_foreign_one() {
        let all = filters(INGRESS);
        // One header message per priority (handle 0, no options), then the
        // filters of that priority.
        let real: Vec<&Filter> = all.iter().filter(|f| f.handle != 0).collect();
        assert_eq!(real.len(), 2, "{all:#?}");
        let foreign = real.iter().find(|f| f.priority == 20).expect("foreign");
        assert_eq!(foreign.kind, "bpf");
        assert_eq!(foreign.hook, Hook::Ingress);
        let bpf = foreign.bpf.as_ref().expect("bpf options");
        assert_eq!(bpf.name, None, "classic BPF has no name");
        assert!(!bpf.direct_action);
        let ours = real.iter().find(|f| f.priority == 49152).expect("ours");
        assert_eq!(
            (ours.ifindex, ours.handle, ours.chain, ours.protocol),
            (3, 1, 0, libc::ETH_P_ALL as u16)
        );
        assert_eq!(
            ours.bpf,
            Some(BpfOptions {
                name: Some("tracer_ingress".into()),
                prog_id: Some(480),
                direct_action: true,
            })
        );
        for header in all.iter().filter(|f| f.handle == 0) {
            assert_eq!(header.bpf, None, "{header:?}");
        }
    }

    #[test]
    fn egress_dump_has_our_filter() {
        let real: Vec<Filter> = filters(EGRESS)
            .into_iter()
            .filter(|f| f.handle != 0)
            .collect();
        assert_eq!(real.len(), 1, "{real:#?}");
        assert_eq!(real[0].hook, Hook::Egress);
        let bpf = real[0].bpf.as_ref().expect("bpf");
        assert_eq!(bpf.name.as_deref(), Some("tracer_egress"));
        assert_eq!(bpf.prog_id, Some(481));
    }

    #[test]
    fn qdisc_dump_finds_the_clsact() {
        let qdiscs: Vec<Qdisc> = parsed(QDISCS, libc::RTM_NEWQDISC)
            .into_iter()
            .map(|p| parse_qdisc(p).expect("qdisc parses"))
            .collect();
        let clsact: Vec<&Qdisc> = qdiscs.iter().filter(|q| q.is_clsact()).collect();
        assert_eq!(clsact.len(), 1, "{qdiscs:#?}");
        assert_eq!((clsact[0].ifindex, clsact[0].handle), (3, CLSACT_HANDLE));
        assert!(qdiscs.iter().any(|q| q.kind == "noqueue"));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let payload = parsed(INGRESS, libc::RTM_NEWTFILTER)
            .into_iter()
            .find(|p| p.len() > 60)
            .expect("a filter message");
        for len in 0..payload.len() {
            let _ = parse_filter(&payload[..len]);
        }
        assert!(parse_filter(&payload[..10]).is_err());
        for len in 0..INGRESS.len() {
            let _ = messages(&INGRESS[..len]).count();
        }
    }

    #[test]
    fn delete_request_layout() {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, TCA_KIND, b"bpf\0");
        assert_eq!(attrs, [8, 0, 1, 0, b'b', b'p', b'f', 0]);
        let mut out = Vec::new();
        TcMsg {
            ifindex: 3,
            handle: 1,
            parent: PARENT_INGRESS,
            info: (49152 << 16) | u32::from((libc::ETH_P_ALL as u16).to_be()),
        }
        .emit(&mut out);
        assert_eq!(out.len(), TCMSG_LEN);
        let back = TcMsg::parse(&out).expect("parse");
        assert_eq!(back.info >> 16, 49152);
        assert_eq!(u16::from_be(back.info as u16), libc::ETH_P_ALL as u16);
    }
}
