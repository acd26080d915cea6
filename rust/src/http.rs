//! One presigned request each — GET a range, HEAD for a stored checksum, PUT with one —
//! on the engine's own HTTP client, so it sees every status, header and byte itself.
//! Presigned URLs carry credentials: every error is built without its URL.

use std::ops::Range;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::{HeaderName, HeaderValue, SignedUrlOptions, Signer};
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_MATCH, RANGE, RETRY_AFTER};
use reqwest::Method;

use crate::error::{from_object_store, Error, ErrorKind, Result};
use crate::retry::{is_transient_status, parse_retry_after};
use crate::store::Body;

const CHECKSUM_MODE: HeaderName = HeaderName::from_static("x-amz-checksum-mode");
const CHECKSUM_CRC32: HeaderName = HeaderName::from_static("x-amz-checksum-crc32");

/// The HTTP client for object bodies: no whole-request timeout (a long healthy transfer
/// must not fail; stalls are caught by the idle-read timeout), many pooled connections.
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client> {
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

/// A request by a URL valid for an hour, with `headers` signed into it and sent, and
/// pinned to `etag` when there is one.
async fn presigned(
    http: &reqwest::Client,
    s3: &AmazonS3,
    method: Method,
    path: &Path,
    key: &str,
    headers: Vec<(HeaderName, HeaderValue)>,
    etag: Option<&str>,
) -> Result<reqwest::RequestBuilder> {
    let options = headers
        .iter()
        .fold(SignedUrlOptions::default(), |o, (name, value)| {
            o.with_signed_header(name.clone(), value.clone())
        });
    let url = s3
        .signed_url_opts(method.clone(), path, Duration::from_secs(3600), &options)
        .await
        .map_err(|e| from_object_store(e, key))?;
    let mut request = http.request(method, url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(etag) = etag {
        request = request.header(IF_MATCH, etag);
    }
    Ok(request)
}

fn checksum_mode() -> (HeaderName, HeaderValue) {
    (CHECKSUM_MODE, HeaderValue::from_static("ENABLED"))
}

/// Start a GET of `range` of an object of `total` bytes, pinned to `etag`. A request for
/// the whole object goes without Range and asks for the store's full-object checksum.
pub(crate) async fn get(
    http: &reqwest::Client,
    s3: &AmazonS3,
    path: &Path,
    key: &str,
    range: Range<u64>,
    total: u64,
    etag: Option<&str>,
) -> Result<Body> {
    let whole = range.start == 0 && range.end == total;
    let signed = if whole { vec![checksum_mode()] } else { vec![] };
    let mut request = presigned(http, s3, Method::GET, path, key, signed, etag).await?;
    if !whole {
        request = request.header(RANGE, format!("bytes={}-{}", range.start, range.end - 1));
    }
    let response = request.send().await.map_err(|e| transport(e, key))?;
    let status = response.status().as_u16();
    if !matches!(status, 200 | 206) {
        return Err(status_error(response, key).await);
    }
    let headers = response.headers();
    check_etag(headers, etag, key)?;
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
    let crc32 = if status == 200 {
        stored_crc32(headers)
    } else {
        None
    };
    let owned_key = key.to_string();
    let stream = response
        .bytes_stream()
        .map_err(move |e| transport(e, &owned_key))
        .boxed();
    Ok(Body { stream, skip, crc32 })
}

/// The object's full-object CRC32, if the store keeps one (HEAD, pinned to `etag`).
pub(crate) async fn head_crc32(
    http: &reqwest::Client,
    s3: &AmazonS3,
    path: &Path,
    key: &str,
    etag: Option<&str>,
) -> Result<Option<u32>> {
    let request = presigned(http, s3, Method::HEAD, path, key, vec![checksum_mode()], etag).await?;
    let response = request.send().await.map_err(|e| transport(e, key))?;
    if response.status().as_u16() != 200 {
        return Err(status_error(response, key).await);
    }
    check_etag(response.headers(), etag, key)?;
    Ok(stored_crc32(response.headers()))
}

/// PUT `data`; with `checksum`, its CRC32 goes along (signed) for the store to keep.
pub(crate) async fn put(
    http: &reqwest::Client,
    s3: &AmazonS3,
    path: &Path,
    key: &str,
    data: Bytes,
    checksum: bool,
) -> Result<()> {
    let mut headers = vec![];
    if checksum {
        let crc = base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(&data).to_be_bytes());
        let value = HeaderValue::from_str(&crc).expect("base64 is a valid header value");
        headers.push((CHECKSUM_CRC32, value));
    }
    let request = presigned(http, s3, Method::PUT, path, key, headers, None).await?;
    let response = request.body(data).send().await.map_err(|e| transport(e, key))?;
    if response.status().is_success() {
        return Ok(());
    }
    Err(status_error(response, key).await)
}

/// A full-object CRC32 header. Composite checksums of multipart uploads (`…-N`) are
/// not the CRC32 of the bytes and are not taken.
fn stored_crc32(headers: &HeaderMap) -> Option<u32> {
    decode_crc32(headers.get(CHECKSUM_CRC32)?.to_str().ok()?)
}

fn decode_crc32(b64: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn unquote(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn check_etag(headers: &HeaderMap, want: Option<&str>, key: &str) -> Result<()> {
    match (want, headers.get(ETAG).and_then(|v| v.to_str().ok())) {
        (Some(want), Some(got)) if unquote(want) != unquote(got) => Err(changed(key)),
        _ => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_full_object_crc32_only() {
        let mut headers = HeaderMap::new();
        headers.insert(CHECKSUM_CRC32, HeaderValue::from_static("NhCmhg=="));
        assert_eq!(stored_crc32(&headers), Some(0x3610a686));
        headers.insert(CHECKSUM_CRC32, HeaderValue::from_static("NhCmhg==-3"));
        assert_eq!(stored_crc32(&headers), None);
    }

    #[test]
    fn finds_s3_error_codes() {
        let body = "<?xml version=\"1.0\"?><Error><Code>ExpiredToken</Code><Message>x</Message></Error>";
        assert_eq!(s3_error_code(body).as_deref(), Some("ExpiredToken"));
        assert_eq!(s3_error_code("nothing"), None);
    }
}
