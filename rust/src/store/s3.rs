//! S3-compatible stores. Listing and HEAD go through `object_store`; the requests whose
//! every status, header and byte the engine must see — GET a range, HEAD for a stored
//! checksum, PUT with one — are built here and signed in headers (SigV4), so no
//! credential or signature ever appears in a URL. One HTTP client (and connection pool)
//! per store serves both.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody};
use object_store::path::Path;
use object_store::{ClientOptions, RetryConfig};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_RANGE, ETAG, IF_MATCH, RANGE, RETRY_AFTER,
};
use reqwest::Method;

use super::{Body, StoreConfig};
use crate::checksum::{Algorithm, Checksum};
use crate::error::{s3_error_code, Error, ErrorKind, Result};
use crate::retry::{is_transient_status, parse_retry_after};

const CHECKSUM_MODE: HeaderName = HeaderName::from_static("x-amz-checksum-mode");
const CHECKSUM_TYPE: HeaderName = HeaderName::from_static("x-amz-checksum-type");

/// A key in a URL path: every byte but the unreserved ones and `/` percent-encoded, as
/// SigV4's canonical URI wants it.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Connecting may take this long; a stalled transfer is caught by the fetch loop's
/// idle-read timeout instead of any whole-request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of one store: no whole-request timeout (a long healthy transfer must
/// not fail), many pooled connections.
fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
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

/// Hands `object_store` the store's own client, so listing shares its connection pool.
#[derive(Debug)]
struct SharedClient(reqwest::Client);

impl HttpConnector for SharedClient {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.0.clone()))
    }
}

/// LIST and HEAD: a few quick retries inside object_store are their only retry layer.
fn list_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

pub(super) struct S3 {
    listing: AmazonS3,
    credential: AwsCredential,
    region: String,
    /// `<endpoint>/<bucket>`: objects are addressed path-style.
    base_url: String,
    /// Names the store in messages (the profile and role, when the caller gave them).
    label: String,
    http: reqwest::Client,
}

impl S3 {
    pub(super) fn new(config: &StoreConfig) -> Result<S3> {
        let StoreConfig::S3 {
            bucket,
            endpoint,
            region,
            allow_http,
            access_key_id,
            secret_access_key,
            label,
        } = config
        else {
            unreachable!("an S3 store from a local configuration");
        };
        let http = client()?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_allow_http(*allow_http)
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key)
            .with_retry(list_retry())
            .with_client_options(ClientOptions::new().with_allow_http(*allow_http))
            .with_http_connector(SharedClient(http.clone()));
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let listing = builder.build().map_err(|e| {
            let msg = format!("bad store configuration for bucket {bucket:?}: {e}");
            Error::new(ErrorKind::InvalidInput, msg)
        })?;
        let endpoint = match endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        Ok(S3 {
            listing,
            credential: AwsCredential {
                key_id: access_key_id.clone(),
                secret_key: secret_access_key.clone(),
                token: None,
            },
            region: region.clone(),
            base_url: format!("{endpoint}/{bucket}"),
            label: label.clone(),
            http,
        })
    }

    pub(super) fn object_store(&self) -> &AmazonS3 {
        &self.listing
    }

    /// A request for `path` with `headers` signed in its Authorization header (SigV4,
    /// unsigned payload), pinned to `etag` when there is one. Range and If-Match go
    /// unsigned, as with any SigV4 client that leaves them out of SignedHeaders.
    fn request(
        &self,
        method: Method,
        path: &Path,
        headers: Vec<(HeaderName, HeaderValue)>,
        etag: Option<&str>,
    ) -> Result<reqwest::RequestBuilder> {
        let url = format!(
            "{}/{}",
            self.base_url,
            utf8_percent_encode(path.as_ref(), KEY_ENCODE)
        );
        let mut signed = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(HttpRequestBody::empty())
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("bad request for {path}: {e}")))?;
        signed.headers_mut().extend(headers);
        AwsAuthorizer::new(&self.credential, "s3", &self.region)
            .with_sign_payload(false)
            .try_authorize(&mut signed, None)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("signing a request: {e}")))?;
        let mut request = self.http.request(method, url).headers(signed.headers().clone());
        if let Some(etag) = etag {
            request = request.header(IF_MATCH, etag);
        }
        Ok(request)
    }

    /// Start a GET of `range` of an object of `total` bytes, pinned to `etag`. A request
    /// for the whole object goes without Range and asks for the store's full-object
    /// checksum.
    pub(super) async fn get(
        &self,
        path: &Path,
        key: &str,
        range: Range<u64>,
        total: u64,
        etag: Option<&str>,
    ) -> Result<Body> {
        let whole = range.start == 0 && range.end == total;
        let signed = if whole { vec![checksum_mode()] } else { vec![] };
        let mut request = self.request(Method::GET, path, signed, etag)?;
        if !whole {
            request = request.header(RANGE, format!("bytes={}-{}", range.start, range.end - 1));
        }
        let response = request.send().await.map_err(|e| transport(e, key))?;
        read_body(response, key, range, etag, &self.label).await
    }

    /// The object's full-object checksum, if the store keeps one (HEAD, pinned to `etag`).
    pub(super) async fn head_checksum(
        &self,
        path: &Path,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<Checksum>> {
        let request = self.request(Method::HEAD, path, vec![checksum_mode()], etag)?;
        let response = request.send().await.map_err(|e| transport(e, key))?;
        if response.status().as_u16() != 200 {
            return Err(status_error(response, key, &self.label).await);
        }
        check_etag(response.headers(), etag, key)?;
        Ok(stored_checksum(response.headers()))
    }

    /// PUT `data`; with `checksum`, its CRC32 goes along (signed) for the store to keep.
    pub(super) async fn put(&self, path: &Path, key: &str, data: Bytes, checksum: bool) -> Result<()> {
        let mut headers = vec![];
        if checksum {
            let crc = Checksum::of(Algorithm::Crc32, &data).encode();
            let value = HeaderValue::from_str(&crc).expect("base64 is a valid header value");
            headers.push((HeaderName::from_static(Algorithm::Crc32.header()), value));
        }
        let request = self.request(Method::PUT, path, headers, None)?;
        let response = request.body(data).send().await.map_err(|e| transport(e, key))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(response, key, &self.label).await)
    }
}

fn checksum_mode() -> (HeaderName, HeaderValue) {
    (CHECKSUM_MODE, HeaderValue::from_static("ENABLED"))
}

/// Check a GET's answer and hand on its body. A server that ignored Range (200 for a
/// ranged request) sends the object from its start: those leading bytes are skipped.
async fn read_body(
    response: reqwest::Response,
    key: &str,
    range: Range<u64>,
    etag: Option<&str>,
    store: &str,
) -> Result<Body> {
    let status = response.status().as_u16();
    if !matches!(status, 200 | 206) {
        return Err(status_error(response, key, store).await);
    }
    let headers = response.headers();
    check_etag(headers, etag, key)?;
    let skip = if status == 200 {
        range.start
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
    let checksum = if status == 200 {
        stored_checksum(headers)
    } else {
        None
    };
    let owned_key = key.to_string();
    let stream = response
        .bytes_stream()
        .map_err(move |e| transport(e, &owned_key))
        .boxed();
    Ok(Body {
        stream,
        skip,
        checksum,
    })
}

/// A full-object checksum header (CRC64NVME, CRC32C or CRC32). Composite checksums of
/// multipart uploads (`…-N`, type COMPOSITE) are not the bytes' CRC and are not taken.
fn stored_checksum(headers: &HeaderMap) -> Option<Checksum> {
    let composite = headers
        .get(CHECKSUM_TYPE)
        .is_some_and(|t| t.as_bytes().eq_ignore_ascii_case(b"COMPOSITE"));
    if composite {
        return None;
    }
    Algorithm::ALL.into_iter().find_map(|algorithm| {
        let value = headers.get(algorithm.header())?.to_str().ok()?;
        algorithm.decode(value)
    })
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

/// A transport failure, described without its URL.
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

async fn status_error(response: reqwest::Response, key: &str, store: &str) -> Error {
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
        401 | 403 => return Error::access_denied(store, &format!("HTTP {status}{code}")).with_key(key),
        _ => (ErrorKind::Store, "the store refused the request"),
    };
    Error::new(kind, format!("{what} (HTTP {status}{code})")).with_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_full_object_checksums_only() {
        let crc32 = HeaderName::from_static("x-amz-checksum-crc32");
        let mut headers = HeaderMap::new();
        headers.insert(crc32.clone(), HeaderValue::from_static("NhCmhg=="));
        let want = Checksum {
            algorithm: Algorithm::Crc32,
            value: 0x3610a686,
        };
        assert_eq!(stored_checksum(&headers), Some(want));
        headers.insert(crc32, HeaderValue::from_static("NhCmhg==-3"));
        assert_eq!(stored_checksum(&headers), None);
        headers.insert(
            "x-amz-checksum-crc64nvme",
            HeaderValue::from_static("Fg5AiE8Eaws="),
        );
        assert_eq!(stored_checksum(&headers).unwrap().algorithm, Algorithm::Crc64Nvme);
        headers.insert(CHECKSUM_TYPE, HeaderValue::from_static("COMPOSITE"));
        assert_eq!(stored_checksum(&headers), None);
    }

    #[test]
    fn finds_s3_error_codes() {
        let body = "<?xml version=\"1.0\"?><Error><Code>ExpiredToken</Code><Message>x</Message></Error>";
        assert_eq!(s3_error_code(body).as_deref(), Some("ExpiredToken"));
        assert_eq!(s3_error_code("nothing"), None);
    }
}
