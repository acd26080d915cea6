//! One tokio runtime per process, created on first use and rebuilt in a forked child
//! (a fork copies the runtime's handle but none of its worker threads).

use std::sync::{Arc, Mutex};
use tokio::runtime::Runtime;

use crate::error::{Error, ErrorKind, Result};

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The process's runtime. A machine that cannot start its threads (a container's thread
/// limit, say) gets an error saying so, never a panic.
pub fn runtime() -> Result<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    // Inherited from the parent across fork: its threads do not exist here, so dropping
    // it could wait forever. Leak it and build a fresh one.
    if let Some((_, stale)) = slot.take() {
        std::mem::forget(stale);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ursa-io")
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start ursa's I/O threads: {e}")))?;
    let rt = Arc::new(rt);
    *slot = Some((pid, rt.clone()));
    Ok(rt)
}

/// Give the memory the C heap holds free back to the system. glibc keeps what a thread
/// freed in that thread's arena: a listing of many objects is built on the runtime's
/// workers and dropped once Python has its copy, and without this it stays resident
/// (~280 bytes per listed object) for the rest of the process. Elsewhere: nothing.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Run blocking file-system work `f` without stalling the runtime's other tasks: on a
/// worker of the multi-thread runtime the worker hands its queue to another thread for
/// the call (`block_in_place`); elsewhere (a plain thread, a single-threaded test
/// runtime) `f` simply runs.
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::off_runtime;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A task stuck in slow file-system work (a disk that takes seconds to answer) must
    /// not hold up the others: here the blocked task waits for a message only another task
    /// can send, on a runtime with a single worker thread.
    #[test]
    fn work_off_the_runtime_does_not_stall_other_tasks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let got = rt.block_on(async move {
            let blocked =
                tokio::spawn(async move { off_runtime(|| rx.recv_timeout(Duration::from_secs(5)).is_ok()) });
            tokio::task::yield_now().await;
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            other.await.unwrap();
            blocked.await.unwrap()
        });
        assert!(got, "the other task never ran while one was blocked");
    }
}
