//! One tokio runtime per process, created on first use and rebuilt in a forked child
//! (a fork copies the runtime's handle but none of its worker threads).

use std::sync::{Arc, Mutex};
use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

pub fn runtime() -> Arc<Runtime> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return rt.clone();
        }
    }
    // Inherited from the parent across fork: its threads do not exist here, so dropping
    // it could wait forever. Leak it and build a fresh one.
    if let Some((_, stale)) = slot.take() {
        std::mem::forget(stale);
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ursa-io")
            .build()
            .expect("failed to start the ursa I/O runtime"),
    );
    *slot = Some((pid, rt.clone()));
    rt
}
