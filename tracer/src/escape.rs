//! The one escaping for bytes a pod (or whoever wrote a node file) chose:
//! DNS names, pod names, interface names.
//!
//! tracer runs as root and prints to an operator's terminal; a query for a
//! name holding `ESC ] 2 ; …` must not retitle or repaint that terminal. So,
//! as `dig` and `tcpdump` do, every byte outside printable ASCII is written
//! as `\DDD` (three decimal digits: ESC is `\027`). The result is plain
//! ASCII: valid UTF-8 in JSON, safe on a terminal, and reversible.
//!
//! - DNS names are turned into presentation format once, when decoded
//!   ([`push_label`]: also `\.` for a dot inside a label and `\\` for a
//!   backslash, RFC 1035 §5.1, as `dig` prints them), so the model, JSON and
//!   the terminal all carry the same escaped text and the raw bytes are
//!   recoverable from it.
//! - Every string a terminal or a log line shows goes through [`terminal`]
//!   (or [`Shown`] in a format string): printable ASCII passes (an
//!   already-escaped DNS name is unchanged), everything else is `\DDD`, and
//!   the length is capped.

use std::fmt::{self, Write as _};

/// Longest string (in characters) [`terminal`] shows; longer ones are cut
/// and end in `…`. A maximal DNS name escaped is ~1 000 characters; 160
/// keeps a table row readable and still shows where names differ.
pub const TERMINAL_CAP: usize = 160;

/// What ends a string [`terminal`] had to cut, as cut DNS names end.
const CUT_MARK: &str = "…";
const CUT_MARK_CHAR: char = '…';

/// Bytes `dig` escapes with a backslash inside a label (they mean something
/// in a zone file): the label separator and the zone file's specials.
const LABEL_SPECIAL: &[u8] = b".\\\"();@$";

/// Appends `byte` as `\DDD`.
fn push_decimal(out: &mut String, byte: u8) {
    let _ = write!(out, "\\{byte:03}");
}

/// Appends one DNS label in presentation format: `\.`/`\\`/… for the
/// specials, `\DDD` for space, controls, DEL and non-ASCII bytes.
pub fn push_label(out: &mut String, label: &[u8]) {
    for &byte in label {
        if LABEL_SPECIAL.contains(&byte) {
            out.push('\\');
            out.push(char::from(byte));
        } else if byte.is_ascii_graphic() {
            out.push(char::from(byte));
        } else {
            push_decimal(out, byte);
        }
    }
}

/// A whole name from its labels, dot-separated, in presentation format.
pub fn name<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut out = String::new();
    for (i, label) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_label(&mut out, label);
    }
    out
}

/// `text` made safe for a terminal or a log line: printable ASCII and space
/// as they are, every other byte (controls, DEL, any non-ASCII byte, which
/// also covers C1 controls and bidi overrides) as `\DDD`, at most
/// [`TERMINAL_CAP`] characters (then `…`). The one non-ASCII character
/// kept is `…`, tracer's own mark for a cut name (a name's raw bytes
/// E2 80 A6 were escaped when it was decoded).
pub fn terminal(text: &str) -> String {
    capped(text, TERMINAL_CAP)
}

/// Longest error line [`line`] shows: error chains are long, but a name
/// inside one is still pod-chosen.
pub const LINE_CAP: usize = 4096;

/// [`terminal`] for a whole message (an error line), capped at
/// [`LINE_CAP`].
pub fn line(text: &str) -> String {
    capped(text, LINE_CAP)
}

fn capped(text: &str, cap: usize) -> String {
    let mut out = String::with_capacity(text.len().min(cap + CUT_MARK.len()));
    let mut shown = 0;
    for c in text.chars() {
        let before = out.len();
        if c.is_ascii_graphic() || c == ' ' || c == CUT_MARK_CHAR {
            out.push(c);
            shown += 1;
        } else {
            let mut utf8 = [0; 4];
            for &byte in c.encode_utf8(&mut utf8).as_bytes() {
                push_decimal(&mut out, byte);
                shown += 4;
            }
        }
        if shown > cap {
            out.truncate(before);
            out.push_str(CUT_MARK);
            break;
        }
    }
    out
}

/// [`terminal`] for format strings: `format!("{}", Shown(&iface.name))`.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `pad`, so width and alignment (`{:<16}`) still apply.
        f.pad(&terminal(self.0))
    }
}

/// Undoes [`push_label`]/[`name`] escapes (`\DDD`, `\c`): the raw bytes of
/// a presentation-format name, with `.` between labels kept as `.`.
/// For consumers of the JSON, and for tests. `None` for a malformed escape.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'\\' {
            out.push(byte);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1)?;
        if next.is_ascii_digit() {
            let digits = std::str::from_utf8(bytes.get(i + 1..i + 4)?).ok()?;
            out.push(digits.parse::<u8>().ok()?);
            i += 4;
        } else {
            out.push(next);
            i += 2;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_escape_like_dig() {
        assert_eq!(name([&b"www"[..], b"example", b"com"]), "www.example.com");
        assert_eq!(name([&b"a.b"[..], b"c"]), "a\\.b.c");
        assert_eq!(name([&b"\x1b[31m"[..]]), "\\027[31m");
        assert_eq!(name([&b"nul\0nl\n"[..]]), "nul\\000nl\\010");
        assert_eq!(name([&b"sp ace\\"[..]]), "sp\\032ace\\\\");
        assert_eq!(name([&b"\xff\xc3\xa9"[..]]), "\\255\\195\\169");
        assert_eq!(name([&b"a;b(c)@$\""[..]]), "a\\;b\\(c\\)\\@\\$\\\"");
    }

    #[test]
    fn every_byte_round_trips_and_stays_printable_ascii() {
        let all: Vec<u8> = (0..=255).collect();
        let shown = name([&all[..]]);
        assert!(shown.bytes().all(|b| b.is_ascii_graphic()), "{shown}");
        assert_eq!(unescape(&shown).unwrap(), all);
        assert_eq!(terminal(&shown).chars().count(), TERMINAL_CAP + 1);
    }

    #[test]
    fn terminal_text_escapes_controls_and_caps_length() {
        assert_eq!(terminal("azv1234"), "azv1234");
        assert_eq!(
            terminal("a b\\027"),
            "a b\\027",
            "already escaped: unchanged"
        );
        assert_eq!(terminal("\x1b]2;pwn\x07"), "\\027]2;pwn\\007");
        assert_eq!(
            terminal("é\u{202e}\u{9b}"),
            "\\195\\169\\226\\128\\174\\194\\155"
        );
        let long = terminal(&"\x1b".repeat(1000));
        assert!(
            long.chars().count() <= TERMINAL_CAP + 1 && long.ends_with('…'),
            "{long}"
        );
        assert_eq!(terminal("cut.name…"), "cut.name…");
        assert!(!long.contains('\x1b'));
        assert_eq!(format!("[{:<6}]", Shown("a\x1b")), "[a\\027 ]");
    }
}
