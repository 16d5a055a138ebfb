//! Kernel code addresses to `function+0xoffset`, from `/proc/kallsyms`
//! (read once, when the first report names a drop location).

use std::{fs, io};

/// Text symbols sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`; addresses are all 0 for an unprivileged
    /// reader (kptr_restrict), which leaves the table empty.
    pub fn load() -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string("/proc/kallsyms")?))
    }

    /// Parses kallsyms text: `address type name [module]` per line; only
    /// code (`t`/`T`) is kept.
    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                (addr != 0 && kind.eq_ignore_ascii_case("t")).then(|| (addr, name.to_owned()))
            })
            .collect();
        symbols.sort_unstable();
        Self { symbols }
    }

    /// `function+0xoffset` of `addr`, or the address in hex when no symbol
    /// precedes it.
    pub fn describe(&self, addr: u64) -> String {
        let at = self.symbols.partition_point(|(a, _)| *a <= addr);
        match at.checked_sub(1).map(|i| &self.symbols[i]) {
            Some((start, name)) => format!("{name}+{:#x}", addr - start),
            None => format!("{addr:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_the_function_they_are_in() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t nf_hook_slow\n\
             ffffffff81000200 d some_data\nffffffff81000300 T udp_queue_rcv_one_skb\t[udp]\n",
        );
        assert_eq!(k.describe(0xffff_ffff_8100_0123), "nf_hook_slow+0x23");
        // Data symbols do not end a function.
        assert_eq!(k.describe(0xffff_ffff_8100_0280), "nf_hook_slow+0x180");
        assert_eq!(
            k.describe(0xffff_ffff_8100_0300),
            "udp_queue_rcv_one_skb+0x0"
        );
        assert_eq!(k.describe(0x10), "0x10");
    }
}
