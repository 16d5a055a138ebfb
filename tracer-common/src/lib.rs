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

/// Defines an enum of counter indexes from one list — each variant with its
/// index and its stable snake_case name — and derives from it `ALL` (every
/// variant, in index order), `from_raw` and `name`, so the three can never
/// disagree. The indexes must run 0, 1, 2, … in the listed order (checked
/// at compile time): the kernel uses them as array indexes.
#[macro_export]
macro_rules! counter_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal => $text:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: [Self; [$($value),+].len()] = [$(Self::$variant),+];

            /// The variant with index `raw`.
            pub const fn from_raw(raw: u32) -> Option<Self> {
                match raw {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// A stable snake_case name for reports and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!($name::ALL[i] as usize == i, "indexes must run 0, 1, 2, …");
                i += 1;
            }
        };
    };
}

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
