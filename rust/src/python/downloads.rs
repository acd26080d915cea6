//! Downloads as Python starts and drains them: planned files and directory assets come
//! in by name (a swapped field is an error, not a silent bug), events go out as
//! `("file" | "directory", index)`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::stores::{stores, StoreHandle};
use super::{retry_policy, seconds, to_py, RetryTuple};
use crate::records::RecordLog;
use crate::runtime::runtime;
use crate::transfer::{self, DirectoryAsset, Download, Event, Job, Options};
use crate::verify::Verify;

/// One planned file, by name: which store, the object, where it lands, its directory
/// asset (an index into the assets) and a dead run's temporary to continue.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(super) struct FileArg {
    store: usize,
    key: String,
    size: u64,
    etag: Option<String>,
    dest: PathBuf,
    asset: Option<usize>,
    adopt: Option<PathBuf>,
}

/// A directory asset: its final directory and a dead run's stage to continue.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(super) struct AssetArg {
    dest: PathBuf,
    adopt: Option<PathBuf>,
}

/// Start a download. `records` is `(dest, record file)`: every published file is noted
/// there for later runs with resume=True.
#[pyfunction]
#[pyo3(signature = (handles, files, assets, *, max_concurrency, part_size, overwrite, retry, verify = "auto", records = None, durable = false))]
#[allow(clippy::too_many_arguments)]
pub(super) fn start_download(
    handles: Vec<PyRef<'_, StoreHandle>>,
    files: Vec<FileArg>,
    assets: Vec<AssetArg>,
    max_concurrency: usize,
    part_size: u64,
    overwrite: bool,
    retry: RetryTuple,
    verify: &str,
    records: Option<(PathBuf, PathBuf)>,
    durable: bool,
) -> PyResult<DownloadHandle> {
    let stores = stores(&handles);
    if let Some(bad) = files.iter().find(|f| f.store >= stores.len()) {
        return Err(PyValueError::new_err(format!(
            "no store {} for {:?}",
            bad.store, bad.key
        )));
    }
    if let Some(bad) = files.iter().find(|f| f.asset.is_some_and(|g| g >= assets.len())) {
        return Err(PyValueError::new_err(format!(
            "no directory asset for {:?}",
            bad.key
        )));
    }
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
        ..Options::default()
    };
    let jobs = files
        .into_iter()
        .map(|f| Job {
            store: f.store,
            key: f.key,
            size: f.size,
            etag: f.etag,
            dest: f.dest,
            asset: f.asset,
            adopt: f.adopt,
        })
        .collect();
    let assets = assets
        .into_iter()
        .map(|g| DirectoryAsset {
            dest: g.dest,
            adopt: g.adopt,
        })
        .collect();
    let records = records.map(|(root, file)| RecordLog::new(root, file));
    let inner = transfer::start(
        &*runtime().map_err(to_py)?,
        stores,
        jobs,
        assets,
        options,
        records,
    );
    Ok(DownloadHandle { inner })
}

/// A running download, drained by Python on the thread that started it.
#[pyclass(module = "ursa._core", frozen)]
pub(super) struct DownloadHandle {
    inner: Download,
}

#[pymethods]
impl DownloadHandle {
    /// Events as `("file", i)` (planned file `i` is complete and verified) or
    /// `("directory", d)` (directory asset `d` is published), waiting up to `timeout_s`
    /// with the GIL released; `None` once the engine is finished.
    fn next_events(&self, py: Python<'_>, timeout_s: f64) -> PyResult<Option<Vec<(&'static str, usize)>>> {
        let timeout = seconds(timeout_s)?;
        let Some(batch) = py.detach(|| self.inner.next_events(timeout)) else {
            return Ok(None);
        };
        let events = batch.into_iter().map(|e| match e {
            Event::FileDone(i) => ("file", i),
            Event::AssetDone(i) => ("directory", i),
        });
        Ok(Some(events.collect()))
    }

    fn bytes_done(&self) -> u64 {
        self.inner.progress.bytes.load(Ordering::Relaxed)
    }

    fn retries(&self) -> u64 {
        self.inner.progress.retries.load(Ordering::Relaxed)
    }

    fn cancel(&self) {
        self.inner.cancel();
    }

    /// Raise the engine's error, if any (call after `next_events` returned None).
    fn outcome(&self) -> PyResult<()> {
        self.inner.outcome().map_err(to_py)
    }
}
