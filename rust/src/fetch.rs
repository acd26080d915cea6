//! Fetching bytes: one GET of a range (status, ETag and Range checks), and the resumable
//! loop that writes a range into its place in the temporary file under a retry budget.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures::stream::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_MATCH, RANGE, RETRY_AFTER};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::retry::{is_transient_status, parse_retry_after, Budget, RetryPolicy};
use crate::store::{Body, Store, CHECKSUM_MODE};

/// Counters shared by every task of one download, read by the caller while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
}

/// The HTTP client for object bodies: no whole-request timeout (a long healthy transfer
/// must not fail; stalls are caught by the idle-read timeout), many pooled connections.
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http1_only()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("HTTP client: {}", e.without_url()),
            )
        })
}

pub(crate) async fn http_get(
    http: &reqwest::Client,
    s3: &AmazonS3,
    path: &Path,
    key: &str,
    range: Range<u64>,
    total: u64,
    etag: Option<&str>,
) -> Result<Body> {
    let whole = range.start == 0 && range.end == total;
    let url = Store::presign(s3, path, key, whole).await?;
    let mut request = http.get(url);
    request = if whole {
        request.header(CHECKSUM_MODE, "ENABLED")
    } else {
        request.header(RANGE, format!("bytes={}-{}", range.start, range.end - 1))
    };
    if let Some(etag) = etag {
        request = request.header(IF_MATCH, etag);
    }
    let response = request.send().await.map_err(|e| transport(e, key))?;
    let status = response.status().as_u16();
    if !matches!(status, 200 | 206) {
        return Err(status_error(response, key).await);
    }
    let headers = response.headers();
    if let (Some(want), Some(got)) = (etag, headers.get(ETAG).and_then(|v| v.to_str().ok())) {
        if unquote(want) != unquote(got) {
            return Err(changed(key));
        }
    }
    let skip = if status == 200 {
        range.start // the server ignored Range and sends the whole object
    } else {
        let content_range = headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expected = format!("bytes {}-{}/", range.start, range.end - 1);
        if !content_range.starts_with(&expected) {
            let msg = format!("the store answered {content_range:?} to a request for {expected}…");
            return Err(Error::new(ErrorKind::Store, msg).with_key(key));
        }
        0
    };
    let crc32 = (status == 200)
        .then(|| {
            headers
                .get("x-amz-checksum-crc32")?
                .to_str()
                .ok()
                .and_then(decode_crc32)
        })
        .flatten();
    let owned_key = key.to_string();
    let stream = response
        .bytes_stream()
        .map_err(move |e| transport(e, &owned_key))
        .boxed();
    Ok(Body { stream, skip, crc32 })
}

fn unquote(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn decode_crc32(b64: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn changed(key: &str) -> Error {
    Error::new(
        ErrorKind::Changed,
        "the object changed on the store while it was being downloaded",
    )
    .with_key(key)
}

/// A transport failure. The message is built without the URL: it is presigned.
fn transport(err: reqwest::Error, key: &str) -> Error {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::new(ErrorKind::Transient, message).with_key(key)
}

async fn status_error(response: reqwest::Response, key: &str) -> Error {
    let status = response.status().as_u16();
    if is_transient_status(status) {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut err = Error::new(ErrorKind::Transient, format!("HTTP {status}")).with_key(key);
        err.retry_after = retry_after;
        return err;
    }
    let code = tokio::time::timeout(Duration::from_secs(5), response.text())
        .await
        .ok()
        .and_then(|body| body.ok())
        .and_then(|body| s3_error_code(&body));
    let code = code.map(|c| format!(" {c}")).unwrap_or_default();
    let (kind, what) = match status {
        412 => return changed(key),
        404 => (ErrorKind::NotFound, "no such object"),
        401 | 403 => (
            ErrorKind::PermissionDenied,
            "access denied: the credentials are wrong or expired, or lack permission",
        ),
        _ => (ErrorKind::Store, "the store refused the request"),
    };
    Error::new(kind, format!("{what} (HTTP {status}{code})")).with_key(key)
}

fn s3_error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = start + body[start..].find("</Code>")?;
    let code = &body[start..end];
    code.chars()
        .all(|c| c.is_ascii_alphanumeric())
        .then(|| code.to_string())
}

/// The checksum a store gave for a whole object, checked as its bytes stream in order.
pub struct Verifier {
    md5: Option<([u8; 16], Md5)>,
    crc32: Option<(u32, crc32fast::Hasher)>,
}

impl Verifier {
    /// Single-part uploads carry their MD5 as the ETag (32 hex digits).
    pub fn for_etag(etag: Option<&str>) -> Verifier {
        let md5 = etag.and_then(md5_of_etag).map(|digest| (digest, Md5::new()));
        Verifier { md5, crc32: None }
    }

    pub fn has_checksum(&self) -> bool {
        self.md5.is_some() || self.crc32.is_some()
    }

    /// A store-sent CRC32 is as good a check and far cheaper to compute than MD5.
    fn prefer_crc32(&mut self, crc32: u32) {
        self.crc32 = Some((crc32, crc32fast::Hasher::new()));
        self.md5 = None;
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some((_, h)) = &mut self.crc32 {
            h.update(data);
        }
        if let Some((_, h)) = &mut self.md5 {
            h.update(data);
        }
    }

    /// Check the digest and reset for another pass.
    pub fn finish(&mut self, key: &str) -> Result<()> {
        let crc_ok = self
            .crc32
            .as_mut()
            .is_none_or(|(want, h)| std::mem::take(h).finalize() == *want);
        let md5_ok = self
            .md5
            .as_mut()
            .is_none_or(|(want, h)| h.finalize_reset().as_slice() == want);
        if crc_ok && md5_ok {
            return Ok(());
        }
        let msg = "the downloaded bytes do not match the checksum the store gave";
        Err(Error::new(ErrorKind::Integrity, msg).with_key(key))
    }
}

fn md5_of_etag(etag: &str) -> Option<[u8; 16]> {
    let hex = unquote(etag);
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One object's fetch context: where it comes from and the rules every request obeys.
pub struct Fetch<'a> {
    pub store: &'a Store,
    pub http: &'a reqwest::Client,
    pub key: &'a str,
    pub size: u64,
    pub etag: Option<&'a str>,
    pub policy: &'a RetryPolicy,
    pub cancel: &'a CancellationToken,
    pub progress: &'a Progress,
}

impl Fetch<'_> {
    /// Write `range` of the object into `file` at the same offsets. Transient faults are
    /// retried from the last byte written. With a verifier (whole-object fetches only),
    /// the checksum is checked at the end and a mismatch starts the object again.
    pub async fn range_to_file(
        &self,
        file: &File,
        range: Range<u64>,
        mut verifier: Option<&mut Verifier>,
    ) -> Result<()> {
        let mut budget = Budget::new(self.policy);
        let mut pos = range.start;
        loop {
            let attempt = self
                .fetch_once(file, pos..range.end, &mut pos, verifier.as_deref_mut())
                .await;
            let result = attempt.and_then(|()| match verifier.as_deref_mut() {
                Some(v) => v.finish(self.key),
                None => Ok(()),
            });
            let err = match result {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if err.kind == ErrorKind::Integrity {
                pos = range.start; // a bad checksum condemns every byte: start over
            }
            budget.after_failure(err, self.cancel).await?;
            self.progress.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn fetch_once(
        &self,
        file: &File,
        range: Range<u64>,
        pos: &mut u64,
        mut verifier: Option<&mut Verifier>,
    ) -> Result<()> {
        let idle = self.policy.idle_timeout;
        let body = tokio::time::timeout(
            idle,
            self.store
                .get(self.http, self.key, range.clone(), self.size, self.etag),
        )
        .await
        .map_err(|_| self.stalled())??;
        if let (Some(v), Some(crc)) = (verifier.as_deref_mut(), body.crc32) {
            v.prefer_crc32(crc);
        }
        let mut skip = body.skip;
        let mut stream = body.stream;
        while *pos < range.end {
            let chunk = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return Err(self.stalled()),
                Ok(None) => {
                    let msg = format!("the body ended early, at byte {} of {}", pos, range.end);
                    return Err(Error::new(ErrorKind::Transient, msg).with_key(self.key));
                }
                Ok(Some(chunk)) => chunk?,
            };
            let mut data = &chunk[..];
            let dropped = skip.min(data.len() as u64);
            data = &data[dropped as usize..];
            skip -= dropped;
            let room = (range.end - *pos).min(data.len() as u64) as usize;
            data = &data[..room];
            if data.is_empty() {
                continue;
            }
            file.write_all_at(data, *pos)
                .map_err(|e| Error::io("writing the download", &e).with_key(self.key))?;
            if let Some(v) = verifier.as_deref_mut() {
                v.update(data);
            }
            *pos += data.len() as u64;
            self.progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn stalled(&self) -> Error {
        let secs = self.policy.idle_timeout.as_secs_f64();
        Error::new(ErrorKind::Transient, format!("no data for {secs:.1} s (stalled)")).with_key(self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_md5_etags_only() {
        let md5 = "\"9e107d9d372bb6826bd81d3542a419d6\"";
        assert!(md5_of_etag(md5).is_some());
        assert!(md5_of_etag("\"9e107d9d372bb6826bd81d3542a419d6-3\"").is_none());
        assert!(md5_of_etag("\"zz107d9d372bb6826bd81d3542a419d6\"").is_none());
    }

    #[test]
    fn verifier_accepts_the_right_bytes_and_rejects_a_flipped_one() {
        let data = b"The quick brown fox jumps over the lazy dog";
        let mut v = Verifier::for_etag(Some("\"9e107d9d372bb6826bd81d3542a419d6\""));
        v.update(&data[..10]);
        v.update(&data[10..]);
        assert!(v.finish("k").is_ok());
        let mut flipped = data.to_vec();
        flipped[3] ^= 1;
        v.update(&flipped);
        assert_eq!(v.finish("k").unwrap_err().kind, ErrorKind::Integrity);
    }

    #[test]
    fn crc32_replaces_md5_when_the_store_sends_it() {
        let data = b"hello";
        let mut v = Verifier::for_etag(Some("\"00000000000000000000000000000000\""));
        v.prefer_crc32(crc32fast::hash(data));
        v.update(data);
        assert!(v.finish("k").is_ok());
        assert_eq!(decode_crc32("NhCmhg=="), Some(0x3610a686));
    }

    #[test]
    fn finds_s3_error_codes() {
        let body = "<?xml version=\"1.0\"?><Error><Code>ExpiredToken</Code><Message>x</Message></Error>";
        assert_eq!(s3_error_code(body).as_deref(), Some("ExpiredToken"));
        assert_eq!(s3_error_code("nothing"), None);
    }
}
