//! Fetching an object's bytes under its retry budget: the resumable loop that writes a
//! range into its place in the temporary file, and the HEAD for its stored checksum.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::StreamExt;
use tokio_util::sync::CancellationToken;

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

/// Where a range's fetch starts, and the journal its progress is noted in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resume<'a> {
    /// Leading bytes of the range already on disk (a dead run's): read back into the
    /// checksum, not fetched again.
    pub held: u64,
    /// The object's journal and the range's part number in it.
    pub journal: Option<(&'a Journal, usize)>,
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
    /// Write `range` of the object into `file` at the same offsets and return the range's
    /// CRC32. Transient faults are retried from the last byte written; a checksum mismatch
    /// (whole objects: `verifier` knows what the store promised) starts the range again,
    /// held bytes included.
    pub async fn range_to_file(
        &self,
        file: &File,
        range: Range<u64>,
        verifier: &mut Verifier,
        resume: Resume<'_>,
    ) -> Result<u32> {
        let mut budget = Budget::new(self.policy);
        let mut pos = range.start;
        let mut all_held = false;
        if resume.held > 0 {
            pos += resume.held.min(range.end - range.start);
            tokio::task::block_in_place(|| hash_range(file, verifier, range.start..pos))
                .map_err(|e| e.with_key(self.key))?;
            self.progress
                .bytes
                .fetch_add(pos - range.start, Ordering::Relaxed);
            all_held = pos == range.end;
        }
        let note = |pos: u64| -> Result<()> {
            match resume.journal {
                Some((journal, part)) => journal
                    .note(part, pos - range.start, pos == range.end)
                    .map_err(|e| Error::io("writing the download's journal", &e).with_key(self.key)),
                None => Ok(()),
            }
        };
        loop {
            let fetched = if all_held {
                Ok(())
            } else {
                self.fetch_once(file, pos..range.end, &mut pos, verifier, &note)
                    .await
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

    /// The object's full-object CRC32 if the store keeps one (one HEAD, retried alike).
    pub async fn stored_crc32(&self) -> Result<Option<u32>> {
        let mut budget = Budget::new(self.policy);
        loop {
            let head = self.store.head_crc32(self.http, self.key, self.etag);
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
        file: &File,
        range: Range<u64>,
        pos: &mut u64,
        verifier: &mut Verifier,
        note: &(dyn Fn(u64) -> Result<()> + Sync),
    ) -> Result<()> {
        let idle = self.policy.idle_timeout;
        let body = tokio::time::timeout(
            idle,
            self.store
                .get(self.http, self.key, range.clone(), self.size, self.etag),
        )
        .await
        .map_err(|_| self.stalled())??;
        if let Some(crc) = body.crc32 {
            verifier.expect_crc32(crc);
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
            verifier.update(data);
            *pos += data.len() as u64;
            self.progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            note(*pos)?;
        }
        Ok(())
    }

    fn stalled(&self) -> Error {
        let secs = self.policy.idle_timeout.as_secs_f64();
        Error::new(ErrorKind::Transient, format!("no data for {secs:.1} s (stalled)")).with_key(self.key)
    }
}
