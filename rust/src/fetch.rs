//! Fetching an object's bytes under its retry budget: the resumable loop that puts a
//! range into its place in a sink (a temporary file, or a buffer in memory), and the HEAD
//! for its stored checksum.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::checksum::Checksum;
use crate::error::{Error, ErrorKind, Result};
use crate::journal::Journal;
use crate::retry::{Budget, RetryPolicy};
use crate::runtime::off_runtime;
use crate::store::Store;
use crate::verify::{hash_range, Verifier};

/// Counters shared by every task of one download, read by the caller while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
}

/// Where fetched bytes go: `put` receives each piece at its offset in the object, in
/// order within one request (a retry resumes from the last byte put). A sink may hold
/// pieces back to write them in larger batches; `flush` writes whatever it holds, and the
/// fetch calls it at the end of every request, so a retry's bytes follow landed ones.
pub trait Sink {
    fn put(&mut self, data: &[u8], offset: u64) -> Result<()>;
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Bytes gathered before one positional write: each write leaves the async workers (a
/// disk can stall), so writing per network chunk would pay that hand-off thousands of
/// times per large object.
const WRITE_BATCH: usize = 256 << 10;

/// A temporary file (parts write in parallel, each at its own offsets), optionally with
/// the journal of one part's progress, so a killed run can be continued: a note follows
/// each write (at most one per `JOURNAL_EVERY` bytes). Writes run off the async workers.
pub struct FileSink<'a> {
    file: &'a File,
    journal: Option<(&'a Journal, usize, Range<u64>)>,
    pending: Vec<u8>,
    at: u64,
}

impl<'a> FileSink<'a> {
    pub fn new(file: &'a File) -> FileSink<'a> {
        FileSink {
            file,
            journal: None,
            pending: Vec::new(),
            at: 0,
        }
    }

    /// Part `part` (covering `range`) of a journaled object.
    pub fn journaled(file: &'a File, journal: &'a Journal, part: usize, range: Range<u64>) -> FileSink<'a> {
        FileSink {
            journal: Some((journal, part, range)),
            ..FileSink::new(file)
        }
    }

    /// Write `data` at `at`, then note it in the journal (never before it is written).
    fn write(&self, data: &[u8], at: u64) -> Result<()> {
        self.file
            .write_all_at(data, at)
            .map_err(|e| Error::io("writing the download", &e))?;
        if let Some((journal, part, range)) = &self.journal {
            let end = at + data.len() as u64;
            journal
                .note(*part, end - range.start, end == range.end)
                .map_err(|e| Error::io("writing the download's journal", &e))?;
        }
        Ok(())
    }
}

impl Sink for FileSink<'_> {
    fn put(&mut self, data: &[u8], offset: u64) -> Result<()> {
        if !self.pending.is_empty() && self.at + self.pending.len() as u64 != offset {
            self.flush()?;
        }
        if self.pending.is_empty() {
            if data.len() >= WRITE_BATCH {
                return off_runtime(|| self.write(data, offset)); // big enough already
            }
            self.at = offset;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = off_runtime(|| self.write(&self.pending, self.at));
        self.pending.clear();
        result
    }
}

/// A range of an object held in memory: `bytes[i]` is the object's byte `start + i`.
#[derive(Debug)]
pub struct Buffer {
    pub start: u64,
    pub bytes: Vec<u8>,
}

impl Buffer {
    pub fn for_range(range: &Range<u64>) -> Buffer {
        Buffer {
            start: range.start,
            bytes: vec![0; (range.end - range.start) as usize],
        }
    }
}

impl Sink for Buffer {
    fn put(&mut self, data: &[u8], offset: u64) -> Result<()> {
        let at = (offset - self.start) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// One object's fetch context: where it comes from and the rules every request obeys.
pub struct Fetch<'a> {
    pub store: &'a Store,
    pub key: &'a str,
    pub size: u64,
    pub etag: Option<&'a str>,
    pub policy: &'a RetryPolicy,
    pub cancel: &'a CancellationToken,
    pub progress: &'a Progress,
}

impl Fetch<'_> {
    /// Put `range` of the object into `sink` at the same offsets and return the range's
    /// CRC, if the verifier computes one. Transient faults are retried from the last byte put; a checksum mismatch
    /// (whole objects: `verifier` knows what the store promised) starts the range again.
    pub async fn range_into(
        &self,
        sink: &mut impl Sink,
        range: Range<u64>,
        verifier: &mut Verifier,
    ) -> Result<Option<Checksum>> {
        self.fill(sink, range, verifier, None).await
    }

    /// Like `range_into` when the range's first `held` bytes are already in `file` (a
    /// killed run's): they are read back into the checksum, not fetched again. A
    /// checksum mismatch starts the whole range again, held bytes included.
    pub async fn range_resumed(
        &self,
        sink: &mut impl Sink,
        range: Range<u64>,
        verifier: &mut Verifier,
        file: &File,
        held: u64,
    ) -> Result<Option<Checksum>> {
        self.fill(sink, range, verifier, Some((file, held))).await
    }

    async fn fill(
        &self,
        sink: &mut impl Sink,
        range: Range<u64>,
        verifier: &mut Verifier,
        held: Option<(&File, u64)>,
    ) -> Result<Option<Checksum>> {
        let mut budget = Budget::new(self.policy);
        let mut pos = range.start;
        let mut all_held = false;
        if let Some((file, held)) = held.filter(|(_, held)| *held > 0) {
            pos += held.min(range.end - range.start);
            off_runtime(|| hash_range(file, verifier, range.start..pos)).map_err(|e| e.with_key(self.key))?;
            self.progress
                .bytes
                .fetch_add(pos - range.start, Ordering::Relaxed);
            all_held = pos == range.end;
        }
        loop {
            let fetched = if all_held {
                Ok(())
            } else {
                self.fetch_once(sink, pos..range.end, &mut pos, verifier).await
            };
            let result = match fetched {
                Ok(()) => verifier.finish(self.key),
                Err(err) => Err(err),
            };
            let err = match result {
                Ok(crc) => return Ok(crc),
                Err(err) => err,
            };
            if err.kind == ErrorKind::Integrity {
                pos = range.start; // a bad checksum condemns every byte: start over
                all_held = false;
            }
            self.after_failure(&mut budget, err).await?;
        }
    }

    /// The object's full-object checksum if the store keeps one (one HEAD, retried alike).
    pub async fn stored_checksum(&self) -> Result<Option<Checksum>> {
        let mut budget = Budget::new(self.policy);
        loop {
            let head = self.store.head_checksum(self.key, self.etag);
            let err = match tokio::time::timeout(self.policy.idle_timeout, head).await {
                Ok(Ok(crc)) => return Ok(crc),
                Ok(Err(err)) => err,
                Err(_) => self.stalled(),
            };
            self.after_failure(&mut budget, err).await?;
        }
    }

    async fn after_failure(&self, budget: &mut Budget<'_>, err: Error) -> Result<()> {
        budget.after_failure(err, self.cancel).await?;
        self.progress.retries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One request for `range`; whatever it delivered is in the sink when this returns.
    async fn fetch_once(
        &self,
        sink: &mut impl Sink,
        range: Range<u64>,
        pos: &mut u64,
        verifier: &mut Verifier,
    ) -> Result<()> {
        let streamed = self.stream_once(sink, range, pos, verifier).await;
        match sink.flush() {
            Ok(()) => streamed,
            Err(err) => Err(err.with_key(self.key)), // the bytes before `pos` did not land
        }
    }

    async fn stream_once(
        &self,
        sink: &mut impl Sink,
        range: Range<u64>,
        pos: &mut u64,
        verifier: &mut Verifier,
    ) -> Result<()> {
        let idle = self.policy.idle_timeout;
        let body = tokio::time::timeout(
            idle,
            self.store.get(self.key, range.clone(), self.size, self.etag),
        )
        .await
        .map_err(|_| self.stalled())??;
        if let Some(checksum) = body.checksum {
            verifier.expect(checksum);
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
            sink.put(data, *pos).map_err(|e| e.with_key(self.key))?;
            verifier.update(data);
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

    fn sink_writes(file: &File) {
        let mut sink = FileSink::new(file);
        sink.put(b"ab", 0).unwrap();
        sink.put(b"cd", 2).unwrap();
        sink.put(b"zz", 10).unwrap(); // not contiguous: what was gathered is written first
        let big = vec![7u8; WRITE_BATCH];
        sink.put(&big, 20).unwrap();
        sink.flush().unwrap();
        let mut back = vec![0u8; 20 + WRITE_BATCH];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..4], b"abcd");
        assert_eq!(&back[4..10], &[0u8; 6]);
        assert_eq!(&back[10..12], b"zz");
        assert!(back[20..].iter().all(|&b| b == 7));
    }

    #[test]
    fn gathered_pieces_land_at_their_offsets_on_any_thread() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join(name))
                .unwrap();
            file.set_len(20 + WRITE_BATCH as u64).unwrap();
            file
        };
        sink_writes(&open("plain"));
        // On a worker of the multi-thread runtime, and on a single-threaded runtime (where
        // block_in_place would panic).
        let multi = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        let file = open("multi");
        multi.block_on(async { tokio::spawn(async move { sink_writes(&file) }).await.unwrap() });
        let single = tokio::runtime::Builder::new_current_thread().build().unwrap();
        single.block_on(async { sink_writes(&open("single")) });
    }

    #[test]
    fn a_journal_note_follows_each_write() {
        let dir = tempfile::tempdir().unwrap();
        let size = 2 * WRITE_BATCH as u64;
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        let journal_path = dir.path().join("j");
        let journal = Journal::create(&journal_path, Some("\"e\""), size, size).unwrap();
        let mut sink = FileSink::journaled(&file, &journal, 0, 0..size);
        sink.put(&vec![1u8; WRITE_BATCH - 1], 0).unwrap();
        let state = crate::journal::State::read(&journal_path).unwrap();
        assert_eq!(state.held, vec![0], "noted before the bytes were written");
        sink.put(&[1u8; 2], WRITE_BATCH as u64 - 1).unwrap(); // the batch is full: written
        let state = crate::journal::State::read(&journal_path).unwrap();
        assert_eq!(state.held, vec![WRITE_BATCH as u64 + 1]);
    }
}
