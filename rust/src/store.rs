//! The object stores ursa reads: S3-compatible buckets (R2, SeaweedFS, …) and the local
//! filesystem. Listing and HEAD go through `object_store` (which owns their retries);
//! object bodies, stored checksums and uploads go through presigned requests (`http`).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use crate::error::{from_object_store, Error, ErrorKind, Result};
use crate::http;

/// Where a store is and how to reach it. The secret never appears in `Debug`.
#[derive(Clone)]
pub enum StoreConfig {
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: String,
        allow_http: bool,
        access_key_id: String,
        secret_access_key: String,
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

pub struct Store {
    inner: Arc<dyn ObjectStore>,
    s3: Option<AmazonS3>,
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

/// A response body on its way in: the bytes, how many leading bytes to drop (a server
/// that ignored Range sends the object from its start), and a full-object CRC32 if the
/// store sent one.
pub struct Body {
    pub stream: BoxStream<'static, Result<Bytes>>,
    pub skip: u64,
    pub crc32: Option<u32>,
}

/// LIST and HEAD: a few quick retries inside object_store are their only retry layer.
fn list_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

impl Store {
    pub fn new(config: &StoreConfig) -> Result<Store> {
        match config {
            StoreConfig::S3 {
                bucket,
                endpoint,
                region,
                allow_http,
                access_key_id,
                secret_access_key,
            } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http)
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key)
                    .with_retry(list_retry())
                    .with_client_options(ClientOptions::new().with_allow_http(*allow_http));
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let s3 = builder.build().map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("bad store configuration for bucket {bucket:?}: {e}"),
                    )
                })?;
                Ok(Store {
                    inner: Arc::new(s3.clone()),
                    s3: Some(s3),
                    label: format!("s3://{bucket}"),
                })
            }
            StoreConfig::Local => Ok(Store {
                inner: Arc::new(LocalFileSystem::new()),
                s3: None,
                label: "file://".into(),
            }),
        }
    }

    /// Every object under `prefix` (a `/`-terminated key prefix), in key byte order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = parse_path(prefix.trim_end_matches('/'))?;
        let mut objects: Vec<ObjectInfo> = self
            .inner
            .list(Some(&path))
            .map_ok(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
                etag: meta.e_tag,
            })
            .try_collect()
            .await
            .map_err(|e| from_object_store(e, prefix))?;
        objects.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        Ok(drop_directory_markers(objects))
    }

    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let meta = self
            .inner
            .head(&parse_path(key)?)
            .await
            .map_err(|e| from_object_store(e, key))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            etag: meta.e_tag,
        })
    }

    /// Upload `data` as `key`; with `checksum`, an S3 store is given its CRC32 to keep, as
    /// current SDKs do.
    pub async fn put(&self, http: &reqwest::Client, key: &str, data: Bytes, checksum: bool) -> Result<()> {
        let path = parse_path(key)?;
        match &self.s3 {
            Some(s3) => http::put(http, s3, &path, key, data, checksum).await,
            None => self
                .inner
                .put(&path, PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(|e| from_object_store(e, key)),
        }
    }

    /// The full-object CRC32 the store keeps for `key`, if any (local files keep none).
    pub async fn head_crc32(
        &self,
        http: &reqwest::Client,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<u32>> {
        match &self.s3 {
            Some(s3) => http::head_crc32(http, s3, &parse_path(key)?, key, etag).await,
            None => Ok(None),
        }
    }

    /// Start a GET of `range` of `key`, pinned to `etag`. `total` is the object's size,
    /// so a request for all of it goes without a Range header.
    pub async fn get(
        &self,
        http: &reqwest::Client,
        key: &str,
        range: Range<u64>,
        total: u64,
        etag: Option<&str>,
    ) -> Result<Body> {
        let path = parse_path(key)?;
        match &self.s3 {
            Some(s3) => http::get(http, s3, &path, key, range, total, etag).await,
            None => self.local_get(&path, key, range, etag).await,
        }
    }

    async fn local_get(&self, path: &Path, key: &str, range: Range<u64>, etag: Option<&str>) -> Result<Body> {
        let options = GetOptions {
            if_match: etag.map(str::to_string),
            range: (!range.is_empty()).then_some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let result = self
            .inner
            .get_opts(path, options)
            .await
            .map_err(|e| from_object_store(e, key))?;
        let key = key.to_string();
        let stream = result
            .into_stream()
            .map_err(move |e| from_object_store(e, &key))
            .boxed();
        Ok(Body {
            stream,
            skip: 0,
            crc32: None,
        })
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
