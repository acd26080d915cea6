//! A small S3-like HTTP server in the test process: it serves GET (with Range) and HEAD of
//! objects held in memory, honours If-Match like S3, records every request, and breaks
//! chosen requests in scripted ways. The engine's behaviour under faults is tested against
//! it without Python or an external server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ursa::store::{Store, StoreConfig};

pub const BUCKET: &str = "b";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and an S3 error body. (Faults break GETs only.)
    Status(u16),
    /// Flip one bit of the body byte at this offset (of the bytes sent).
    FlipByte(usize),
    /// Send the head, then nothing, until the client goes away.
    Stall,
    /// Send the head, wait this many milliseconds, then the body (a slow link).
    DelayMs(u64),
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub key: String,
    pub kind: FaultKind,
    /// How many matching requests to break (the first ones).
    pub times: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub key: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, (Vec<u8>, String)>,
    faults: Vec<Fault>,
    requests: Vec<Request>,
    /// Per key: GETs being answered now, and the most there ever were at once.
    in_flight: HashMap<String, (usize, usize)>,
}

pub struct Server {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        Server { endpoint, state }
    }

    /// Store `data` as `key`; its ETag is a quoted MD5 hex digest, as a single PUT's is.
    pub fn put(&self, key: &str, data: Vec<u8>) -> String {
        let etag = format!("\"{}\"", md5_hex(&data));
        let mut state = self.state.lock().unwrap();
        state.objects.insert(key.to_string(), (data, etag.clone()));
        etag
    }

    pub fn break_requests(&self, key: &str, kind: FaultKind, times: usize) {
        let fault = Fault {
            key: key.to_string(),
            kind,
            times,
        };
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The most GETs of `key` that were ever being answered at once.
    pub fn most_at_once(&self, key: &str) -> usize {
        self.state.lock().unwrap().in_flight.get(key).map_or(0, |c| c.1)
    }

    pub fn store(&self) -> Arc<Store> {
        let config = StoreConfig::S3 {
            bucket: BUCKET.into(),
            endpoint: Some(self.endpoint.clone()),
            region: "auto".into(),
            allow_http: true,
            access_key_id: "test-key".into(),
            secret_access_key: "test-secret".into(),
            label: "the test server".into(),
        };
        Arc::new(Store::new(&config).unwrap())
    }
}

fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut start = lines.next().unwrap_or("").split(' ');
    let method = start.next().unwrap_or("").to_string();
    let path = start.next().unwrap_or("").to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let key = path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches(&format!("/{BUCKET}/"))
        .to_string();
    let range = headers.get("range").cloned();
    let (object, fault) = {
        let mut state = state.lock().unwrap();
        state.requests.push(Request {
            method: method.clone(),
            key: key.clone(),
            range: range.clone(),
        });
        let fault = state
            .faults
            .iter_mut()
            .find(|f| method == "GET" && f.key == key && f.times > 0)
            .map(|f| {
                f.times -= 1;
                f.kind
            });
        (state.objects.get(&key).cloned(), fault)
    };
    let answer = |status: u16, code: &str| {
        let body = format!("<Error><Code>{code}</Code></Error>");
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if let Some(FaultKind::Status(status)) = fault {
        let _ = socket.write_all(answer(status, "Injected").as_bytes()).await;
        return;
    }
    let Some((data, etag)) = object else {
        let _ = socket.write_all(answer(404, "NoSuchKey").as_bytes()).await;
        return;
    };
    if headers.get("if-match").is_some_and(|want| want != &etag) {
        let _ = socket
            .write_all(answer(412, "PreconditionFailed").as_bytes())
            .await;
        return;
    }
    let (status, body_range) = match range.as_deref().and_then(parse_range) {
        Some((a, b)) => (206, a..(b + 1).min(data.len())),
        None => (200, 0..data.len()),
    };
    let mut response = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n",
        body_range.len()
    );
    if status == 206 {
        let (a, b) = (body_range.start, body_range.end - 1);
        response.push_str(&format!("Content-Range: bytes {a}-{b}/{}\r\n", data.len()));
    }
    response.push_str("\r\n");
    if socket.write_all(response.as_bytes()).await.is_err() || method == "HEAD" {
        return;
    }
    let mut body = data[body_range].to_vec();
    let count = |change: isize| {
        let mut state = state.lock().unwrap();
        let c = state.in_flight.entry(key.clone()).or_default();
        c.0 = c.0.saturating_add_signed(change);
        c.1 = c.1.max(c.0);
    };
    count(1);
    match fault {
        Some(FaultKind::FlipByte(at)) if at < body.len() => body[at] ^= 1,
        Some(FaultKind::Stall) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Some(FaultKind::DelayMs(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        _ => {}
    }
    let _ = socket.write_all(&body).await;
    let _ = socket.shutdown().await;
    count(-1);
}

fn parse_range(value: &str) -> Option<(usize, usize)> {
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}
