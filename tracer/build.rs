//! Builds the eBPF programs (`tracer-ebpf`, nightly + `-Z build-std=core` +
//! bpf-linker with BTF) and leaves the object in `OUT_DIR`, from where
//! `src/probes.rs` embeds it: the shipped `tracer` is one self-contained file.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    // Only the program sources matter; aya-build also watches `root`.
    println!("cargo:rerun-if-changed=../tracer-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
