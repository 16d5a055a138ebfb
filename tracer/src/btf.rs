//! Kernel struct layouts from BTF, for eBPF programs built without CO-RE.
//!
//! aya-ebpf programs get no BTF field relocations, so a program reading
//! `skb->len` would bake in the offset of whatever kernel headers it was built
//! against. Instead userspace resolves each offset here, from the running
//! kernel's BTF, and hands it to the programs as a load-time global.
//!
//! aya 0.14 parses BTF too (`aya::Btf`), but keeps lookup by id and struct
//! members crate-private and cannot load split (module) BTF, hence this small
//! reader. It implements what Documentation/bpf/btf.rst needs for layouts: the
//! header, each kind's record length (to walk the type section), composite
//! members, arrays, typedefs/qualifiers and the string section.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// vmlinux's BTF, plus one split-BTF file per loaded module with BTF.
const SYS_BTF: &str = "/sys/kernel/btf";
const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: u32 = 24;
/// Bounds typedef chains and anonymous-member nesting: real BTF stays far
/// below it, and it stops a malformed (cyclic) blob from overflowing the stack.
const MAX_DEPTH: usize = 32;
/// Members one lookup may visit; stops a malformed blob whose anonymous
/// members refer back to their own struct from taking exponential time.
const MAX_VISITS: usize = 1 << 20;

// Kinds, from include/uapi/linux/btf.h.
const INT: u8 = 1;
const PTR: u8 = 2;
const ARRAY: u8 = 3;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const ENUM: u8 = 6;
const FWD: u8 = 7;
const TYPEDEF: u8 = 8;
const VOLATILE: u8 = 9;
const CONST: u8 = 10;
const RESTRICT: u8 = 11;
const FUNC: u8 = 12;
const FUNC_PROTO: u8 = 13;
const VAR: u8 = 14;
const DATASEC: u8 = 15;
const FLOAT: u8 = 16;
const DECL_TAG: u8 = 17;
const TYPE_TAG: u8 = 18;
const ENUM64: u8 = 19;

/// Where a member sits in the struct a lookup started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Bytes from the start of the outer struct.
    pub offset: u32,
    /// Size of the member in bytes (of the whole array, for an array).
    pub size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no BTF at {}: the kernel needs CONFIG_DEBUG_INFO_BTF", .0.display())]
    Missing(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("invalid module name {0:?}")]
    BadModuleName(String),
    #[error("no struct or union named {0} in BTF")]
    NoSuchStruct(String),
    #[error("empty member path for {0}")]
    EmptyPath(String),
    /// The outer struct (as "struct sk_buff") and the dotted member path.
    #[error("{0} has no member {1}")]
    NoMember(String, String),
    #[error("{0}: member {1} is not a struct or union")]
    NotComposite(String, String),
    #[error("{0}: member {1} is a bitfield, which has no byte offset")]
    Bitfield(String, String),
}

type Result<T, E = BtfError> = std::result::Result<T, E>;

/// Where BTF describes a kernel function (see [`Btf::func_location`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncLocation<'a> {
    /// "vmlinux" or the module's name, as in `/sys/kernel/btf/`.
    pub object: &'a str,
    /// The FUNC's type id (in the split id space for a module).
    pub btf_id: u32,
}

/// The parts of a `struct btf_type` record that layouts need.
#[derive(Default)]
struct Type {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    /// `size` for INT, ENUM, STRUCT, UNION and FLOAT; a type id for the rest.
    size_or_type: u32,
    /// Members, enumerators or parameters.
    vlen: u16,
    extra: Extra,
}

#[derive(Default)]
enum Extra {
    #[default]
    None,
    /// INT's encoding word: bit offset in bits 16-23, width in bits 0-7.
    Int(u32),
    /// Element type id and count.
    Array(u32, u32),
    /// `struct btf_member`s: name offset, type id, offset.
    Members(Vec<[u32; 3]>),
    /// `struct btf_enum`s: name offset, value.
    Enumerators(Vec<[u32; 2]>),
}

/// One parsed BTF file: vmlinux's, or a module's split BTF.
struct Blob {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let w = b
        .get(at..at.saturating_add(4))
        .ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
}

impl Blob {
    /// Parses `data`, in host byte order as the kernel exposes it. With a
    /// `base`, `data` is split BTF: its ids and string offsets continue the base's.
    fn parse(data: &[u8], base: Option<&Blob>) -> Result<Self> {
        use BtfError::Malformed as Bad;
        if data.get(..2) != Some(&MAGIC.to_ne_bytes()[..]) {
            return Err(Bad("bad magic (not BTF, or foreign byte order)"));
        }
        if data[2..].first() != Some(&1) {
            return Err(Bad("unsupported version"));
        }
        let hdr_len = u32_at(data, 4)?;
        if hdr_len < HEADER_LEN {
            return Err(Bad("header too short"));
        }
        let section = |at: usize| -> Result<&[u8]> {
            let start = u64::from(hdr_len) + u64::from(u32_at(data, at)?);
            let end = start + u64::from(u32_at(data, at + 4)?);
            let range = usize::try_from(start).ok().zip(usize::try_from(end).ok());
            range
                .and_then(|(s, e)| data.get(s..e))
                .ok_or(Bad("section out of bounds"))
        };
        let (sec, strings) = (section(8)?, section(16)?.to_vec());
        if base.is_none() && strings.first() != Some(&0) {
            return Err(Bad("string section must start with the empty name"));
        }
        // Id 0 is void, and only the base has it: split ids start at base.len().
        let mut types = Vec::from_iter(base.is_none().then(Type::default));
        let mut at = 0;
        while at < sec.len() {
            let (name_off, info) = (u32_at(sec, at)?, u32_at(sec, at + 4)?);
            let (kind, vlen) = (((info >> 24) & 0x1f) as u8, (info & 0xffff) as usize);
            // Every kind must be known: its trailing data's length depends on it.
            let extra_len = match kind {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
                ENUM | FUNC_PROTO => 8 * vlen,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                _ => return Err(Bad("unknown type kind")),
            };
            let rec = sec
                .get(at + 12..at + 12 + extra_len)
                .ok_or(Bad("truncated type"))?;
            let extra = match kind {
                INT => Extra::Int(u32_at(rec, 0)?),
                ARRAY => Extra::Array(u32_at(rec, 0)?, u32_at(rec, 8)?),
                STRUCT | UNION => Extra::Members(
                    (rec.chunks_exact(12))
                        .map(|m| Ok([u32_at(m, 0)?, u32_at(m, 4)?, u32_at(m, 8)?]))
                        .collect::<Result<_>>()?,
                ),
                ENUM => Extra::Enumerators(
                    (rec.chunks_exact(8))
                        .map(|e| Ok([u32_at(e, 0)?, u32_at(e, 4)?]))
                        .collect::<Result<_>>()?,
                ),
                _ => Extra::None,
            };
            let (kind_flag, size_or_type) = (info >> 31 == 1, u32_at(sec, at + 8)?);
            types.push(Type {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                vlen: vlen as u16,
                extra,
            });
            at += 12 + extra_len;
        }
        Ok(Self { types, strings })
    }
}

/// vmlinux alone, or a module's split BTF on top of it: there, ids and string
/// offsets below the base's counts refer to the base.
#[derive(Clone, Copy)]
struct Scope<'a> {
    base: &'a Blob,
    split: Option<&'a Blob>,
}

impl<'a> Scope<'a> {
    fn ty(self, id: u32) -> Result<&'a Type> {
        let (id, n) = (id as usize, self.base.types.len());
        let ty = match self.split {
            Some(split) if id >= n => split.types.get(id - n),
            _ => self.base.types.get(id),
        };
        ty.ok_or(BtfError::Malformed("type id out of range"))
    }

    fn name(self, off: u32) -> Result<&'a str> {
        let (off, n) = (off as usize, self.base.strings.len());
        let (strings, off) = match self.split {
            Some(split) if off >= n => (&split.strings, off - n),
            _ => (&self.base.strings, off),
        };
        let tail = strings
            .get(off..)
            .ok_or(BtfError::Malformed("bad name offset"))?;
        let name = tail
            .split(|&b| b == 0)
            .next()
            .filter(|n| n.len() < tail.len());
        let name = name.ok_or(BtfError::Malformed("unterminated name"))?;
        std::str::from_utf8(name).map_err(|_| BtfError::Malformed("name is not UTF-8"))
    }

    /// Follows typedefs and qualifiers to the type they stand for.
    fn strip(self, mut id: u32) -> Result<&'a Type> {
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(id)?;
            match ty.kind {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = ty.size_or_type,
                _ => return Ok(ty),
            }
        }
        Err(BtfError::Malformed("typedef chain too long"))
    }

    fn size(self, id: u32, depth: usize) -> Result<u32> {
        let ty = self.strip(id)?;
        match (ty.kind, &ty.extra) {
            (INT | STRUCT | UNION | ENUM | ENUM64 | FLOAT, _) => Ok(ty.size_or_type),
            // The BTF describes the kernel we run on, whose pointers are ours.
            (PTR, _) => Ok(size_of::<usize>() as u32),
            (ARRAY, &Extra::Array(elem, n)) if depth < MAX_DEPTH => {
                let size = self.size(elem, depth + 1)?.checked_mul(n);
                size.ok_or(BtfError::Malformed("array too large"))
            }
            _ => Err(BtfError::Malformed("member type has no size")),
        }
    }

    /// Finds `name` among `ty`'s members, looking inside anonymous struct and
    /// union members as C does (the kernel nests many fields that way).
    /// Returns the bit offset, bitfield width (0 if none) and type id.
    fn find(self, ty: &Type, name: &str, depth: usize, visits: &mut usize) -> Found {
        let Extra::Members(members) = &ty.extra else {
            return Ok(None);
        };
        for &[name_off, id, offset] in members {
            *visits += 1;
            if *visits > MAX_VISITS {
                return Err(BtfError::Malformed("anonymous members nest too much"));
            }
            // With kind_flag, the top 8 bits of the offset hold a bitfield's width.
            let (bit, width) = if ty.kind_flag {
                (offset & 0xff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            let member = self.name(name_off)?;
            if member == name {
                return Ok(Some((bit.into(), width, id)));
            }
            if member.is_empty()
                && depth < MAX_DEPTH
                && let Some((inner, width, id)) =
                    self.find(self.strip(id)?, name, depth + 1, visits)?
            {
                return Ok(Some((u64::from(bit) + inner, width, id)));
            }
        }
        Ok(None)
    }
}

type Found = Result<Option<(u64, u32, u32)>>;

/// The running kernel's type information: vmlinux plus chosen modules.
pub struct Btf {
    vmlinux: Blob,
    modules: Vec<(String, Blob)>,
}

impl Btf {
    /// Loads `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Self> {
        let path = Path::new(SYS_BTF).join("vmlinux");
        match fs::read(&path) {
            Ok(data) => Self::from_bytes(&data),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BtfError::Missing(path)),
            Err(source) => Err(BtfError::Io { path, source }),
        }
    }

    /// Parses a vmlinux BTF blob (host byte order).
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        Ok(Self {
            vmlinux: Blob::parse(data, None)?,
            modules: Vec::new(),
        })
    }

    /// Adds the split BTF of module `name` if `/sys/kernel/btf/<name>` exists.
    /// If not, the module is built in (its types are in vmlinux) or not loaded.
    pub fn with_module(self, name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(BtfError::BadModuleName(name.to_owned()));
        }
        let path = Path::new(SYS_BTF).join(name);
        match fs::read(&path) {
            Ok(data) => self.with_module_bytes(name, &data),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(self),
            Err(source) => Err(BtfError::Io { path, source }),
        }
    }

    fn with_module_bytes(mut self, name: &str, data: &[u8]) -> Result<Self> {
        let blob = Blob::parse(data, Some(&self.vmlinux))?;
        self.modules.push((name.to_owned(), blob));
        Ok(self)
    }

    /// The modules whose split BTF was found and loaded.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|(name, _)| name.as_str())
    }

    /// Each file's name, how to resolve its ids, and the types it defines.
    fn scopes(&self) -> impl Iterator<Item = (&str, Scope<'_>, &[Type])> {
        let base = &self.vmlinux;
        let modules = self
            .modules
            .iter()
            .map(|(name, m)| (name.as_str(), Some(m)));
        let files = std::iter::once(("vmlinux", None)).chain(modules);
        files.map(move |(file, split)| {
            (
                file,
                Scope { base, split },
                &split.unwrap_or(base).types[..],
            )
        })
    }

    /// Where a kernel function is described: "vmlinux" or a module's name.
    pub fn func_module(&self, name: &str) -> Option<&str> {
        self.func_location(name).map(|loc| loc.object)
    }

    /// The BTF object ("vmlinux" or a module) that describes function `name`
    /// and the function's type id in it — what BPF_PROG_LOAD needs as
    /// `attach_btf_obj_fd` / `attach_btf_id` for fentry/fexit. A module's
    /// ids continue after vmlinux's (split BTF, v5.11+), so a module id is
    /// only meaningful together with that module's BTF object.
    pub fn func_location(&self, name: &str) -> Option<FuncLocation<'_>> {
        let first_split_id = self.vmlinux.types.len();
        self.scopes().find_map(|(object, scope, types)| {
            let index = types
                .iter()
                .position(|t| t.kind == FUNC && scope.name(t.name_off).is_ok_and(|n| n == name))?;
            let first = if object == "vmlinux" {
                0
            } else {
                first_split_id
            };
            Some(FuncLocation {
                object,
                btf_id: u32::try_from(first + index).ok()?,
            })
        })
    }

    /// Arguments of tracepoint `name` as tp_btf programs see them: the
    /// parameters of the `btf_trace_<name>` typedef's prototype minus its
    /// leading `void *__data` (e.g. `kfree_skb`: 2 before v5.17, 3 with the
    /// drop reason, 4 with `rx_sk` since v6.11).
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let typedef = format!("btf_trace_{name}");
        self.scopes().find_map(|(_, scope, types)| {
            let ty = types.iter().find(|t| {
                t.kind == TYPEDEF && scope.name(t.name_off).is_ok_and(|n| n == typedef)
            })?;
            let ptr = scope.strip(ty.size_or_type).ok()?;
            let proto = (ptr.kind == PTR)
                .then(|| scope.strip(ptr.size_or_type).ok())
                .flatten()?;
            (proto.kind == FUNC_PROTO).then(|| usize::from(proto.vlen).saturating_sub(1))
        })
    }

    /// Whether BTF knows a function of that name, i.e. fentry/fexit can hook it.
    pub fn func_exists(&self, name: &str) -> bool {
        self.func_module(name).is_some()
    }

    /// The value of enumerator `variant` of `enum name` (e.g. a drop reason,
    /// whose numbers change between kernel versions).
    pub fn enum_value(&self, name: &str, variant: &str) -> Option<u32> {
        self.enum_values(name)
            .into_iter()
            .find_map(|(n, value)| (n == variant).then_some(value))
    }

    /// Every enumerator of `enum name` with its value, in BTF order (e.g.
    /// `skb_drop_reason`: its members and numbers differ between kernels).
    pub fn enum_values(&self, name: &str) -> Vec<(String, u32)> {
        self.scopes()
            .find_map(|(_, scope, types)| {
                types
                    .iter()
                    .filter(|t| t.kind == ENUM && scope.name(t.name_off).is_ok_and(|n| n == name))
                    .find_map(|t| match &t.extra {
                        Extra::Enumerators(values) => Some(
                            values
                                .iter()
                                .filter_map(|[off, value]| {
                                    Some((scope.name(*off).ok()?.to_owned(), *value))
                                })
                                .collect(),
                        ),
                        _ => None,
                    })
            })
            .unwrap_or_default()
    }

    /// How many parameters a kernel function takes (its FUNC_PROTO's vlen):
    /// fexit programs find the return value right after them.
    pub fn func_params(&self, name: &str) -> Option<usize> {
        self.scopes().find_map(|(_, scope, types)| {
            let func = types
                .iter()
                .find(|t| t.kind == FUNC && scope.name(t.name_off).is_ok_and(|n| n == name))?;
            let proto = scope.ty(func.size_or_type).ok()?;
            (proto.kind == FUNC_PROTO).then_some(usize::from(proto.vlen))
        })
    }

    /// The struct or union called `name` (or a typedef of one, as the kernel's
    /// anonymous `possible_net_t`), first from vmlinux, then from the modules.
    fn composite(&self, name: &str) -> Result<(Scope<'_>, &Type)> {
        for (_, scope, types) in self.scopes() {
            for ty in types {
                if !matches!(ty.kind, STRUCT | UNION | TYPEDEF)
                    || scope.name(ty.name_off).ok() != Some(name)
                {
                    continue;
                }
                let ty = if ty.kind == TYPEDEF {
                    scope.strip(ty.size_or_type)?
                } else {
                    ty
                };
                if matches!(ty.kind, STRUCT | UNION) {
                    return Ok((scope, ty));
                }
            }
        }
        Err(BtfError::NoSuchStruct(name.to_owned()))
    }

    /// Resolves `struct_name.path[0].path[1]…` to a byte offset and size. An
    /// array on the way stands for its first element (`tuplehash.tuple` is
    /// `tuplehash[0].tuple`).
    pub fn member_offset(&self, struct_name: &str, path: &[&str]) -> Result<Member> {
        let (scope, mut ty) = self.composite(struct_name)?;
        let outer = format!(
            "{} {struct_name}",
            if ty.kind == UNION { "union" } else { "struct" }
        );
        let err =
            |f: fn(String, String) -> BtfError, n: usize| f(outer.clone(), path[..n].join("."));
        let (mut bits, mut last) = (0u64, None);
        for (i, name) in path.iter().enumerate() {
            if let Some(prev) = last {
                ty = scope.strip(prev)?;
                if let Extra::Array(elem, _) = ty.extra {
                    ty = scope.strip(elem)?;
                }
                if !matches!(ty.kind, STRUCT | UNION) {
                    return Err(err(BtfError::NotComposite, i));
                }
            }
            let found = scope.find(ty, name, 0, &mut 0)?;
            let (bit, width, id) = found.ok_or_else(|| err(BtfError::NoMember, i + 1))?;
            // Bitfields without kind_flag keep bit offset and width in the INT.
            let ty = scope.strip(id)?;
            let int_bits = |enc| u64::from(enc & 0xff_00ff) != u64::from(ty.size_or_type) * 8;
            let int_bitfield = matches!(ty.extra, Extra::Int(enc) if int_bits(enc));
            if width != 0 || int_bitfield || bit % 8 != 0 {
                return Err(err(BtfError::Bitfield, i + 1));
            }
            (bits, last) = (bits + bit, Some(id));
        }
        let id = last.ok_or_else(|| BtfError::EmptyPath(struct_name.to_owned()))?;
        let offset =
            u32::try_from(bits / 8).map_err(|_| BtfError::Malformed("offset too large"))?;
        Ok(Member {
            offset,
            size: scope.size(id, 0)?,
        })
    }
}

/// [`Btf::member_offset`] as a function.
pub fn member_offset(btf: &Btf, struct_name: &str, path: &[&str]) -> Result<Member> {
    btf.member_offset(struct_name, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, process::Command};

    /// A string section under construction, continuing a base of length `.1`.
    struct Strings(Vec<u8>, u32);

    impl Strings {
        fn add(&mut self, s: &str) -> u32 {
            let off = self.1 + self.0.len() as u32;
            self.0.extend(s.bytes().chain([0]));
            off
        }
    }

    fn info(kind: u8, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (u32::from(kind) << 24) | vlen
    }

    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let tlen = 4 * types.len() as u32;
        let header = [HEADER_LEN, 0, tlen, tlen, strings.len() as u32];
        let words = header.iter().chain(types).flat_map(|w| w.to_ne_bytes());
        [&MAGIC.to_ne_bytes()[..], &[1, 0]]
            .concat()
            .into_iter()
            .chain(words)
            .chain(strings.iter().copied())
            .collect()
    }

    /// A vmlinux-like blob and a module on top of it, exercising anonymous
    /// unions/structs, kind_flag bitfields, typedef/const chains, arrays and
    /// split ids and strings.
    fn synthetic() -> (Vec<u8>, Vec<u8>) {
        let mut s = Strings(vec![0], 0);
        let (int, char_, e, x) = (s.add("int"), s.add("char"), s.add("e"), s.add("x"));
        #[rustfmt::skip]
        let base = [
            int, info(INT, 0, false), 4, 32,                                      // 1
            char_, info(INT, 0, false), 1, 8,                                     // 2
            0, info(ARRAY, 0, false), 0, 2, 1, 16,                                // 3: char[16]
            0, info(STRUCT, 2, false), 8, s.add("a"), 1, 0, s.add("b"), 1, 32,    // 4
            0, info(UNION, 2, false), 8, 0, 4, 0, s.add("raw"), 1, 0,             // 5
            s.add("outer"), info(STRUCT, 3, true), 32,                            // 6
                s.add("flags"), 1, 3 << 24, 0, 5, 64, s.add("name"), 3, 128,
            0, info(CONST, 0, false), 6,                                          // 7
            s.add("outer_t"), info(TYPEDEF, 0, false), 7,                         // 8
            s.add("wrap"), info(STRUCT, 2, false), 48, s.add("o"), 8, 64, s.add("p"), 10, 320, // 9
            0, info(PTR, 0, false), 6,                                            // 10
            0, info(FUNC_PROTO, 1, false), 1, x, 1,                               // 11
            s.add("my_func"), info(FUNC, 0, false), 11,                           // 12
            e, info(ENUM, 1, false), 4, x, 7,                                     // 13
            0, info(FUNC_PROTO, 3, false), 0, 0, 10, x, 1, x, 1,                  // 14: (void *, int, int)
            0, info(PTR, 0, false), 14,                                           // 15
            s.add("btf_trace_my_tp"), info(TYPEDEF, 0, false), 15,                // 16
        ];
        let mut m = Strings(vec![], s.0.len() as u32);
        #[rustfmt::skip]
        let module = [
            m.add("modstruct"), info(STRUCT, 2, false), 16, m.add("w"), 1, 32, m.add("q"), 18, 64, // 17
            m.add("alias"), info(TYPEDEF, 0, false), 6,                           // 18
            m.add("mod_func"), info(FUNC, 0, false), 11,                          // 19
        ];
        (blob(&base, &s.0), blob(&module, &m.0))
    }

    #[test]
    fn synthetic_layouts() {
        let (base, module) = synthetic();
        let btf = Btf::from_bytes(&base).unwrap();
        assert!(btf.func_exists("my_func") && !btf.func_exists("mod_func"));
        let btf = btf.with_module_bytes("mymod", &module).unwrap();
        let at = |s: &str, p: &[&str]| btf.member_offset(s, p).map(|m| (m.offset, m.size)).unwrap();
        assert_eq!(
            (
                at("outer", &["a"]),
                at("outer", &["b"]),
                at("outer", &["raw"])
            ),
            ((8, 4), (12, 4), (8, 4))
        );
        assert_eq!(
            (at("outer", &["name"]), at("outer_t", &["b"])),
            ((16, 16), (12, 4))
        );
        assert_eq!(
            (at("wrap", &["o", "b"]), at("wrap", &["p"])),
            ((20, 4), (40, 8))
        );
        assert_eq!(
            (at("modstruct", &["w"]), at("modstruct", &["q", "b"])),
            ((4, 4), (20, 4))
        );
        assert_eq!(
            (btf.func_module("my_func"), btf.func_module("mod_func")),
            (Some("vmlinux"), Some("mymod"))
        );
        assert_eq!(btf.func_module("e"), None);
        // Split ids continue vmlinux's: vmlinux has ids 0 (void) to 16.
        assert_eq!(
            btf.func_location("my_func"),
            Some(FuncLocation {
                object: "vmlinux",
                btf_id: 12
            })
        );
        assert_eq!(
            btf.func_location("mod_func"),
            Some(FuncLocation {
                object: "mymod",
                btf_id: 19
            })
        );
        assert_eq!(btf.func_location("modstruct"), None);
        assert_eq!(btf.tracepoint_args("my_tp"), Some(2));
        assert_eq!(btf.tracepoint_args("my_func"), None);
        let err = |s: &str, p: &[&str]| btf.member_offset(s, p).unwrap_err().to_string();
        assert_eq!(err("outer", &["nope"]), "struct outer has no member nope");
        assert_eq!(
            err("wrap", &["o", "nope"]),
            "struct wrap has no member o.nope"
        );
        let bitfield = "struct outer: member flags is a bitfield, which has no byte offset";
        assert_eq!(err("outer", &["flags"]), bitfield);
        let not_composite = "struct wrap: member o.name is not a struct or union";
        assert_eq!(err("wrap", &["o", "name", "x"]), not_composite);
        assert_eq!(
            err("missing", &["a"]),
            "no struct or union named missing in BTF"
        );
        assert!(matches!(
            btf.member_offset("outer", &[]),
            Err(BtfError::EmptyPath(_))
        ));
    }

    #[test]
    fn bad_blobs_give_errors() {
        let (base, module) = synthetic();
        for len in 0..base.len() {
            assert!(Btf::from_bytes(&base[..len]).is_err(), "truncated to {len}");
        }
        // Cycles: a typedef of itself, a struct whose anonymous members are itself.
        let mut s = Strings(vec![0], 0);
        let (t, st) = (s.add("t"), s.add("s"));
        #[rustfmt::skip]
        let cyclic = [t, info(TYPEDEF, 0, false), 1, st, info(STRUCT, 2, false), 4, 0, 2, 0, 0, 2, 0];
        let btf = Btf::from_bytes(&blob(&cyclic, &s.0)).unwrap();
        assert!(btf.member_offset("t", &["x"]).is_err() && btf.member_offset("s", &["x"]).is_err());
        // Random corruption must never panic or hang.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        for _ in 0..5000 {
            let mut blobs = [base.clone(), module.clone()];
            for _ in 0..1 + rand() % 4 {
                let blob = &mut blobs[rand() % 2];
                let i = rand() % blob.len();
                blob[i] = rand() as u8;
            }
            let Ok(btf) =
                Btf::from_bytes(&blobs[0]).and_then(|b| b.with_module_bytes("m", &blobs[1]))
            else {
                continue;
            };
            for (s, p) in [
                ("outer", &["b"][..]),
                ("wrap", &["o", "b"]),
                ("modstruct", &["q", "b"]),
            ] {
                let _ = btf.member_offset(s, p);
            }
            let _ = btf.func_exists("mod_func");
        }
    }

    /// bpftool's raw dump of vmlinux, an independent check of our parser:
    /// id -> (kind, name, referenced type id, [(member, type id, bit offset)]).
    struct Dump(HashMap<u64, Entry>);
    type Entry = (String, String, u64, Vec<(String, u64, u64)>);

    impl Dump {
        fn load() -> Option<Self> {
            let args = [
                "btf",
                "dump",
                "file",
                "/sys/kernel/btf/vmlinux",
                "format",
                "raw",
            ];
            let bpftool = ["bpftool", "/usr/sbin/bpftool"].iter();
            let out = bpftool
                .filter_map(|b| Command::new(b).args(args).output().ok())
                .next()?;
            let num = |s: &str, key| s.split(' ').find_map(|w| w.strip_prefix(key)?.parse().ok());
            let (mut types, mut cur) = (HashMap::new(), 0);
            for line in String::from_utf8(out.stdout).ok()?.lines() {
                let name = line.split('\'').nth(1).unwrap_or_default().to_owned();
                if let Some((id, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
                    cur = id.parse().ok()?;
                    let kind = rest.split(' ').next()?.to_owned();
                    types.insert(
                        cur,
                        (kind, name, num(rest, "type_id=").unwrap_or(0), Vec::new()),
                    );
                } else if let (Some(ty), Some(bits)) =
                    (num(line, "type_id="), num(line, "bits_offset="))
                {
                    types.get_mut(&cur)?.3.push((name, ty, bits));
                }
            }
            Some(Self(types))
        }

        /// Through typedefs, qualifiers and arrays, to descend into members.
        fn strip(&self, mut id: u64) -> Option<u64> {
            while ["TYPEDEF", "CONST", "VOLATILE", "ARRAY", "TYPE_TAG"]
                .contains(&self.0.get(&id)?.0.as_str())
            {
                id = self.0[&id].2;
            }
            Some(id)
        }

        fn find(&self, id: u64, name: &str) -> Option<(u64, u64)> {
            self.0
                .get(&id)?
                .3
                .iter()
                .find_map(|(n, t, b)| match n.as_str() {
                    n if n == name => Some((*b, *t)),
                    "(anon)" => self
                        .find(self.strip(*t)?, name)
                        .map(|(b2, t2)| (b + b2, t2)),
                    _ => None,
                })
        }

        fn bits(&self, s: &str, path: &[&str]) -> Option<u64> {
            let named = |t: &Entry| t.1 == s && ["STRUCT", "UNION", "TYPEDEF"].contains(&&*t.0);
            let mut id = *self.0.iter().find(|(_, t)| named(t))?.0;
            let mut bits = 0;
            for p in path {
                let (b, t) = self.find(self.strip(id)?, p)?;
                (bits, id) = (bits + b, t);
            }
            Some(bits)
        }
    }

    #[test]
    fn kernel_fields_match_bpftool() {
        let btf = match Btf::from_sys_fs()
            .and_then(|b| b.with_module("nf_conntrack")?.with_module("bridge"))
        {
            Ok(btf) => btf,
            Err(e) => return eprintln!("skipping: {e}"),
        };
        println!("module BTF loaded: {:?}", btf.modules().collect::<Vec<_>>());
        let dump = Dump::load();
        if dump.is_none() {
            eprintln!("bpftool unavailable: not cross-checking");
        }
        #[rustfmt::skip]
        let fields = [
            "sk_buff.head", "sk_buff.data", "sk_buff.mac_header", "sk_buff.network_header",
            "sk_buff.transport_header", "sk_buff.len", "sk_buff.dev", "sk_buff._nfct",
            "net_device.ifindex", "net_device.name", "net_device.nd_net", "net_device.nd_net.net",
            "possible_net_t.net", "net.ns.inum", "nf_conn.tuplehash", "nf_conntrack_tuple_hash.tuple",
            "nf_conntrack_tuple.src.u3", "nf_conntrack_tuple.src.u.all", "nf_conntrack_tuple.dst.u3",
            "nf_conntrack_tuple.dst.u.all", "nf_conntrack_tuple.dst.protonum",
        ];
        for field in fields {
            let (s, p) = field.split_once('.').unwrap();
            let path: Vec<_> = p.split('.').collect();
            let m = match btf.member_offset(s, &path) {
                Err(BtfError::NoSuchStruct(_)) if s.starts_with("nf_") => {
                    eprintln!("{s}: nf_conntrack not loaded");
                    continue;
                }
                m => m.unwrap_or_else(|e| panic!("{e}")),
            };
            println!("{field}: offset {} size {}", m.offset, m.size);
            // Only a module's structs may be missing from bpftool's vmlinux dump.
            let in_module = s.starts_with("nf_") && btf.modules().any(|m| m == "nf_conntrack");
            let oracle = dump.as_ref().map(|d| d.bits(s, &path));
            if let Some(bits) = oracle.filter(|b| b.is_some() || !in_module) {
                assert_eq!(
                    bits,
                    Some(u64::from(m.offset) * 8),
                    "{field} differs from bpftool"
                );
            }
        }
        let size = |s: &str, p: &str| btf.member_offset(s, &[p]).unwrap().size;
        assert_eq!((size("sk_buff", "len"), size("sk_buff", "head")), (4, 8));
        assert_eq!(
            (size("net_device", "ifindex"), size("net_device", "name")),
            (4, 16)
        );
        for f in [
            "__nf_conntrack_confirm",
            "nf_ct_resolve_clash",
            "__nf_ct_resolve_clash",
            "br_flood",
        ] {
            println!("{f}: {:?}", btf.func_module(f));
        }
        assert!(btf.func_exists("tcp_v4_rcv") && !btf.func_exists("no_such_function"));
    }
}
