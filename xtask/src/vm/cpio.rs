//! A minimal writer for the `newc` cpio format, which is what the kernel
//! unpacks as an initramfs (Documentation/driver-api/early-userspace/
//! buffer-format.rst). Written here rather than shelling out to `cpio` so
//! the archive can hold `/dev/console` without root-only `mknod` on the host
//! and without one more package.

use std::io::{self, Write};

/// Entries are appended in order; a directory must come before its contents.
pub struct Archive<W: Write> {
    out: W,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

impl<W: Write> Archive<W> {
    pub fn new(out: W) -> Self {
        Self { out, next_ino: 1 }
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | mode, (0, 0), data)
    }

    /// A character device node, e.g. `dev/console` (5, 1): the kernel opens it
    /// as init's stdin/stdout/stderr before init can mount devtmpfs.
    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | 0o600, (major, minor), &[])
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let size = u32::try_from(data.len()).map_err(io::Error::other)?;
        let name_len = u32::try_from(name.len() + 1).map_err(io::Error::other)?;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
        // devminor, rdevmajor, rdevminor, namesize, check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_len, 0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        let zeros = [0u8; 3];
        self.out.write_all(&zeros[..(4 - len % 4) % 4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_four_byte_aligned() {
        let mut archive = Archive::new(Vec::new());
        archive.dir("bin").unwrap();
        archive.file("bin/x", 0o755, b"abcde").unwrap();
        let out = archive.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // "bin/x" header (110) + name with NUL (6) = 116, aligned; data 5 -> 8.
        let second = out.windows(6).skip(1).position(|w| w == b"070701").unwrap() + 1;
        let third = out[second + 1..]
            .windows(6)
            .position(|w| w == b"070701")
            .unwrap()
            + second
            + 1;
        assert_eq!(third - second, 116 + 8);
    }
}
