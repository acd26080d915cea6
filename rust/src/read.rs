//! Reading byte ranges of objects into memory, for clips decoded in place: requests are
//! coalesced per object, fetched concurrently with the same retry owner, ETag pin and
//! checksum rules as downloads, and handed back whole. A reader's byte budget bounds what
//! is fetched but not yet taken, so a caller reading ahead cannot run away with memory.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc as queue, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Buffer, Fetch, Progress};
use crate::parts::split;
use crate::retry::RetryPolicy;
use crate::store::{ObjectInfo, Store};
use crate::verify::{Verifier, Verify};

/// Bytes `range` of object `key` (listed with `size` and `etag`, which pins every GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub range: Range<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// GETs in flight at once, across every read of one reader.
    pub max_concurrency: usize,
    /// Longer spans are fetched as parallel GETs of this size.
    pub part_size: u64,
    /// Ranges of one object at most this far apart are fetched by one GET.
    pub coalesce_gap: u64,
    /// Bytes fetched but not yet taken, across every read of one reader. A read larger
    /// than this waits for the whole budget and then runs alone.
    pub max_inflight_bytes: u64,
    pub retry: RetryPolicy,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_concurrency: 32,
            part_size: 8 << 20,
            coalesce_gap: 1 << 20,
            max_inflight_bytes: 256 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// The byte budget counts in KiB, so a u32 of permits spans any sensible budget.
const BUDGET_UNIT: u64 = 1024;

/// One store's ranged reads, sharing one HTTP client, one request limit and one budget.
pub struct Reader {
    store: Arc<Store>,
    options: ReadOptions,
    requests: Arc<Semaphore>,
    admission: Admission,
    pub progress: Arc<Progress>,
}

/// Hands out the byte budget to reads in the order they were started (a read ahead
/// never overtakes the read the caller will take first), from one task per reader.
struct Admission {
    queue: queue::UnboundedSender<(u32, oneshot::Sender<OwnedSemaphorePermit>)>,
    units: u32,
}

impl Admission {
    fn new(runtime: &tokio::runtime::Runtime, max_bytes: u64) -> Admission {
        let units = max_bytes.div_ceil(BUDGET_UNIT).clamp(1, u64::from(u32::MAX)) as u32;
        let budget = Arc::new(Semaphore::new(units as usize));
        let (tx, mut rx) = queue::unbounded_channel::<(u32, oneshot::Sender<_>)>();
        runtime.spawn(async move {
            while let Some((want, reply)) = rx.recv().await {
                let permit = budget
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .expect("budget closed");
                let _ = reply.send(permit); // a cancelled read's share goes straight back
            }
        });
        Admission { queue: tx, units }
    }

    /// Queue for `bytes` of the budget (all of it, for a read larger than the budget).
    fn ask(&self, bytes: u64) -> Option<oneshot::Receiver<OwnedSemaphorePermit>> {
        if bytes == 0 {
            return None;
        }
        let want = bytes.div_ceil(BUDGET_UNIT).min(u64::from(self.units)) as u32;
        let (reply, permit) = oneshot::channel();
        self.queue.send((want, reply)).ok()?;
        Some(permit)
    }
}

/// A GET of `range` of request `first`'s object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    first: usize,
    range: Range<u64>,
}

/// Where a slice of a request's bytes lies: `len` bytes of span `span` from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    span: usize,
    offset: usize,
    len: usize,
}

/// The bytes of every request of one read, in request order.
#[derive(Debug)]
pub struct ReadResult {
    spans: Vec<Vec<u8>>,
    pieces: Vec<Vec<Piece>>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl ReadResult {
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Request `i`'s bytes, as consecutive slices (one unless its range was split).
    pub fn slices(&self, i: usize) -> impl Iterator<Item = &[u8]> {
        self.pieces[i]
            .iter()
            .map(|p| &self.spans[p.span][p.offset..p.offset + p.len])
    }

    pub fn size(&self, i: usize) -> usize {
        self.pieces[i].iter().map(|p| p.len).sum()
    }

    pub fn to_vec(&self, i: usize) -> Vec<u8> {
        self.slices(i).flatten().copied().collect()
    }
}

/// A read on its way. `wait` hands the result out once.
pub struct PendingRead {
    result: Mutex<mpsc::Receiver<Result<ReadResult>>>,
    finished: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl PendingRead {
    /// The result, if it arrives within `timeout`.
    pub fn wait(&self, timeout: Duration) -> Option<Result<ReadResult>> {
        let rx = self.result.lock().unwrap_or_else(|p| p.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(result) => Some(result),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(Error::new(
                ErrorKind::InvalidInput,
                "this read's result was already taken (or its task stopped)",
            ))),
        }
    }

    /// True once the result is ready (or taken).
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stop every request of this read; `wait` then gives `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for PendingRead {
    fn drop(&mut self) {
        self.cancel.cancel(); // nobody will take the bytes: stop fetching them
    }
}

impl Reader {
    pub fn new(runtime: &tokio::runtime::Runtime, store: Arc<Store>, options: ReadOptions) -> Result<Reader> {
        Ok(Reader {
            store,
            requests: Arc::new(Semaphore::new(options.max_concurrency.max(1))),
            admission: Admission::new(runtime, options.max_inflight_bytes),
            options,
            progress: Arc::new(Progress::default()),
        })
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.store.list(prefix).await
    }

    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        self.store.head(key).await
    }

    /// Start reading `requests` on `runtime`. Bad ranges are refused here, before any
    /// byte moves.
    pub fn start(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Runtime,
        requests: Vec<ReadRequest>,
    ) -> Result<PendingRead> {
        for r in &requests {
            if r.range.start > r.range.end || r.range.end > r.size {
                let msg = format!(
                    "byte range {}..{} is not within the object's {} bytes",
                    r.range.start, r.range.end, r.size
                );
                return Err(Error::new(ErrorKind::InvalidInput, msg).with_key(&r.key));
            }
        }
        let (spans, pieces) = plan(&requests, &self.options);
        let first_key = requests.first().map(|r| r.key.clone()).unwrap_or_default();
        let budget = self
            .admission
            .ask(spans.iter().map(|s| s.range.end - s.range.start).sum());
        let (tx, rx) = mpsc::channel();
        let cancel = CancellationToken::new();
        let finished = Arc::new(AtomicBool::new(false));
        let (reader, token, done) = (self.clone(), cancel.clone(), finished.clone());
        runtime.spawn(async move {
            let work = async {
                let budget = match budget {
                    Some(permit) => Some(permit.await.map_err(|_| cancelled())?),
                    None => None,
                };
                let spans = reader.fetch_spans(&requests, spans, &token).await?;
                Ok(ReadResult {
                    spans,
                    pieces,
                    _budget: budget,
                })
            };
            let work = std::panic::AssertUnwindSafe(work).catch_unwind();
            let result = tokio::select! {
                biased; // a cancelled read does no more work, even if its turn came too
                _ = token.cancelled() => Err(cancelled()),
                result = work => result.unwrap_or_else(|panic| Err(Error::panicked(panic.as_ref(), &first_key))),
            };
            done.store(true, Ordering::Release);
            let _ = tx.send(result);
        });
        Ok(PendingRead {
            result: Mutex::new(rx),
            finished,
            cancel,
        })
    }

    async fn fetch_spans(
        &self,
        requests: &[ReadRequest],
        spans: Vec<Span>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<u8>>> {
        stream::iter(spans)
            .map(|span| self.fetch_span(&requests[span.first], span.range, cancel))
            .buffered(self.options.max_concurrency.max(1))
            .try_collect()
            .await
    }

    async fn fetch_span(
        &self,
        request: &ReadRequest,
        range: Range<u64>,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>> {
        let _slot = self.requests.acquire().await.expect("request limit closed");
        if cancel.is_cancelled() {
            return Err(cancelled()); // cancelled while waiting: the slot goes to the next read
        }
        let fetch = Fetch {
            store: &self.store,
            key: &request.key,
            size: request.size,
            etag: request.etag.as_deref(),
            policy: &self.options.retry,
            cancel,
            progress: &self.progress,
        };
        // A whole object is checked against the store's checksum, as a download would be.
        let mut verifier = if range.start == 0 && range.end == request.size {
            Verifier::for_object(fetch.etag, Verify::Auto)
        } else {
            Verifier::for_part(None)
        };
        let mut buffer = Buffer::for_range(&range);
        if !range.is_empty() {
            fetch.range_into(&mut buffer, range, &mut verifier).await?;
        }
        Ok(buffer.bytes)
    }
}

fn cancelled() -> Error {
    Error::new(ErrorKind::Cancelled, "cancelled")
}

/// The GETs that serve `requests`: each object's ranges sorted, those within the
/// coalescing gap merged, long spans split into parts; and where each request's bytes
/// lie in them.
fn plan(requests: &[ReadRequest], options: &ReadOptions) -> (Vec<Span>, Vec<Vec<Piece>>) {
    let mut order: Vec<usize> = (0..requests.len())
        .filter(|&i| !requests[i].range.is_empty())
        .collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&requests[a], &requests[b]);
        (ra.key.as_bytes(), ra.range.start).cmp(&(rb.key.as_bytes(), rb.range.start))
    });
    // Merge: a span keeps growing while the next range of the same object starts within
    // the gap of its end.
    let mut merged: Vec<Span> = Vec::new();
    for &i in &order {
        let r = &requests[i];
        match merged.last_mut() {
            Some(last)
                if requests[last.first].key == r.key
                    && r.range.start <= last.range.end.saturating_add(options.coalesce_gap) =>
            {
                last.range.end = last.range.end.max(r.range.end);
            }
            _ => merged.push(Span {
                first: i,
                range: r.range.clone(),
            }),
        }
    }
    let spans: Vec<Span> = merged
        .into_iter()
        .flat_map(|span| {
            let len = span.range.end - span.range.start;
            split(len, options.part_size).into_iter().map(move |part| Span {
                first: span.first,
                range: span.range.start + part.start..span.range.start + part.end,
            })
        })
        .collect();
    // Spans are sorted by (key, start) and disjoint: a request's pieces are the run of
    // spans from the first that ends after its start.
    let position = |s: &Span| (requests[s.first].key.as_bytes(), s.range.end);
    let pieces = requests
        .iter()
        .map(|r| {
            if r.range.is_empty() {
                return Vec::new();
            }
            let first = spans.partition_point(|s| position(s) <= (r.key.as_bytes(), r.range.start));
            spans[first..]
                .iter()
                .zip(first..)
                .take_while(|(s, _)| requests[s.first].key == r.key && s.range.start < r.range.end)
                .map(|(s, index)| {
                    let from = r.range.start.max(s.range.start);
                    let to = r.range.end.min(s.range.end);
                    Piece {
                        span: index,
                        offset: (from - s.range.start) as usize,
                        len: (to - from) as usize,
                    }
                })
                .collect()
        })
        .collect();
    (spans, pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn req(key: &str, range: Range<u64>) -> ReadRequest {
        ReadRequest {
            key: key.into(),
            size: 1 << 30,
            etag: None,
            range,
        }
    }

    fn options(gap: u64, part: u64) -> ReadOptions {
        ReadOptions {
            coalesce_gap: gap,
            part_size: part,
            ..Default::default()
        }
    }

    #[test]
    fn nearby_ranges_of_one_object_share_a_get() {
        let requests = [
            req("a", 100..200),
            req("b", 0..10),
            req("a", 0..50),
            req("a", 5_000..5_010),
        ];
        let (spans, pieces) = plan(&requests, &options(60, 1 << 20));
        let ranges: Vec<_> = spans
            .iter()
            .map(|s| (requests[s.first].key.as_str(), s.range.clone()))
            .collect();
        assert_eq!(ranges, [("a", 0..200), ("a", 5_000..5_010), ("b", 0..10)]);
        assert_eq!(
            pieces[0],
            [Piece {
                span: 0,
                offset: 100,
                len: 100
            }]
        );
        assert_eq!(
            pieces[2],
            [Piece {
                span: 0,
                offset: 0,
                len: 50
            }]
        );
        assert_eq!(
            pieces[3],
            [Piece {
                span: 1,
                offset: 0,
                len: 10
            }]
        );
    }

    #[test]
    fn long_spans_are_split_and_requests_span_the_parts() {
        let requests = [req("a", 10..35), req("a", 12..14), req("a", 7..7)];
        let (spans, pieces) = plan(&requests, &options(0, 10));
        let ranges: Vec<_> = spans.iter().map(|s| s.range.clone()).collect();
        assert_eq!(ranges, [10..20, 20..30, 30..35]);
        let lens: Vec<_> = pieces[0].iter().map(|p| p.len).collect();
        assert_eq!(lens, [10, 10, 5]);
        assert_eq!(
            pieces[1],
            [Piece {
                span: 0,
                offset: 2,
                len: 2
            }]
        );
        assert!(pieces[2].is_empty());
    }

    #[test]
    fn reads_ranges_of_local_files_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("obj.bin");
        std::fs::write(&path, &data).unwrap();
        let key = path.to_str().unwrap().trim_start_matches('/').to_string();
        let store = Arc::new(Store::new(&StoreConfig::Local).unwrap());
        let runtime = crate::runtime::runtime().unwrap();
        let reader = Arc::new(Reader::new(&runtime, store, options(16, 4096)).unwrap());
        let ask = |range: Range<u64>| ReadRequest {
            key: key.clone(),
            size: data.len() as u64,
            etag: None,
            range,
        };
        let wanted = [
            ask(0..100_000),
            ask(10..20),
            ask(99_990..100_000),
            ask(5..5),
            ask(30..9_000),
        ];
        let pending = reader.start(&runtime, wanted.to_vec()).unwrap();
        let result = pending.wait(Duration::from_secs(10)).unwrap().unwrap();
        for (i, w) in wanted.iter().enumerate() {
            assert_eq!(
                result.to_vec(i),
                &data[w.range.start as usize..w.range.end as usize]
            );
        }
        // The task drops its sender just after sending: wait for that, not for a result.
        assert!(
            pending.wait(Duration::from_secs(5)).unwrap().is_err(),
            "handed out twice"
        );
        let err = reader.start(&runtime, vec![ask(10..100_001)]).err().unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidInput);
    }
}
