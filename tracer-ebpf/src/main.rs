#![no_std]
#![no_main]
// Inline assembly for the one atomic add the kernel code needs (core has no
// atomic read-modify-write for the BPF target).
#![feature(asm_experimental_arch)]

mod conntrack;
mod counter;
mod dns;
mod drops;
mod flood;
mod kernel;
mod maps;
mod parse;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach here; it is never taken.
    loop {}
}

/// GPL: fentry/fexit and several helpers used by the symptom probes are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
