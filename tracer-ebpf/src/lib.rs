//! Empty host-side library. It exists so `tracer` can name this crate as a
//! build-dependency, which makes cargo rebuild `tracer` when the programs'
//! dependencies change; the programs themselves are the `tracer-ebpf` binary,
//! built for `bpfel-unknown-none` by `tracer/build.rs`.
#![no_std]
