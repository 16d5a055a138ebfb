//! A ring buffer map watched by the async runtime.

use aya::maps::{Map, MapData, MapError, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// An aya ring buffer registered with tokio, drained when readable.
pub struct Ring(AsyncFd<RingBuf<MapData>>);

/// Errors setting a ring up.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring buffer map: {0}")]
    Map(#[from] MapError),
    #[error("watching a ring buffer: {0}")]
    Io(#[from] std::io::Error),
}

impl Ring {
    /// Takes ownership of `map` (a `BPF_MAP_TYPE_RINGBUF`).
    pub fn new(map: Map) -> Result<Self, RingError> {
        let ring = RingBuf::try_from(map)?;
        // SAFETY: the RingBuf owns its map fd; it stays open and the same for
        // as long as the AsyncFd (which owns the RingBuf) lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        Ok(Self(fd))
    }

    /// Waits until records are waiting.
    pub async fn readable(&mut self) -> Result<(), RingError> {
        let mut guard = self.0.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Calls `f` on every waiting record.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let ring = self.0.get_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
    }
}

impl Ring {
    /// Decodes every waiting record as a `T`; returns them and how many
    /// records were too short to be one (never expected; counted anyway).
    pub fn drain_decoded<T: aya::Pod>(&mut self) -> (Vec<T>, u64) {
        let mut decoded = Vec::new();
        let mut undecodable = 0;
        self.drain(|item| match decode::<T>(item) {
            Some(value) => decoded.push(value),
            None => undecodable += 1,
        });
        (decoded, undecodable)
    }
}

/// Copies a `T` out of a ring record; `None` when the record is too short.
pub fn decode<T: aya::Pod>(item: &[u8]) -> Option<T> {
    if item.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: T is Pod (any bit pattern is valid); the length is checked;
    // read_unaligned because records are only 8-byte aligned.
    Some(unsafe { item.as_ptr().cast::<T>().read_unaligned() })
}
