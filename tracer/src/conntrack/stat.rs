//! `/proc/net/stat/nf_conntrack`: the kernel's own conntrack counters, one
//! hex row per CPU under a header naming the columns.
//!
//! The columns changed across kernels (`searched` became `clashres`,
//! `delete_list` became `chainlength`, both around v5.10), so they are read
//! by the header, never by position. The counters are per network namespace.

use std::{collections::BTreeMap, path::Path};

/// Parse errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatError {
    #[error("empty conntrack statistics (is nf_conntrack loaded?)")]
    Empty,
    #[error("line {line}: {values} values for {columns} columns")]
    Width {
        line: usize,
        values: usize,
        columns: usize,
    },
    #[error("line {line}: {value:?} is not hexadecimal")]
    Hex { line: usize, value: String },
}

/// Counters summed over CPUs, by column name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    columns: BTreeMap<String, u64>,
}

impl ConntrackStats {
    /// Reads the file of the calling thread's network namespace.
    ///
    /// `/proc/net` is `/proc/self/net`: the namespace of the process's main
    /// thread. A thread that entered another namespace (the lab traces each
    /// node from its own thread) must read `/proc/thread-self/net` instead.
    pub fn read() -> Result<Self, std::io::Error> {
        Self::read_from(Path::new("/proc/thread-self/net/stat/nf_conntrack"))
    }

    pub fn read_from(path: &Path) -> Result<Self, std::io::Error> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, StatError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or(StatError::Empty)?;
        let names: Vec<&str> = header.split_whitespace().collect();
        let mut columns: BTreeMap<String, u64> =
            names.iter().map(|n| ((*n).to_owned(), 0)).collect();
        for (index, line) in lines {
            let values: Vec<&str> = line.split_whitespace().collect();
            if values.len() != names.len() {
                return Err(StatError::Width {
                    line: index + 1,
                    values: values.len(),
                    columns: names.len(),
                });
            }
            for (name, value) in names.iter().zip(values) {
                let value = u64::from_str_radix(value, 16).map_err(|_| StatError::Hex {
                    line: index + 1,
                    value: value.to_owned(),
                })?;
                let total = columns.entry((*name).to_owned()).or_default();
                // `entries` is the table size, repeated on every row.
                if *name == "entries" {
                    *total = value;
                } else {
                    *total = total.wrapping_add(value);
                }
            }
        }
        Ok(Self { columns })
    }

    /// A column's total; `None` when this kernel has no such column.
    pub fn get(&self, column: &str) -> Option<u64> {
        self.columns.get(column).copied()
    }

    /// Resolved insertion clashes (`clashres`, v5.10+); `None` on kernels
    /// that do not count them.
    pub fn clash_resolved(&self) -> Option<u64> {
        self.get("clashres")
    }

    /// `self - earlier`, per column present in both.
    pub fn delta(&self, earlier: &Self) -> ConntrackDelta {
        let d = |name: &str| match (self.get(name), earlier.get(name)) {
            (Some(now), Some(then)) => Some(now.wrapping_sub(then)),
            _ => None,
        };
        ConntrackDelta {
            insert_failed: d("insert_failed").unwrap_or(0),
            drop: d("drop").unwrap_or(0),
            early_drop: d("early_drop").unwrap_or(0),
            clash_resolved: d("clashres"),
            search_restart: d("search_restart").unwrap_or(0),
            inserted: d("insert").unwrap_or(0),
        }
    }
}

/// What changed over a trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConntrackDelta {
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    /// `None` when the kernel has no `clashres` column.
    pub clash_resolved: Option<u64>,
    pub search_restart: u64,
    pub inserted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_layout_sums_cpus_by_header() {
        let s = ConntrackStats::parse(include_str!("testdata/nf_conntrack-6.18.txt")).unwrap();
        assert_eq!(s.get("entries"), Some(3));
        assert_eq!(s.clash_resolved(), Some(0x9f1));
        assert_eq!(s.get("insert"), Some(0x1c2a + 0x1c31));
        assert_eq!(s.get("insert_failed"), Some(1));
        assert_eq!(s.get("drop"), Some(1));
        assert_eq!(s.get("invalid"), Some(2));
        assert_eq!(s.get("searched"), None);
    }

    #[test]
    fn old_layout_has_no_clash_column() {
        let s = ConntrackStats::parse(include_str!("testdata/nf_conntrack-4.19.txt")).unwrap();
        assert_eq!(s.get("entries"), Some(0x2a));
        assert_eq!(s.clash_resolved(), None);
        assert_eq!(s.get("insert_failed"), Some(8));
        assert_eq!(s.get("drop"), Some(7));
        assert_eq!(s.get("early_drop"), Some(1));
        assert_eq!(s.get("delete_list"), Some(0));
        let d = s.delta(&ConntrackStats::default());
        assert_eq!(d.clash_resolved, None);
    }

    #[test]
    fn delta_between_reads() {
        let before =
            ConntrackStats::parse("entries insert_failed drop clashres\n1 1 1 5\n").unwrap();
        let after =
            ConntrackStats::parse("entries insert_failed drop clashres\n2 3 2 9\n").unwrap();
        let d = after.delta(&before);
        assert_eq!((d.insert_failed, d.drop, d.clash_resolved), (2, 1, Some(4)));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(ConntrackStats::parse(""), Err(StatError::Empty));
        assert!(matches!(
            ConntrackStats::parse("a b\n1\n"),
            Err(StatError::Width { line: 2, .. })
        ));
        assert!(matches!(
            ConntrackStats::parse("a\nzz\n"),
            Err(StatError::Hex { line: 2, .. })
        ));
    }
}
