//! The contract between tracer's kernel programs and its userspace collector.
//!
//! Every type here is `#[repr(C)]`, `Copy`, and has no implicit padding: the
//! kernel writes these bytes and userspace reads them back from maps and ring
//! buffers, so their layouts are pinned with `const` assertions.
#![no_std]

pub mod conntrack;
pub mod counter;
pub mod dns;
pub mod drops;
pub mod flood;
pub mod kernel;
pub mod loss;
pub mod tc;

/// Implements `aya::Pod` for shared types when built for userspace.
///
/// `Pod` promises that any bit pattern is a valid value, which holds for all of
/// these types because they contain only integers and arrays of integers.
#[macro_export]
#[doc(hidden)]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is repr(C), has no padding and only integer fields.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
