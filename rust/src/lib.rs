//! ursa's transfer engine: concurrent, ranged, verified downloads from S3-compatible
//! stores and the local filesystem to local disk. Plain Rust; the Python bindings live
//! behind the `python` feature in `python/`.

pub mod checksum;
pub mod error;
pub mod fetch;
pub mod journal;
pub mod keypath;
pub mod listing;
pub mod md5sum;
pub mod parts;
pub mod read;
pub mod records;
pub mod retry;
pub mod runtime;
pub mod store;
pub mod tempname;
pub mod transfer;
pub mod verify;
pub mod window;
pub mod writer;

#[cfg(feature = "python")]
mod python;
