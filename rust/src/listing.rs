//! Turning a download's targets into objects: prefixes listed (concurrently, in key byte
//! order) and single objects looked up, every key checked to be a safe relative path
//! before anything is planned on it.

use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::error::{Error, ErrorKind, Result};
use crate::keypath;
use crate::store::Store;

/// Listings in flight at once.
const CONCURRENT_LISTINGS: usize = 16;

/// A prefix (`/`-terminated, listed whole) or a single object's key, in `stores[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub store: usize,
    pub target: String,
    pub is_prefix: bool,
}

/// One object found: its key, the key relative to the request (a single object's is its
/// basename), its size and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub rel: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// Every request's objects, in request order.
pub async fn expand_all(stores: Vec<Arc<Store>>, requests: Vec<ListRequest>) -> Result<Vec<Vec<Listed>>> {
    stream::iter(requests)
        .map(|request| {
            let store = stores[request.store].clone();
            async move { expand(&store, &request.target, request.is_prefix).await }
        })
        .buffered(CONCURRENT_LISTINGS)
        .try_collect()
        .await
}

async fn expand(store: &Store, target: &str, is_prefix: bool) -> Result<Vec<Listed>> {
    if !is_prefix {
        let info = store.head(target).await?;
        let name = target.rsplit('/').next().unwrap_or(target).to_string();
        keypath::check_relative(&name)
            .map_err(|why| Error::new(ErrorKind::InvalidInput, why).with_key(target))?;
        return Ok(vec![Listed {
            key: info.key,
            rel: name,
            size: info.size,
            etag: info.etag,
        }]);
    }
    store
        .list(target)
        .await?
        .into_iter()
        .map(|o| {
            let rel = keypath::relative_key(target, &o.key)?.to_string();
            Ok(Listed {
                key: o.key,
                rel,
                size: o.size,
                etag: o.etag,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[tokio::test]
    async fn lists_prefixes_in_key_order_and_looks_up_single_objects() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "a", "sub/c"] {
            let path = dir.path().join("p").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, name).unwrap();
        }
        let root = dir.path().to_str().unwrap().trim_start_matches('/').to_string();
        let store = Arc::new(Store::new(&StoreConfig::Local).unwrap());
        let requests = vec![
            ListRequest {
                store: 0,
                target: format!("{root}/p/"),
                is_prefix: true,
            },
            ListRequest {
                store: 0,
                target: format!("{root}/p/sub/c"),
                is_prefix: false,
            },
        ];
        let listed = expand_all(vec![store], requests).await.unwrap();
        let rels: Vec<Vec<&str>> = listed
            .iter()
            .map(|l| l.iter().map(|o| o.rel.as_str()).collect())
            .collect();
        assert_eq!(rels, [vec!["a", "b", "sub/c"], vec!["c"]]);
        assert_eq!(listed[1][0].size, "sub/c".len() as u64);
    }
}
