//! The bridge to Python: converts types, waits with the GIL released (one helper,
//! `wait`), and turns engine errors into `CoreError` data for `ursa.errors` to map.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::error::Error;
use crate::journal;
use crate::listing::{self, ListRequest};
use crate::read::{PendingRead, ReadOptions, ReadRequest, Reader};
use crate::records::RecordLog;
use crate::retry::RetryPolicy;
use crate::runtime::runtime;
use crate::store::{Store, StoreConfig};
use crate::tempname;
use crate::transfer::{self, Download, Event, Group, Job, Options};
use crate::verify::Verify;

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

fn store_config(spec: &Bound<'_, PyDict>) -> PyResult<StoreConfig> {
    let get = |name: &str| -> PyResult<Option<Bound<'_, PyAny>>> { spec.get_item(name) };
    let text = |name: &str| -> PyResult<String> {
        get(name)?
            .ok_or_else(|| PyValueError::new_err(format!("store spec lacks {name:?}")))?
            .extract()
    };
    match text("kind")?.as_str() {
        "local" => Ok(StoreConfig::Local),
        "s3" => Ok(StoreConfig::S3 {
            bucket: text("bucket")?,
            endpoint: get("endpoint")?.map(|v| v.extract()).transpose()?.flatten(),
            region: text("region")?,
            allow_http: get("allow_http")?
                .map(|v| v.extract())
                .transpose()?
                .unwrap_or(false),
            access_key_id: text("access_key_id")?,
            secret_access_key: text("secret_access_key")?,
            label: match get("label")? {
                Some(label) => label.extract()?,
                None => format!("s3://{}", text("bucket")?),
            },
        }),
        other => Err(PyValueError::new_err(format!("unknown store kind {other:?}"))),
    }
}

/// The process's stores for these specs. Making one (its HTTP client, TLS roots) takes
/// milliseconds: the GIL is released meanwhile, so an asyncio loop is never held up.
fn stores(specs: &[Bound<'_, PyDict>]) -> PyResult<Vec<Arc<Store>>> {
    let Some(first) = specs.first() else {
        return Ok(Vec::new());
    };
    let configs = specs.iter().map(store_config).collect::<PyResult<Vec<_>>>()?;
    let shared = first
        .py()
        .detach(|| configs.iter().map(Store::shared).collect::<Result<Vec<_>, _>>());
    shared.map_err(to_py)
}

/// One listed object: (key, key relative to the request, size, etag).
type Listed = (String, String, u64, Option<String>);

/// Expand requests `(store, prefix_or_key, is_prefix)` into objects (`listing::expand_all`).
#[pyfunction]
fn list_objects(
    py: Python<'_>,
    specs: Vec<Bound<'_, PyDict>>,
    requests: Vec<(usize, String, bool)>,
) -> PyResult<Vec<Vec<Listed>>> {
    let stores = stores(&specs)?;
    let requests = requests
        .into_iter()
        .map(|(store, target, is_prefix)| ListRequest {
            store,
            target,
            is_prefix,
        })
        .collect();
    let listed = wait(py, listing::expand_all(stores, requests))?.map_err(to_py)?;
    Ok(listed
        .into_iter()
        .map(|objects| {
            objects
                .into_iter()
                .map(|o| (o.key, o.rel, o.size, o.etag))
                .collect()
        })
        .collect())
}

/// Upload local files `(path, key)` (for fixtures and demos), `concurrency` at a time,
/// each with its CRC32 for the store to keep unless `checksum` is false.
#[pyfunction]
#[pyo3(signature = (spec, items, concurrency, checksum = true))]
fn put_files(
    py: Python<'_>,
    spec: Bound<'_, PyDict>,
    items: Vec<(PathBuf, String)>,
    concurrency: usize,
    checksum: bool,
) -> PyResult<()> {
    let store = stores(&[spec])?.remove(0);
    let result = wait(py, async move {
        stream::iter(items)
            .map(|(path, key)| {
                let store = store.clone();
                async move {
                    let data = tokio::fs::read(&path)
                        .await
                        .map_err(|e| Error::io(&format!("reading {}", path.display()), &e))?;
                    store.put(&key, Bytes::from(data), checksum).await
                }
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<_>>()
            .await
    })?;
    result.map(|_| ()).map_err(to_py)
}

/// Remove this machine's dead processes' temporaries from these directories, except the
/// part files in `keep` (to be adopted) and their journals; returns how many.
#[pyfunction]
#[pyo3(signature = (dirs, keep = Vec::new()))]
fn clean_stale(py: Python<'_>, dirs: Vec<PathBuf>, keep: Vec<PathBuf>) -> PyResult<usize> {
    let keep: HashSet<PathBuf> = keep.into_iter().collect();
    let mut removed = 0;
    for dir in dirs {
        // The GIL is released while a directory is scanned; Ctrl+C is heard between them.
        removed += py
            .detach(|| tempname::clean_stale(&dir, &keep))
            .map_err(|e| to_py(Error::io(&format!("cleaning {}", dir.display()), &e)))?;
        py.check_signals()?;
    }
    Ok(removed)
}

/// A dead run's temporary that could be continued: (final path, temporary, etag, size,
/// bytes held).
type Resumable = (PathBuf, PathBuf, Option<String>, u64, u64);

fn resumable_in(dir: &std::path::Path) -> std::io::Result<Vec<Resumable>> {
    let mut found = Vec::new();
    for (path, temp) in tempname::stale_in(dir)? {
        if temp.tag != tempname::Tag::Part {
            continue;
        }
        let Some(state) =
            tempname::retagged(&path, tempname::Tag::Journal).and_then(|j| journal::State::read(&j))
        else {
            continue;
        };
        let held = state.held_total();
        found.push((dir.join(&temp.final_name), path, state.etag, state.size, held));
    }
    Ok(found)
}

/// The stages of directory assets that this machine's dead processes left in these
/// directories: (final directory, stage).
#[pyfunction]
fn find_stages(py: Python<'_>, dirs: Vec<PathBuf>) -> PyResult<Vec<(PathBuf, PathBuf)>> {
    let mut found = Vec::new();
    for dir in dirs {
        let stale = py
            .detach(|| tempname::stale_in(&dir))
            .map_err(|e| to_py(Error::io(&format!("reading {}", dir.display()), &e)))?;
        py.check_signals()?;
        for (path, temp) in stale {
            if temp.tag == tempname::Tag::Stage {
                found.push((dir.join(&temp.final_name), path));
            }
        }
    }
    Ok(found)
}

/// The part files in these directories that this machine's dead processes left with a
/// readable journal. Nothing is claimed here: the engine claims one when it starts.
#[pyfunction]
fn find_resumable(py: Python<'_>, dirs: Vec<PathBuf>) -> PyResult<Vec<Resumable>> {
    let mut found = Vec::new();
    for dir in dirs {
        // The scan and the journal reads run with the GIL released; Ctrl+C between dirs.
        let here = py
            .detach(|| resumable_in(&dir))
            .map_err(|e| to_py(Error::io(&format!("reading {}", dir.display()), &e)))?;
        found.extend(here);
        py.check_signals()?;
    }
    Ok(found)
}

/// This machine's name as temporaries carry it.
#[pyfunction]
fn host_name() -> &'static str {
    tempname::host()
}

/// A running download, drained by Python on the thread that started it.
#[pyclass(module = "ursa._core", frozen)]
struct DownloadHandle {
    inner: Download,
}

#[pymethods]
impl DownloadHandle {
    /// Events as `(kind, index)` (kind 0: job file done, 1: group published), waiting up
    /// to `timeout_s` with the GIL released; `None` once the engine is finished.
    fn next_events(&self, py: Python<'_>, timeout_s: f64) -> Option<Vec<(u8, usize)>> {
        let timeout = Duration::from_secs_f64(timeout_s.max(0.0));
        let batch = py.detach(|| self.inner.next_events(timeout))?;
        Some(
            batch
                .into_iter()
                .map(|e| match e {
                    Event::FileDone(i) => (0, i),
                    Event::GroupDone(i) => (1, i),
                })
                .collect(),
        )
    }

    fn bytes_done(&self) -> u64 {
        self.inner
            .progress
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn retries(&self) -> u64 {
        self.inner
            .progress
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Raise the engine's error, if any (call after `next_events` returned None).
    fn outcome(&self) -> PyResult<()> {
        self.inner.outcome().map_err(to_py)
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

type JobTuple = (
    usize,
    String,
    u64,
    Option<String>,
    PathBuf,
    Option<usize>,
    Option<PathBuf>,
);

/// Start a download. `records` is `(dest, record file)`: every published file is noted
/// there for later runs with resume=True.
#[pyfunction]
#[pyo3(signature = (specs, jobs, groups, *, max_concurrency, part_size, overwrite, retry, verify = "auto", records = None, durable = false))]
#[allow(clippy::too_many_arguments)]
fn start_download(
    specs: Vec<Bound<'_, PyDict>>,
    jobs: Vec<JobTuple>,
    groups: Vec<(PathBuf, Option<PathBuf>)>,
    max_concurrency: usize,
    part_size: u64,
    overwrite: bool,
    retry: RetryTuple,
    verify: &str,
    records: Option<(PathBuf, PathBuf)>,
    durable: bool,
) -> PyResult<DownloadHandle> {
    let stores = stores(&specs)?;
    let options = Options {
        max_concurrency,
        part_size,
        overwrite,
        retry: retry_policy(retry)?,
        verify: match verify {
            "auto" => Verify::Auto,
            "size" => Verify::Size,
            other => return Err(PyValueError::new_err(format!("unknown verify mode {other:?}"))),
        },
        durable,
    };
    let jobs = jobs
        .into_iter()
        .map(|(store, key, size, etag, dest, group, adopt)| Job {
            store,
            key,
            size,
            etag,
            dest,
            group,
            adopt,
        })
        .collect();
    let groups = groups
        .into_iter()
        .map(|(dest, adopt)| Group { dest, adopt })
        .collect();
    let records = records.map(|(root, file)| RecordLog::new(root, file));
    let inner = transfer::start(
        &*runtime().map_err(to_py)?,
        stores,
        jobs,
        groups,
        options,
        records,
    );
    Ok(DownloadHandle { inner })
}

/// Ranged reads of one store's objects into memory (`read.rs`).
#[pyclass(module = "ursa._core", frozen)]
struct RangeReader {
    inner: Arc<Reader>,
}

/// A request: (key, object size, etag, start, stop), stop exclusive.
type RangeTuple = (String, u64, Option<String>, u64, u64);

#[pymethods]
impl RangeReader {
    #[new]
    #[pyo3(signature = (spec, *, max_concurrency, part_size, coalesce_gap, max_inflight_bytes, retry))]
    fn new(
        spec: Bound<'_, PyDict>,
        max_concurrency: usize,
        part_size: u64,
        coalesce_gap: u64,
        max_inflight_bytes: u64,
        retry: RetryTuple,
    ) -> PyResult<Self> {
        let store = stores(&[spec])?.remove(0);
        let options = ReadOptions {
            max_concurrency,
            part_size: part_size.max(1),
            coalesce_gap,
            max_inflight_bytes,
            retry: retry_policy(retry)?,
        };
        let inner = Reader::new(&*runtime().map_err(to_py)?, store, options).map_err(to_py)?;
        Ok(RangeReader {
            inner: Arc::new(inner),
        })
    }

    fn start(&self, requests: Vec<RangeTuple>) -> PyResult<ReadHandle> {
        let requests = requests
            .into_iter()
            .map(|(key, size, etag, start, stop)| ReadRequest {
                key,
                size,
                etag,
                range: start..stop,
            })
            .collect();
        let inner = self
            .inner
            .start(&*runtime().map_err(to_py)?, requests)
            .map_err(to_py)?;
        Ok(ReadHandle { inner })
    }

    /// Every object under a `/`-terminated prefix, in key byte order: (key, size, etag).
    fn list(&self, py: Python<'_>, prefix: String) -> PyResult<Vec<(String, u64, Option<String>)>> {
        let reader = self.inner.clone();
        let listed = wait(py, async move { reader.list(&prefix).await })?.map_err(to_py)?;
        Ok(listed.into_iter().map(|o| (o.key, o.size, o.etag)).collect())
    }

    /// (size, etag) of one object.
    fn head(&self, py: Python<'_>, key: String) -> PyResult<(u64, Option<String>)> {
        let reader = self.inner.clone();
        let info = wait(py, async move { reader.head(&key).await })?.map_err(to_py)?;
        Ok((info.size, info.etag))
    }

    fn bytes_fetched(&self) -> u64 {
        self.inner
            .progress
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn retries(&self) -> u64 {
        self.inner
            .progress
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A read on its way; `wait` hands its bytes out once.
#[pyclass(module = "ursa._core", frozen)]
struct ReadHandle {
    inner: PendingRead,
}

#[pymethods]
impl ReadHandle {
    /// Each request's bytes, waiting up to `timeout_s` with the GIL released; `None` if
    /// not ready yet. Raises `CoreError` if the read failed or was cancelled.
    fn wait<'py>(&self, py: Python<'py>, timeout_s: f64) -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
        let timeout = Duration::try_from_secs_f64(timeout_s.max(0.0))
            .map_err(|_| PyValueError::new_err("timeout_s must be finite"))?;
        let Some(result) = py.detach(|| self.inner.wait(timeout)) else {
            return Ok(None);
        };
        let result = result.map_err(to_py)?;
        let bytes = (0..result.len())
            .map(|i| {
                PyBytes::new_with(py, result.size(i), |out| {
                    let mut at = 0;
                    for slice in result.slices(i) {
                        out[at..at + slice.len()].copy_from_slice(slice);
                        at += slice.len();
                    }
                    Ok(())
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Some(bytes))
    }

    fn done(&self) -> bool {
        self.inner.is_finished()
    }

    fn cancel(&self) {
        self.inner.cancel();
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_class::<DownloadHandle>()?;
    m.add_class::<RangeReader>()?;
    m.add_class::<ReadHandle>()?;
    m.add_function(wrap_pyfunction!(list_objects, m)?)?;
    m.add_function(wrap_pyfunction!(put_files, m)?)?;
    m.add_function(wrap_pyfunction!(clean_stale, m)?)?;
    m.add_function(wrap_pyfunction!(find_resumable, m)?)?;
    m.add_function(wrap_pyfunction!(find_stages, m)?)?;
    m.add_function(wrap_pyfunction!(host_name, m)?)?;
    m.add_function(wrap_pyfunction!(start_download, m)?)?;
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
