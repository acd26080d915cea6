//! One error type for the whole engine. Errors cross to Python as data: a `kind`, a
//! message that never contains credentials or signed URLs, the key involved and how many
//! requests were made for it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input found before any byte moved (a hostile key, a bad option).
    InvalidInput,
    /// A final path exists and overwriting was not allowed.
    FileExists,
    /// The object or prefix does not exist.
    NotFound,
    /// 401/403: wrong, expired or missing credentials, or no permission.
    PermissionDenied,
    /// The object changed since it was planned (If-Match failed, ETag changed).
    Changed,
    /// The bytes on disk do not match the size or checksum the store gave.
    Integrity,
    /// A retryable transport fault (5xx, 429, 408, reset, truncation, stall).
    Transient,
    /// Any other non-transient store failure (other 4xx, protocol errors).
    Store,
    /// A local filesystem failure (disk full, permission, not a directory).
    Io,
    /// The download was cancelled (Ctrl+C or an explicit cancel).
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::FileExists => "file_exists",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Changed => "changed",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Transient => "transient",
            ErrorKind::Store => "store",
            ErrorKind::Io => "io",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub key: Option<String>,
    /// Requests made for the failing object or part (1 when it was not retried).
    pub attempts: u32,
    /// When retries were exhausted: the last transient fault, as the error's cause.
    pub cause: Option<Box<Error>>,
    /// A transient fault's server-requested delay (Retry-After).
    pub retry_after: Option<std::time::Duration>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            key: None,
            attempts: 1,
            cause: None,
            retry_after: None,
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn io(context: &str, err: &std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::AlreadyExists => ErrorKind::FileExists,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{context}: {err}"))
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// A bug: a task panicked while working on `key`. Reported like any failure (the
    /// download stops and cleans up), never as a panic across to the caller.
    pub fn panicked(payload: &(dyn std::any::Any + Send), key: &str) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::new(
            ErrorKind::Store,
            format!("internal error in ursa's engine: {what}"),
        )
        .with_key(key)
    }

    /// 401/403 from `store` (a label that names the profile and role when it has them),
    /// with `detail` the status and the store's error code, never its raw answer.
    pub fn access_denied(store: &str, detail: &str) -> Self {
        let message = format!(
            "access denied to {store}: the credentials are wrong or expired, or lack permission ({detail})"
        );
        Error::new(ErrorKind::PermissionDenied, message)
    }

    /// Retries ran out: a non-transient error that keeps the last fault as its cause (an
    /// integrity failure stays one: the bytes never matched).
    pub fn exhausted(last: Error, attempts: u32) -> Self {
        let key = last.key.clone();
        Error {
            kind: match last.kind {
                ErrorKind::Integrity => ErrorKind::Integrity,
                _ => ErrorKind::Store,
            },
            message: format!("gave up after {attempts} attempts: {}", last.message),
            key,
            attempts,
            cause: Some(Box::new(last)),
            retry_after: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{} (key {key:?})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// Classify an `object_store` error (listing, HEAD, local reads) of `store`. `object_store`
/// owns the retries of those calls, so what reaches us here is final. Its messages may
/// name the endpoint but never credentials; we keep the first line, which names the fault.
pub fn from_object_store(err: object_store::Error, key: &str, store: &str) -> Error {
    use object_store::Error as E;
    let kind = match &err {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::Precondition { .. } | E::NotModified { .. } => ErrorKind::Changed,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        E::InvalidPath { .. } => ErrorKind::InvalidInput,
        _ => ErrorKind::Store,
    };
    let text = err.to_string();
    let message = match kind {
        ErrorKind::InvalidInput => format!("unsafe object key: {}", first_line(&text)),
        ErrorKind::PermissionDenied => {
            let status = if matches!(err, E::Unauthenticated { .. }) {
                401
            } else {
                403
            };
            let code = s3_error_code(&text).map(|c| format!(" {c}")).unwrap_or_default();
            return Error::access_denied(store, &format!("HTTP {status}{code}")).with_key(key);
        }
        _ => match cause(&err) {
            Cause::Unreachable(why) => {
                format!("cannot reach {store} (check its endpoint and the network): {why}")
            }
            Cause::Other(why) if !text.contains(&why) => format!("{}: {why}", first_line(&text)),
            Cause::Other(_) | Cause::None => first_line(&text),
        },
    };
    Error::new(kind, message).with_key(key)
}

enum Cause {
    /// The connection itself failed (refused, no route, DNS): the deepest reason.
    Unreachable(String),
    Other(String),
    None,
}

/// The deepest reason in an error's chain, and whether connecting is what failed.
fn cause(err: &(dyn std::error::Error + 'static)) -> Cause {
    let mut unreachable = false;
    let mut deepest = None;
    let mut source = err.source();
    while let Some(inner) = source {
        if let Some(http) = inner.downcast_ref::<object_store::client::HttpError>() {
            unreachable |= http.kind() == object_store::client::HttpErrorKind::Connect;
        }
        deepest = Some(first_line(&inner.to_string()));
        source = inner.source();
    }
    match deepest {
        Some(why) if unreachable => Cause::Unreachable(why),
        Some(why) => Cause::Other(why),
        None => Cause::None,
    }
}

/// The `<Code>` of an S3 error answer, if it has a plain one.
pub(crate) fn s3_error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = start + body[start..].find("</Code>")?;
    let code = &body[start..end];
    code.chars()
        .all(|c| c.is_ascii_alphanumeric())
        .then(|| code.to_string())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
