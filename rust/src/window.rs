//! How far an object's parts may run ahead of its MD5. An MD5 can only be computed in
//! order, so an object whose only check is its MD5 ETag is fetched in order, at most a
//! window of bytes ahead of the hash: the hash then works from the first part's landing
//! to the last, overlapping the transfer, instead of waiting for a slow early part while
//! every later one lands (with all parts fetched at once, the first lands only when about
//! half the object has, and the hash of the rest is left to run after the transfer).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes fetched ahead of the hash by default: enough streams to keep the network busy,
/// few enough that hashing starts soon and reads back bytes still in the page cache.
pub const AHEAD_BYTES: u64 = 128 << 20;

/// The parts of one object that may be in flight: those before `hashed + ahead`, or all
/// once the window is opened (the object turned out to have a cheaper check).
#[derive(Debug)]
pub struct Window {
    ahead: usize,
    hashed: AtomicUsize,
    open: AtomicBool,
    changed: Notify,
}

impl Window {
    /// A window of `ahead_bytes` (at least two parts) over parts of `part_size`.
    pub fn new(part_size: u64, ahead_bytes: u64) -> Window {
        Window {
            ahead: (ahead_bytes / part_size.max(1)).max(2) as usize,
            hashed: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Every part may go: the object is not checked by its MD5 after all.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// The first `parts` parts are hashed.
    pub fn hashed(&self, parts: usize) {
        self.hashed.fetch_max(parts, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn admits(&self, part: usize) -> bool {
        self.open.load(Ordering::Acquire) || part < self.hashed.load(Ordering::Acquire) + self.ahead
    }

    /// Wait until `part` may be fetched.
    pub async fn admit(&self, part: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable(); // registered before the check: no wake-up is missed
            if self.admits(part) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn parts_wait_for_the_hash_to_come_within_the_window() {
        let window = Arc::new(Window::new(1 << 20, 4 << 20)); // four parts ahead
        for part in 0..4 {
            window.admit(part).await;
        }
        let waiting = tokio::spawn({
            let window = window.clone();
            async move { window.admit(5).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "part 5 went with nothing hashed");
        window.hashed(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "part 5 went with only part 0 hashed");
        window.hashed(2);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn an_opened_window_admits_every_part() {
        let window = Arc::new(Window::new(1 << 20, 4 << 20));
        let far = tokio::spawn({
            let window = window.clone();
            async move { window.admit(10_000).await }
        });
        window.open();
        tokio::time::timeout(Duration::from_secs(5), far)
            .await
            .unwrap()
            .unwrap();
    }
}
