//! The bridge to Python: it only converts types, waits with the GIL released (one
//! helper, `wait`) and turns engine errors into `CoreError` data for `ursa.errors` to map.
//! One module per thing Python holds: stores, downloads, reads, temporaries.

mod downloads;
mod reads;
mod stores;
mod temporaries;

use std::future::Future;
use std::time::Duration;

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;
use crate::read::ReadOptions;
use crate::retry::RetryPolicy;
use crate::runtime::runtime;
use crate::transfer::Options;

pyo3::create_exception!(
    _core,
    CoreError,
    PyException,
    "An engine error: args are (kind, message, key, attempts, cause)."
);

fn to_py(err: Error) -> PyErr {
    CoreError::new_err(error_args(&err))
}

/// (kind, message, key, attempts); a cause never has a cause of its own.
type Fault = (&'static str, String, Option<String>, u32);

fn fault(err: &Error) -> Fault {
    (
        err.kind.as_str(),
        err.message.clone(),
        err.key.clone(),
        err.attempts,
    )
}

fn error_args(err: &Error) -> (&'static str, String, Option<String>, u32, Option<Fault>) {
    let (kind, message, key, attempts) = fault(err);
    (kind, message, key, attempts, err.cause.as_deref().map(fault))
}

/// The one place Python waits on the engine: the GIL is released in slices of 100 ms and
/// signals are checked between them, so Ctrl+C interrupts any wait (and aborts the work).
fn wait<T: Send + 'static>(py: Python<'_>, work: impl Future<Output = T> + Send + 'static) -> PyResult<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let rx = std::sync::Mutex::new(rx); // shared with the GIL-free closure below
    let task = runtime().map_err(to_py)?.spawn(async move {
        let _ = tx.send(work.await);
    });
    loop {
        match py.detach(|| {
            rx.lock()
                .expect("one waiter")
                .recv_timeout(Duration::from_millis(100))
        }) {
            Ok(value) => return Ok(value),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    task.abort();
                    return Err(interrupt);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyException::new_err("an ursa engine task stopped unexpectedly"))
            }
        }
    }
}

/// `(max_attempts, base_delay_s, max_delay_s, idle_timeout_s)`, as `RetryPolicy.as_tuple()`.
type RetryTuple = (u32, f64, f64, f64);

fn retry_policy((max_attempts, base, max, idle): RetryTuple) -> PyResult<RetryPolicy> {
    let seconds = |s: f64| {
        Duration::try_from_secs_f64(s)
            .map_err(|_| PyValueError::new_err("retry delays must be finite and >= 0"))
    };
    Ok(RetryPolicy {
        max_attempts: max_attempts.max(1),
        base_delay: seconds(base)?,
        max_delay: seconds(max)?,
        idle_timeout: seconds(idle)?,
    })
}

/// A wait in seconds from Python: finite and at most an hour, or a ValueError.
fn seconds(value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value.clamp(0.0, 3600.0)).map_err(|_| {
        PyValueError::new_err(format!(
            "a timeout must be a finite number of seconds, got {value}"
        ))
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_class::<stores::StoreHandle>()?;
    m.add_class::<downloads::DownloadHandle>()?;
    m.add_class::<reads::RangeReader>()?;
    m.add_class::<reads::ReadHandle>()?;
    m.add_function(wrap_pyfunction!(stores::list_objects, m)?)?;
    m.add_function(wrap_pyfunction!(stores::put_files, m)?)?;
    m.add_function(wrap_pyfunction!(temporaries::clean_stale, m)?)?;
    m.add_function(wrap_pyfunction!(temporaries::find_resumable, m)?)?;
    m.add_function(wrap_pyfunction!(temporaries::find_stages, m)?)?;
    m.add_function(wrap_pyfunction!(temporaries::host_name, m)?)?;
    m.add_function(wrap_pyfunction!(downloads::start_download, m)?)?;
    let defaults = Options::default();
    m.add("DEFAULT_MAX_CONCURRENCY", defaults.max_concurrency)?;
    m.add("DEFAULT_PART_SIZE", defaults.part_size)?;
    let retry = defaults.retry;
    let retry: RetryTuple = (
        retry.max_attempts,
        retry.base_delay.as_secs_f64(),
        retry.max_delay.as_secs_f64(),
        retry.idle_timeout.as_secs_f64(),
    );
    m.add("DEFAULT_RETRY", retry)?;
    let reads = ReadOptions::default();
    m.add("DEFAULT_READ_PART_SIZE", reads.part_size)?;
    m.add("DEFAULT_COALESCE_GAP", reads.coalesce_gap)?;
    Ok(())
}
