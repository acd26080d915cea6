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
use crate::store::Store;
use crate::verify::{hash_range, Verifier};

/// Counters shared by every task of one download, read by the caller while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
}

/// Where fetched bytes go: `put` receives each piece at its offset in the object, in
/// order within one request (a retry resumes from the last byte put).
pub trait Sink {
    fn put(&mut self, data: &[u8], offset: u64) -> Result<()>;
}

/// A temporary file: each byte at its own offset (positional writes, parts in parallel).
impl Sink for &File {
    fn put(&mut self, data: &[u8], offset: u64) -> Result<()> {
        self.write_all_at(data, offset)
            .map_err(|e| Error::io("writing the download", &e))
    }
}

/// A part of a large object's temporary file whose progress is journaled, so a killed run
/// can be continued: a note follows each write (at most one per `JOURNAL_EVERY` bytes).
pub struct Journaled<'a> {
    pub file: &'a File,
    pub journal: &'a Journal,
    pub part: usize,
    pub range: Range<u64>,
}

impl Sink for Journaled<'_> {
    fn put(&mut self, data: &[u8], offset: u64) -> Result<()> {
        self.file.put(data, offset)?;
        let end = offset + data.len() as u64;
        self.journal
            .note(self.part, end - self.range.start, end == self.range.end)
            .map_err(|e| Error::io("writing the download's journal", &e))
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
            tokio::task::block_in_place(|| hash_range(file, verifier, range.start..pos))
                .map_err(|e| e.with_key(self.key))?;
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

    async fn fetch_once(
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
