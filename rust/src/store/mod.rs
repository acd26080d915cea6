//! The object stores ursa reads: S3-compatible buckets (R2, SeaweedFS, …) and the local
//! filesystem. Listing and HEAD go through `object_store` (which owns their retries);
//! object bodies, stored checksums and uploads go through requests signed in headers
//! (`s3`). One `Store` per configuration lives for the process (`Store::shared`), so its
//! connection pool is reused by every download and read.

mod local;
mod s3;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{BoxStream, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::checksum::Checksum;
use crate::error::{from_object_store, Error, ErrorKind, Result};

pub(crate) use s3::unquote;

/// Where a store is and how to reach it. The secret never appears in `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum StoreConfig {
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: String,
        allow_http: bool,
        access_key_id: String,
        secret_access_key: String,
        /// What messages call the store, e.g. "profile 'r2' (role assets, s3://bucket)".
        label: String,
    },
    /// Keys are absolute paths without their leading `/` (file:///a/b is key `a/b`).
    Local,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::S3 {
                bucket,
                endpoint,
                region,
                allow_http,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("endpoint", endpoint)
                .field("region", region)
                .field("allow_http", allow_http)
                .finish_non_exhaustive(),
            StoreConfig::Local => f.write_str("Local"),
        }
    }
}

/// One object as listed: its key, size and the ETag that pins every later GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// A response body on its way in: the bytes, how many leading bytes to drop (a server
/// that ignored Range sends the object from its start), and a full-object checksum if
/// the store sent one.
pub struct Body {
    pub stream: BoxStream<'static, Result<Bytes>>,
    pub skip: u64,
    pub checksum: Option<Checksum>,
}

enum Backend {
    S3(s3::S3),
    Local(Arc<LocalFileSystem>),
}

pub struct Store {
    backend: Backend,
    /// What to call the store in messages: `s3://bucket` or `file://`.
    pub label: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// The stores of this process, by configuration; emptied in a forked child (its
/// connections belong to the parent).
static SHARED: Mutex<Option<(u32, Shared)>> = Mutex::new(None);

type Shared = HashMap<StoreConfig, Arc<Store>>;

impl Store {
    pub fn new(config: &StoreConfig) -> Result<Store> {
        match config {
            StoreConfig::S3 { label, .. } => Ok(Store {
                backend: Backend::S3(s3::S3::new(config)?),
                label: label.clone(),
            }),
            StoreConfig::Local => Ok(Store {
                backend: Backend::Local(Arc::new(LocalFileSystem::new())),
                label: "file://".into(),
            }),
        }
    }

    /// The process's store for `config`, made on first use and kept, so every call
    /// reuses its connections.
    pub fn shared(config: &StoreConfig) -> Result<Arc<Store>> {
        let pid = std::process::id();
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|(owner, _)| *owner != pid) {
            if let Some((_, inherited)) = slot.take() {
                std::mem::forget(inherited); // its pools' tasks ran on the parent's runtime
            }
            *slot = Some((pid, HashMap::new()));
        }
        let (_, stores) = slot.as_mut().expect("set above");
        if let Some(store) = stores.get(config) {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::new(config)?);
        stores.insert(config.clone(), store.clone());
        Ok(store)
    }

    fn object_store(&self) -> &dyn ObjectStore {
        match &self.backend {
            Backend::S3(s3) => s3.object_store(),
            Backend::Local(local) => local.as_ref(),
        }
    }

    /// Every object under `prefix` (a `/`-terminated key prefix), in key byte order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = parse_path(prefix.trim_end_matches('/'))?;
        let mut objects: Vec<ObjectInfo> = self
            .object_store()
            .list(Some(&path))
            .map_ok(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
                etag: meta.e_tag,
            })
            .try_collect()
            .await
            .map_err(|e| from_object_store(e, prefix, &self.label))?;
        objects.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        Ok(drop_directory_markers(objects))
    }

    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let meta = self
            .object_store()
            .head(&parse_path(key)?)
            .await
            .map_err(|e| from_object_store(e, key, &self.label))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            etag: meta.e_tag,
        })
    }

    /// Upload `data` as `key`; with `checksum`, an S3 store is given its CRC32 to keep, as
    /// current SDKs do.
    pub async fn put(&self, key: &str, data: Bytes, checksum: bool) -> Result<()> {
        let path = parse_path(key)?;
        match &self.backend {
            Backend::S3(s3) => s3.put(&path, key, data, checksum).await,
            Backend::Local(local) => local::put(local, &path, key, data).await,
        }
    }

    /// The full-object checksum the store keeps for `key`, if any (local files keep none).
    pub async fn head_checksum(&self, key: &str, etag: Option<&str>) -> Result<Option<Checksum>> {
        match &self.backend {
            Backend::S3(s3) => s3.head_checksum(&parse_path(key)?, key, etag).await,
            Backend::Local(_) => Ok(None),
        }
    }

    /// Start a GET of `range` of `key`, pinned to `etag`. `total` is the object's size,
    /// so a request for all of it goes without a Range header.
    pub async fn get(&self, key: &str, range: Range<u64>, total: u64, etag: Option<&str>) -> Result<Body> {
        let path = parse_path(key)?;
        match &self.backend {
            Backend::S3(s3) => s3.get(&path, key, range, total, etag).await,
            Backend::Local(local) => local::get(local, &path, key, range, etag).await,
        }
    }
}

/// Zero-byte "folder" objects (`a/b/`, made by consoles and some uploaders) reach us as
/// `a/b` once `object_store` normalises the key; where other keys live below them they
/// are markers, not files, and are left out.
fn drop_directory_markers(objects: Vec<ObjectInfo>) -> Vec<ObjectInfo> {
    let parents: std::collections::HashSet<&str> = objects
        .iter()
        .flat_map(|o| {
            o.key
                .char_indices()
                .filter(|(_, c)| *c == '/')
                .map(|(i, _)| &o.key[..i])
        })
        .collect();
    let markers: std::collections::HashSet<String> = objects
        .iter()
        .filter(|o| o.size == 0 && parents.contains(o.key.as_str()))
        .map(|o| o.key.clone())
        .collect();
    objects
        .into_iter()
        .filter(|o| !markers.contains(&o.key))
        .collect()
}

fn parse_path(key: &str) -> Result<Path> {
    Path::parse(key)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("invalid object key: {e}")).with_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            etag: None,
        }
    }

    #[test]
    fn folder_markers_with_children_are_left_out() {
        let listed = vec![
            obj("p/a", 0),
            obj("p/a/x", 3),
            obj("p/b", 0),
            obj("p/c", 5),
            obj("p/c.d", 1),
        ];
        let kept: Vec<_> = drop_directory_markers(listed)
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(kept, ["p/a/x", "p/b", "p/c", "p/c.d"]);
    }
}
