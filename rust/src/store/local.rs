//! The local filesystem as a store (`file://` URIs), through `object_store`'s own.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use super::Body;
use crate::error::{from_object_store, Result};

pub(super) async fn get(
    local: &LocalFileSystem,
    path: &Path,
    key: &str,
    range: Range<u64>,
    etag: Option<&str>,
) -> Result<Body> {
    let options = GetOptions {
        if_match: etag.map(str::to_string),
        range: (!range.is_empty()).then_some(GetRange::Bounded(range)),
        ..Default::default()
    };
    let result = local
        .get_opts(path, options)
        .await
        .map_err(|e| from_object_store(e, key, "file://"))?;
    let key = key.to_string();
    let stream = result
        .into_stream()
        .map_err(move |e| from_object_store(e, &key, "file://"))
        .boxed();
    Ok(Body {
        stream,
        skip: 0,
        checksum: None,
    })
}

pub(super) async fn put(local: &LocalFileSystem, path: &Path, key: &str, data: Bytes) -> Result<()> {
    local
        .put(path, PutPayload::from(data))
        .await
        .map(|_| ())
        .map_err(|e| from_object_store(e, key, "file://"))
}
