//! The download engine: runs planned jobs with one shared concurrency budget, splits
//! large objects into parallel ranged GETs, verifies, publishes, and reports through a
//! channel. It knows nothing of Python; callers drain `Download::next_events`.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checksum::{self, Algorithm, Checksum};
use crate::error::{Error, ErrorKind, Result};
use crate::fetch::{Fetch, FileSink, Progress};
use crate::journal::JOURNAL_FROM;
use crate::parts::{part_len, part_size_for, split};
use crate::records::RecordLog;
use crate::retry::RetryPolicy;
use crate::runtime::off_runtime;
use crate::store::Store;
use crate::verify::{md5_of_etag, mismatch, OrderedDigest, Verifier, Verify};
use crate::window::Window;
use crate::writer::{Stage, TempFile};

/// One object to download to `dest`. With `asset`, `dest` lies inside that directory
/// asset and the file is staged with it. With `adopt`, a dead run's temporary
/// for `dest` is continued if its journal says it holds this object.
#[derive(Debug, Clone)]
pub struct Job {
    pub store: usize,
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub dest: PathBuf,
    pub asset: Option<usize>,
    pub adopt: Option<PathBuf>,
}

/// A directory asset: its final directory and, when resuming, a dead run's stage to
/// continue (the files it already holds complete are not among the jobs).
#[derive(Debug, Clone)]
pub struct DirectoryAsset {
    pub dest: PathBuf,
    pub adopt: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_concurrency: usize,
    pub part_size: u64,
    pub overwrite: bool,
    pub retry: RetryPolicy,
    pub verify: Verify,
    /// fsync each file before its rename and each directory after the renames into it.
    pub durable: bool,
    /// How many bytes an object checked by its MD5 is fetched ahead of the hash.
    pub md5_ahead: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrency: 32,
            part_size: 16 << 20,
            overwrite: false,
            retry: RetryPolicy::default(),
            verify: Verify::Auto,
            durable: false,
            md5_ahead: crate::window::AHEAD_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Job `n`'s file is complete and verified (published, or complete in its stage).
    FileDone(usize),
    /// Directory asset `n` is published.
    AssetDone(usize),
}

/// How long `next_events` keeps gathering after the first event of a batch.
const COALESCE: Duration = Duration::from_millis(2);

/// A running download. Dropping it does not stop it; call `cancel` then `wait`.
pub struct Download {
    events: Mutex<mpsc::Receiver<Event>>,
    cancel: CancellationToken,
    pub progress: Arc<Progress>,
    outcome: Arc<Mutex<Option<Result<()>>>>,
}

impl Download {
    /// Events ready within `timeout` (at least one, unless it elapses). `None` once the
    /// engine has finished and every event has been handed out.
    pub fn next_events(&self, timeout: Duration) -> Option<Vec<Event>> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let first = match events.recv_timeout(timeout) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => return Some(Vec::new()),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        };
        // Gather what arrives within a moment, so a stream of small files costs the caller
        // one wake-up per batch rather than one per file.
        let mut batch = vec![first];
        let until = std::time::Instant::now() + COALESCE;
        while batch.len() < 4096 {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match events.recv_timeout(left) {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The outcome, once `next_events` has returned `None`.
    pub fn outcome(&self) -> Result<()> {
        let slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        slot.clone()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Store, "the download has not finished")))
    }
}

/// Directory assets of one download (their final directories).
pub fn start(
    runtime: &tokio::runtime::Runtime,
    stores: Vec<Arc<Store>>,
    jobs: Vec<Job>,
    assets: Vec<DirectoryAsset>,
    options: Options,
    records: Option<RecordLog>,
) -> Download {
    let (tx, rx) = mpsc::channel();
    let cancel = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let outcome = Arc::new(Mutex::new(None));
    let engine = Engine {
        stores,
        options,
        cancel: cancel.clone(),
        progress: progress.clone(),
        events: tx,
        records,
    };
    let slot = outcome.clone();
    runtime.spawn(async move {
        let engine = Arc::new(engine);
        let result = engine.clone().run(jobs, assets).await;
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        // Dropping the last sender (the engine's) tells the caller the outcome is ready.
    });
    Download {
        events: Mutex::new(rx),
        cancel,
        progress,
        outcome,
    }
}

struct Engine {
    stores: Vec<Arc<Store>>,
    options: Options,
    cancel: CancellationToken,
    progress: Arc<Progress>,
    events: mpsc::Sender<Event>,
    records: Option<RecordLog>,
}

/// A directory asset in progress: published when its last file lands.
struct AssetState {
    index: usize,
    dest: PathBuf,
    stage: Mutex<Option<Stage>>,
    remaining: AtomicUsize,
}

/// One object in progress: its parts share the temporary file.
struct ObjectState {
    index: usize,
    job: Job,
    ranges: Vec<Range<u64>>,
    /// Per range: leading bytes a dead run left in an adopted temporary.
    held: Vec<u64>,
    file: OnceCell<TempFile>,
    remaining: AtomicUsize,
    asset: Option<Arc<AssetState>>,
    /// For objects fetched in parts: how the whole is checked, learnt once (a HEAD).
    check: OnceCell<PartsCheck>,
    /// Each part's CRC, combined into the object's when a stored CRC is the check.
    part_crcs: Vec<AtomicU64>,
    /// For objects in parts whose ETag is an MD5: how far ahead of the hash parts go.
    window: Option<Arc<Window>>,
}

/// How an object fetched in parts is checked once every part has landed.
enum PartsCheck {
    /// The store keeps a full-object CRC: combine the parts' (computed as they land).
    Stored(Checksum),
    /// A single-part upload's MD5 ETag: hashed in order, overlapping later parts.
    Md5(Box<OrderedDigest>),
    /// Neither (a multipart upload without checksums): the size is the check.
    Size,
}

impl PartsCheck {
    /// Ask the store once per object (a HEAD) for a full-object CRC; else the MD5 ETag,
    /// if the object has a window (its ETag is an MD5: it is fetched in order). Any
    /// other check lets every part go at once. `Verify::Size` asks nothing.
    async fn learn(fetch: &Fetch<'_>, object: &ObjectState, verify: Verify) -> Result<PartsCheck> {
        let check = match verify {
            Verify::Size => PartsCheck::Size,
            Verify::Auto => match (fetch.stored_checksum().await?, &object.window) {
                (Some(checksum), _) => PartsCheck::Stored(checksum),
                (None, Some(window)) => {
                    let whole = Verifier::for_object(fetch.etag, verify);
                    let digest = OrderedDigest::new(object.ranges.len(), whole, window.clone());
                    return Ok(PartsCheck::Md5(Box::new(digest)));
                }
                (None, None) => PartsCheck::Size,
            },
        };
        if let Some(window) = &object.window {
            window.open();
        }
        Ok(check)
    }

    /// The CRC each part computes as it lands, if the check combines them.
    fn part_algorithm(&self) -> Option<Algorithm> {
        match self {
            PartsCheck::Stored(checksum) => Some(checksum.algorithm),
            _ => None,
        }
    }

    /// Once every part has landed: do the bytes match?
    fn verdict(&self, object: &ObjectState, file: &std::fs::File) -> Result<()> {
        let key = &object.job.key;
        match self {
            PartsCheck::Stored(want) => {
                let crcs = object.part_crcs.iter().map(|c| c.load(Ordering::Relaxed));
                let lens = object.ranges.iter().map(|r| r.end - r.start);
                if checksum::combine(want.algorithm, crcs.zip(lens)) == *want {
                    Ok(())
                } else {
                    Err(mismatch(key))
                }
            }
            PartsCheck::Md5(digest) => digest.finish(file, &object.ranges, key),
            PartsCheck::Size => Ok(()),
        }
    }
}

impl Engine {
    /// Every task is joined before this returns, so whatever happened, temporaries are
    /// gone (dropped) by the time the caller hears the outcome.
    async fn run(self: Arc<Self>, jobs: Vec<Job>, assets: Vec<DirectoryAsset>) -> Result<()> {
        // File-system work runs off the async workers (a slow disk stalls only its task).
        let assets = off_runtime(|| self.prepare_dirs(&jobs, assets))?;
        for asset in &assets {
            // A continued stage that already holds every file: publish it now.
            if asset.remaining.load(Ordering::Acquire) == 0 {
                off_runtime(|| self.publish_asset(asset))?;
            }
        }
        let semaphore = Arc::new(Semaphore::new(self.options.max_concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut failure: Option<Error> = None;
        'jobs: for (index, job) in jobs.into_iter().enumerate() {
            let adopted = match (&job.adopt, job.asset) {
                (Some(candidate), None) => {
                    off_runtime(|| TempFile::adopt(&job.dest, candidate, job.etag.as_deref(), job.size))
                }
                _ => None,
            };
            let (ranges, held, file) = match adopted {
                Some((temp, state)) => (state.ranges(), state.held.clone(), OnceCell::new_with(Some(temp))),
                None => {
                    let part_size =
                        part_size_for(job.size, self.options.part_size, self.options.max_concurrency);
                    let ranges = split(job.size, part_size);
                    let held = vec![0; ranges.len()];
                    (ranges, held, OnceCell::new())
                }
            };
            let asset = job.asset.map(|g| assets[g].clone());
            let md5_checked = self.options.verify == Verify::Auto
                && ranges.len() > 1
                && job.etag.as_deref().and_then(md5_of_etag).is_some();
            let window =
                md5_checked.then(|| Arc::new(Window::new(part_len(&ranges), self.options.md5_ahead)));
            let object = Arc::new(ObjectState {
                index,
                remaining: AtomicUsize::new(ranges.len()),
                part_crcs: ranges.iter().map(|_| AtomicU64::new(0)).collect(),
                ranges: ranges.clone(),
                held,
                file,
                asset,
                job,
                check: OnceCell::new(),
                window,
            });
            for (part, range) in ranges.into_iter().enumerate() {
                if let Some(window) = &object.window {
                    tokio::select! {
                        _ = self.cancel.cancelled() => break 'jobs,
                        _ = window.admit(part) => {}
                    }
                }
                let permit = tokio::select! {
                    _ = self.cancel.cancelled() => break 'jobs,
                    permit = semaphore.clone().acquire_owned() => permit.expect("semaphore closed"),
                };
                tasks.spawn(self.clone().part(object.clone(), part, range, permit));
                while let Some(done) = tasks.try_join_next() {
                    note_failure(&mut failure, done);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            note_failure(&mut failure, done);
        }
        match failure {
            Some(err) => Err(err),
            None if self.cancel.is_cancelled() => Err(Error::new(ErrorKind::Cancelled, "cancelled")),
            None => Ok(()),
        }
    }

    /// Create every parent directory once, and a stage for each directory asset.
    fn prepare_dirs(&self, jobs: &[Job], assets: Vec<DirectoryAsset>) -> Result<Vec<Arc<AssetState>>> {
        let mut counts = vec![0usize; assets.len()];
        for job in jobs {
            if let Some(g) = job.asset {
                counts[g] += 1;
            }
        }
        let mut stages = Vec::with_capacity(assets.len());
        for (index, DirectoryAsset { dest, adopt }) in assets.into_iter().enumerate() {
            if let Some(parent) = dest.parent() {
                create_dir_all(parent)?;
            }
            let stage = match adopt {
                None => Stage::create(&dest)?,
                Some(candidate) => {
                    let stage = Stage::adopt(&dest, &candidate).ok_or_else(|| {
                        let msg = format!(
                            "the interrupted download of {} was taken over by another \
                             process; run again",
                            dest.display()
                        );
                        Error::new(ErrorKind::FileExists, msg)
                    })?;
                    // Whatever is at a job's place was cut short: it is fetched again.
                    for job in jobs.iter().filter(|j| j.asset == Some(index)) {
                        let staged = stage.staged_path(&dest, &job.dest);
                        match std::fs::remove_file(&staged) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(Error::io(&format!("removing {}", staged.display()), &e))
                            }
                            _ => {}
                        }
                    }
                    stage
                }
            };
            stages.push(Arc::new(AssetState {
                index,
                dest,
                stage: Mutex::new(Some(stage)),
                remaining: AtomicUsize::new(counts[index]),
            }));
        }
        let mut dirs = BTreeSet::new();
        for job in jobs {
            let parent = match job.asset {
                Some(g) => staged_dest(&stages[g], &job.dest),
                None => job.dest.clone(),
            };
            if let Some(dir) = parent.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            create_dir_all(&dir)?;
        }
        Ok(stages)
    }

    async fn part(
        self: Arc<Self>,
        object: Arc<ObjectState>,
        part: usize,
        range: Range<u64>,
        _permit: OwnedSemaphorePermit,
    ) -> Result<()> {
        let fetch = std::panic::AssertUnwindSafe(self.fetch_part(&object, part, range)).catch_unwind();
        let result = tokio::select! {
            _ = self.cancel.cancelled() => Err(Error::new(ErrorKind::Cancelled, "cancelled")),
            result = fetch => result.unwrap_or_else(|panic| Err(Error::panicked(panic.as_ref(), &object.job.key))),
        };
        if let Err(err) = &result {
            if err.kind != ErrorKind::Cancelled {
                self.cancel.cancel(); // the first failure stops the whole download
            }
        }
        result
    }

    async fn fetch_part(&self, object: &ObjectState, part: usize, range: Range<u64>) -> Result<()> {
        let job = &object.job;
        let file = object
            .file
            .get_or_try_init(|| async {
                let staged = object.asset.as_ref().map(|g| staged_dest(g, &job.dest));
                let path = staged.as_ref().unwrap_or(&job.dest);
                let temp = off_runtime(|| TempFile::create(path, job.size, staged.is_some()));
                match temp {
                    // A large file outside a stage keeps a journal, so a killed run's
                    // bytes can be continued by the next one.
                    Ok(temp) if staged.is_none() && job.size >= JOURNAL_FROM => {
                        temp.journaled(job.etag.as_deref(), job.size, part_len(&object.ranges))
                    }
                    other => other,
                }
                .map_err(|e| e.with_key(&job.key))
            })
            .await?;
        let fetch = Fetch {
            store: &self.stores[job.store],
            key: &job.key,
            size: job.size,
            etag: job.etag.as_deref(),
            policy: &self.options.retry,
            cancel: &self.cancel,
            progress: &self.progress,
        };
        let held = object.held[part];
        if object.ranges.len() == 1 {
            let mut whole = Verifier::for_object(job.etag.as_deref(), self.options.verify);
            fill_part(&fetch, file, part, range, held, &mut whole).await?;
            return self.publish(object).await;
        }
        let check = object
            .check
            .get_or_try_init(|| PartsCheck::learn(&fetch, object, self.options.verify))
            .await?;
        let mut verifier = Verifier::for_part(check.part_algorithm());
        let crc = fill_part(&fetch, file, part, range, held, &mut verifier).await?;
        if let Some(crc) = crc {
            object.part_crcs[part].store(crc.value, Ordering::Relaxed);
        }
        if let PartsCheck::Md5(digest) = check {
            digest
                .part_landed(part, &file.file, &object.ranges)
                .map_err(|e| e.with_key(&job.key))?;
        }
        if object.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        let verdict = check.verdict(object, &file.file);
        if let Err(err) = verdict {
            if err.kind != ErrorKind::Integrity {
                return Err(err);
            }
            // A bad checksum over parts: fetch the object again as one verified stream.
            self.progress.retries.fetch_add(1, Ordering::Relaxed);
            let mut whole = Verifier::for_object(job.etag.as_deref(), self.options.verify);
            if let PartsCheck::Stored(want) = check {
                whole.expect(*want);
            }
            fetch
                .range_into(&mut FileSink::new(&file.file), 0..job.size, &mut whole)
                .await?;
        }
        self.publish(object).await
    }

    async fn publish(&self, object: &ObjectState) -> Result<()> {
        off_runtime(|| self.publish_file(object))
    }

    /// Put a complete, verified file in place (or, in a stage, mark it complete).
    fn publish_file(&self, object: &ObjectState) -> Result<()> {
        let job = &object.job;
        let file = object.file.get().expect("file created before its parts ran");
        let durable = self.options.durable;
        match &object.asset {
            None => {
                file.publish(&job.dest, self.options.overwrite, durable)
                    .map_err(|e| e.with_key(&job.key))?;
                self.record(job, &file.file)?;
                let _ = self.events.send(Event::FileDone(object.index));
            }
            Some(asset) => {
                // Its place in the stage is its final place once the stage is published;
                // moving the stage does not change the file's identity.
                if durable {
                    file.sync().map_err(|e| e.with_key(&job.key))?;
                }
                self.record(job, &file.file)?;
                let _ = self.events.send(Event::FileDone(object.index));
                if asset.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.publish_asset(asset)?;
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Put a complete directory asset in place.
    fn publish_asset(&self, asset: &AssetState) -> Result<()> {
        let stage = asset.stage.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stage) = stage {
            stage.publish(&asset.dest, self.options.overwrite, self.options.durable)?;
        }
        let _ = self.events.send(Event::AssetDone(asset.index));
        Ok(())
    }

    /// Note what `job`'s file now is, for a later run with resume=True.
    fn record(&self, job: &Job, file: &std::fs::File) -> Result<()> {
        match &self.records {
            Some(records) => records
                .note(&job.dest, &job.key, job.etag.as_deref(), file)
                .map_err(|e| Error::io("recording the download under .ursa", &e).with_key(&job.key)),
            None => Ok(()),
        }
    }
}

/// Fetch `part` of an object into its temporary, continuing from the `held` bytes a killed
/// run left there, and noting progress in the journal if the object keeps one.
async fn fill_part(
    fetch: &Fetch<'_>,
    file: &TempFile,
    part: usize,
    range: Range<u64>,
    held: u64,
    verifier: &mut Verifier,
) -> Result<Option<Checksum>> {
    let mut sink = match &file.journal {
        Some(journal) => FileSink::journaled(&file.file, journal, part, range.clone()),
        None => FileSink::new(&file.file),
    };
    fetch
        .range_resumed(&mut sink, range, verifier, &file.file, held)
        .await
}

fn staged_dest(asset: &AssetState, dest: &std::path::Path) -> PathBuf {
    let stage = asset.stage.lock().unwrap_or_else(|p| p.into_inner());
    match stage.as_ref() {
        Some(stage) => stage.staged_path(&asset.dest, dest),
        None => dest.to_path_buf(),
    }
}

fn create_dir_all(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(&format!("creating directory {}", dir.display()), &e))
}

/// Keep the most telling failure: a real error beats the cancellations it caused.
fn note_failure(failure: &mut Option<Error>, done: std::result::Result<Result<()>, tokio::task::JoinError>) {
    let err = match done {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err,
        Err(join) => Error::new(ErrorKind::Store, format!("a download task failed: {join}")),
    };
    let replace = match failure {
        None => true,
        Some(current) => current.kind == ErrorKind::Cancelled && err.kind != ErrorKind::Cancelled,
    };
    if replace {
        *failure = Some(err);
    }
}
