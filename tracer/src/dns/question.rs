//! Decoding the question bytes the kernel copies (wire-format name, qtype,
//! qclass) with simple-dns, so names are never parsed in the kernel.

/// A decoded question.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Question {
    /// The name in presentation format, as `dig` prints it, e.g.
    /// `kubernetes.default.svc.cluster.local`: bytes outside printable
    /// ASCII are `\DDD`, a dot inside a label `\.` (`crate::escape`), so
    /// it is plain ASCII and the raw bytes are recoverable. Cut names end
    /// in `…`; undecodable ones are `<malformed>`.
    pub name: String,
    /// `A`, `AAAA`, … or `TYPE<n>`.
    pub qtype: String,
}

/// Decodes `bytes` (from the kernel's question copy). `qtype` is the value
/// the kernel read after the name (0 when it could not).
pub fn decode(bytes: &[u8], qtype: u16, cut: bool) -> Question {
    let qtype_name = qtype_name(qtype);
    // simple-dns parses whole messages: give it a header with qdcount = 1.
    let mut message = Vec::with_capacity(12 + bytes.len());
    message.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    message.extend_from_slice(bytes);
    if !cut
        && let Ok(packet) = simple_dns::Packet::parse(&message)
        && let Some(q) = packet.questions.first()
    {
        // Not simple-dns's Display: it passes control bytes through. The
        // root name has no labels: name it as the lossy path does.
        let name = crate::escape::name(q.qname.as_bytes());
        return Question {
            name: if name.is_empty() {
                "<root>".into()
            } else {
                name
            },
            qtype: qtype_name,
        };
    }
    Question {
        name: labels_lossy(bytes),
        qtype: qtype_name,
    }
}

/// Best effort for cut or odd names: the whole labels that are there.
fn labels_lossy(bytes: &[u8]) -> String {
    let mut labels = Vec::new();
    let mut pos = 0;
    while let Some(&len) = bytes.get(pos) {
        let len = usize::from(len);
        if len == 0 {
            return if labels.is_empty() {
                "<root>".into()
            } else {
                crate::escape::name(labels)
            };
        }
        if len & 0xc0 != 0 {
            break;
        }
        match bytes.get(pos + 1..pos + 1 + len) {
            Some(label) => labels.push(label),
            None => break,
        }
        pos += len + 1;
    }
    if labels.is_empty() {
        "<malformed>".into()
    } else {
        format!("{}…", crate::escape::name(labels))
    }
}

/// Common qtype names.
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        other => format!("TYPE{other}"),
    }
}

/// Rcodes (RFC 1035 §4.1.1).
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// Rcode names (RFC 1035, 2136): the report's `rcodes` keys.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        RCODE_NOERROR => "NOERROR".into(),
        RCODE_FORMERR => "FORMERR".into(),
        RCODE_SERVFAIL => "SERVFAIL".into(),
        RCODE_NXDOMAIN => "NXDOMAIN".into(),
        RCODE_NOTIMP => "NOTIMP".into(),
        RCODE_REFUSED => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(name: &str, qtype: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out
    }

    #[test]
    fn decodes_a_plain_question() {
        let q = decode(&wire("kubernetes.default.svc.cluster.local", 28), 28, false);
        assert_eq!(q.name, "kubernetes.default.svc.cluster.local");
        assert_eq!(q.qtype, "AAAA");
    }

    #[test]
    fn hostile_bytes_are_escaped_on_both_paths() {
        let mut raw = vec![4, 0x1b, b'[', b'2', b'J', 3, b'a', b'.', b'b', 2, 0, b'\n'];
        raw.extend_from_slice(&[2, 0xff, 0xfe, 0, 0, 1, 0, 1]);
        let full = decode(&raw, 1, false);
        assert_eq!(full.name, "\\027[2J.a\\.b.\\000\\010.\\255\\254");
        let cut = decode(&raw[..12], 0, true);
        assert_eq!(cut.name, "\\027[2J.a\\.b.\\000\\010…");
        assert_eq!(
            crate::escape::unescape(full.name.split('.').next().unwrap()).unwrap(),
            b"\x1b[2J"
        );
    }

    #[test]
    fn cut_and_garbage_names_never_panic() {
        let full = wire("a.very.long.name.example", 1);
        assert_eq!(decode(&full[..10], 0, true).name, "a.very…");
        assert_eq!(decode(&[0xc0, 0x0c], 0, false).name, "<malformed>");
        assert_eq!(decode(&[], 0, true).name, "<malformed>");
        assert_eq!(decode(&[63], 0, true).name, "<malformed>");
        for len in 0..full.len() {
            let _ = decode(&full[..len], 1, len < full.len());
        }
    }
}
