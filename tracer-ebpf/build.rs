//! Rebuild the programs when the `bpf-linker` binary changes, since cargo
//! cannot see that dependency (see rust-lang/cargo#12385).
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
