//! Ranged reads as Python drives them (`ursa.ranges`): a reader per store and budget,
//! reads started ahead and their bytes handed out once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::stores::StoreHandle;
use super::{retry_policy, seconds, to_py, wait, RetryTuple};
use crate::read::{PendingRead, ReadOptions, ReadRequest, Reader};
use crate::runtime::runtime;

/// Ranged reads of one store's objects into memory (`read.rs`).
#[pyclass(module = "ursa._core", frozen)]
pub(super) struct RangeReader {
    inner: Arc<Reader>,
}

/// A request: (key, object size, etag, start, stop), stop exclusive.
type RangeTuple = (String, u64, Option<String>, u64, u64);

#[pymethods]
impl RangeReader {
    #[new]
    #[pyo3(signature = (store, *, max_concurrency, part_size, coalesce_gap, max_inflight_bytes, retry))]
    fn new(
        store: PyRef<'_, StoreHandle>,
        max_concurrency: usize,
        part_size: u64,
        coalesce_gap: u64,
        max_inflight_bytes: u64,
        retry: RetryTuple,
    ) -> PyResult<Self> {
        let store = store.inner.clone();
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
        self.inner.progress.bytes.load(Ordering::Relaxed)
    }

    fn retries(&self) -> u64 {
        self.inner.progress.retries.load(Ordering::Relaxed)
    }
}

/// A read on its way; `wait` hands its bytes out once.
#[pyclass(module = "ursa._core", frozen)]
pub(super) struct ReadHandle {
    inner: PendingRead,
}

#[pymethods]
impl ReadHandle {
    /// Each request's bytes, waiting up to `timeout_s` with the GIL released; `None` if
    /// not ready yet. Raises `CoreError` if the read failed or was cancelled.
    fn wait<'py>(&self, py: Python<'py>, timeout_s: f64) -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
        let timeout = seconds(timeout_s)?;
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
