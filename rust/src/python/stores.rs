//! Stores as Python sees them: an opaque handle made once from a spec (a dict that holds
//! credentials and is dropped as soon as the handle exists), and the listing and upload
//! calls that take handles. Nothing gives the credentials back: no attribute, no repr,
//! no pickle.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{to_py, wait};
use crate::error::Error;
use crate::listing::{self, ListRequest};
use crate::store::{Store, StoreConfig};

/// A store spec as `ursa.stores` builds it, by name.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Spec {
    kind: String,
    #[pyo3(default)]
    bucket: Option<String>,
    #[pyo3(default)]
    endpoint: Option<String>,
    #[pyo3(default)]
    region: Option<String>,
    #[pyo3(default)]
    allow_http: Option<bool>,
    #[pyo3(default)]
    access_key_id: Option<String>,
    #[pyo3(default)]
    secret_access_key: Option<String>,
    #[pyo3(default)]
    label: Option<String>,
}

impl Spec {
    fn config(self) -> PyResult<StoreConfig> {
        let need = |value: Option<String>, name: &str| {
            value.ok_or_else(|| PyValueError::new_err(format!("an s3 store spec needs {name:?}")))
        };
        match self.kind.as_str() {
            "local" => Ok(StoreConfig::Local),
            "s3" => {
                let bucket = need(self.bucket, "bucket")?;
                Ok(StoreConfig::S3 {
                    label: self.label.unwrap_or_else(|| format!("s3://{bucket}")),
                    bucket,
                    endpoint: self.endpoint,
                    region: need(self.region, "region")?,
                    allow_http: self.allow_http.unwrap_or(false),
                    access_key_id: need(self.access_key_id, "access_key_id")?,
                    secret_access_key: need(self.secret_access_key, "secret_access_key")?,
                })
            }
            other => Err(PyValueError::new_err(format!("unknown store kind {other:?}"))),
        }
    }
}

/// An object store, shared by every handle made from the same spec in this process (one
/// connection pool). Equal handles are the same store.
#[pyclass(module = "ursa._core", name = "Store", frozen)]
pub(super) struct StoreHandle {
    pub(super) inner: Arc<Store>,
}

#[pymethods]
impl StoreHandle {
    /// Made with the GIL released: a first store's HTTP client takes milliseconds.
    #[new]
    fn new(py: Python<'_>, spec: Bound<'_, PyDict>) -> PyResult<Self> {
        let config = spec.extract::<Spec>()?.config()?;
        let inner = py.detach(|| Store::shared(&config)).map_err(to_py)?;
        Ok(StoreHandle { inner })
    }

    fn __repr__(&self) -> String {
        format!("Store({:?})", self.inner.label)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<StoreHandle>()
            .is_ok_and(|o| Arc::ptr_eq(&o.get().inner, &self.inner))
    }

    fn __hash__(&self) -> u64 {
        Arc::as_ptr(&self.inner) as usize as u64
    }

    /// A handle is the store itself: copying gives the same one.
    fn __copy__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: PyRef<'py, Self>, _memo: &Bound<'py, PyAny>) -> PyRef<'py, Self> {
        slf
    }

    /// Never pickled: it holds credentials. A process that needs the store locates it again
    /// from the profile (whose credentials come from its own environment).
    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "an ursa store handle holds credentials and cannot be pickled; \
             send the profile's name and locate the store again",
        ))
    }
}

pub(super) fn stores(handles: &[PyRef<'_, StoreHandle>]) -> Vec<Arc<Store>> {
    handles.iter().map(|h| h.inner.clone()).collect()
}

/// Objects listed in one call from which the freed listing is handed back to the system.
const TRIM_AFTER: usize = 4096;

/// One listed object: (key, key relative to the request, size, etag).
type Listed = (String, String, u64, Option<String>);

/// Expand requests `(store, prefix_or_key, is_prefix)` into objects (`listing::expand_all`).
#[pyfunction]
pub(super) fn list_objects(
    py: Python<'_>,
    handles: Vec<PyRef<'_, StoreHandle>>,
    requests: Vec<(usize, String, bool)>,
) -> PyResult<Vec<Vec<Listed>>> {
    let stores = stores(&handles);
    if let Some(bad) = requests.iter().find(|r| r.0 >= stores.len()) {
        return Err(PyValueError::new_err(format!(
            "no store {} for {:?}",
            bad.0, bad.1
        )));
    }
    let requests = requests
        .into_iter()
        .map(|(store, target, is_prefix)| ListRequest {
            store,
            target,
            is_prefix,
        })
        .collect();
    let listed = wait(py, listing::expand_all(stores, requests))?.map_err(to_py)?;
    let count: usize = listed.iter().map(Vec::len).sum();
    let out = listed
        .into_iter()
        .map(|objects| {
            objects
                .into_iter()
                .map(|o| (o.key, o.rel, o.size, o.etag))
                .collect()
        })
        .collect();
    // Worth its cost (a walk of the heap, an madvise per run of free pages) only after a
    // large listing, not on every one-object call.
    if count >= TRIM_AFTER {
        crate::runtime::return_freed_memory();
    }
    Ok(out)
}

/// Upload local files `(path, key)` (for fixtures and demos), `concurrency` at a time,
/// each with its CRC32 for the store to keep unless `checksum` is false.
#[pyfunction]
#[pyo3(signature = (store, items, concurrency, checksum = true))]
pub(super) fn put_files(
    py: Python<'_>,
    store: PyRef<'_, StoreHandle>,
    items: Vec<(PathBuf, String)>,
    concurrency: usize,
    checksum: bool,
) -> PyResult<()> {
    let store = store.inner.clone();
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
