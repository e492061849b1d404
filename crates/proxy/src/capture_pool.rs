//! Big capture buffers, recycled.
//!
//! A body announced as large gets one capture buffer of up to `--body-limit` bytes (4 MiB by
//! default). Freed, such a buffer goes back to the OS within milliseconds (mimalloc purges freed
//! memory after 10 ms) and the next large body faults it in again, page by page, each page
//! zeroed by the kernel: measured on four parallel 10 MB downloads, the page faults were a
//! quarter of the proxy's CPU. So buffers of at least [`RECYCLE_MIN`] bytes are kept when the
//! flow that held them is dropped (at most [`KEEP_BYTES`] in all, none for longer than
//! [`KEEP_FOR`]) and handed to the next large capture.

use bytes::Bytes;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buffers smaller than this are allocated and freed as usual (MCP and OAuth bodies are small).
pub(crate) const RECYCLE_MIN: usize = 1 << 20;
/// At most this many bytes of buffers wait to be reused.
pub(crate) const KEEP_BYTES: usize = 32 << 20;
/// A buffer not reused within this time is freed.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(2);

/// Buffers waiting to be reused, with when they were returned.
static POOL: Mutex<Vec<(Vec<u8>, Instant)>> = Mutex::new(Vec::new());

/// An empty buffer with room for at least `want` bytes: a recycled one when `want` is large
/// and one is free.
pub(crate) fn take(want: usize) -> Vec<u8> {
    if want >= RECYCLE_MIN {
        if let Ok(mut pool) = POOL.lock() {
            evict_stale(&mut pool, Instant::now());
            if let Some(i) = pool.iter().position(|(b, _)| b.capacity() >= want) {
                return pool.swap_remove(i).0;
            }
        }
    }
    Vec::with_capacity(want)
}

/// Frees the buffers that waited longer than [`KEEP_FOR`] (a proxy gone idle after a burst of
/// downloads does not keep them); [`crate::Proxy::serve`] calls this once a second.
pub(crate) fn release_idle() {
    if let Ok(mut pool) = POOL.lock() {
        evict_stale(&mut pool, Instant::now());
    }
}

fn evict_stale(pool: &mut Vec<(Vec<u8>, Instant)>, now: Instant) {
    pool.retain(|(_, at)| now.duration_since(*at) < KEEP_FOR);
}

/// The captured bytes as [`Bytes`] without a copy; a large buffer returns to the pool when the
/// last reference to it is dropped.
pub(crate) fn freeze(buf: Vec<u8>) -> Bytes {
    if buf.capacity() >= RECYCLE_MIN && buf.capacity() <= KEEP_BYTES {
        Bytes::from_owner(Recycled(buf))
    } else {
        Bytes::from(buf)
    }
}

/// A captured buffer that goes back to the pool when dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        if let Ok(mut pool) = POOL.lock() {
            let now = Instant::now();
            evict_stale(&mut pool, now);
            let held: usize = pool.iter().map(|(b, _)| b.capacity()).sum();
            if held + buf.capacity() <= KEEP_BYTES {
                pool.push((buf, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is process-wide: tests that use it take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn pooled() -> Vec<usize> {
        POOL.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(b, _)| b.capacity())
            .collect()
    }

    #[test]
    fn a_large_capture_buffer_is_reused_once_its_bytes_are_dropped() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();

        let mut buf = take(RECYCLE_MIN);
        buf.extend_from_slice(b"captured");
        let ptr = buf.as_ptr();
        let bytes = freeze(buf);
        assert_eq!(&bytes[..], b"captured");
        let copy = bytes.clone();
        drop(bytes);
        assert!(pooled().is_empty(), "still referenced by the clone");
        drop(copy);
        assert_eq!(pooled().len(), 1);

        let again = take(RECYCLE_MIN / 2 + RECYCLE_MIN / 2);
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        assert!(again.is_empty(), "handed out empty");
        assert!(pooled().is_empty());

        // Small buffers and small requests bypass the pool.
        drop(freeze(take(1024)));
        assert!(pooled().is_empty());
        drop(freeze(again));
        assert_eq!(take(1024).capacity(), 1024);
        assert_eq!(
            pooled().len(),
            1,
            "a small request does not take a large buffer"
        );
        POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    #[test]
    fn the_pool_holds_a_bounded_number_of_bytes() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();

        let n = KEEP_BYTES / RECYCLE_MIN + 3;
        let held: Vec<Bytes> = (0..n).map(|_| freeze(take(RECYCLE_MIN))).collect();
        drop(held);
        let caps = pooled();
        assert_eq!(caps.len(), KEEP_BYTES / RECYCLE_MIN);
        assert!(caps.iter().sum::<usize>() <= KEEP_BYTES);
        // A buffer larger than the whole pool is never kept.
        drop(freeze(Vec::with_capacity(KEEP_BYTES + 1)));
        assert_eq!(pooled().len(), KEEP_BYTES / RECYCLE_MIN);
        POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    #[test]
    fn buffers_idle_too_long_are_freed() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.clear();
        let old = Instant::now()
            .checked_sub(KEEP_FOR + Duration::from_millis(1))
            .unwrap_or_else(Instant::now);
        pool.push((Vec::with_capacity(2 * RECYCLE_MIN), old));
        drop(pool);
        let fresh = take(RECYCLE_MIN);
        assert_eq!(
            fresh.capacity(),
            RECYCLE_MIN,
            "a new buffer, not the stale one"
        );
        assert!(pooled().is_empty(), "the stale buffer was freed");
        // The recorder's tick frees stale buffers without any capture happening.
        POOL.lock().unwrap_or_else(|e| e.into_inner()).extend([
            (fresh, old),
            (Vec::with_capacity(RECYCLE_MIN), Instant::now()),
        ]);
        release_idle();
        assert_eq!(pooled().len(), 1, "only the recent buffer is kept");
        POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
