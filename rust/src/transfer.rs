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
use crate::fetch::{Fetch, Progress};
use crate::parts::split;
use crate::retry::RetryPolicy;
use crate::store::Store;
use crate::verify::{md5_of_etag, mismatch, OrderedDigest, Verifier, Verify};
use crate::writer::{Stage, TempFile};

/// One object to download to `dest`. With `group`, `dest` lies inside that group's
/// directory asset and the file is staged with it.
#[derive(Debug, Clone)]
pub struct Job {
    pub store: usize,
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub dest: PathBuf,
    pub group: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_concurrency: usize,
    pub part_size: u64,
    pub overwrite: bool,
    pub retry: RetryPolicy,
    pub verify: Verify,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_concurrency: 32,
            part_size: 16 << 20,
            overwrite: false,
            retry: RetryPolicy::default(),
            verify: Verify::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Job `n`'s file is complete and verified (published, or complete in its stage).
    FileDone(usize),
    /// Group `n`'s directory asset is published.
    GroupDone(usize),
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
    groups: Vec<PathBuf>,
    options: Options,
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
    };
    let slot = outcome.clone();
    runtime.spawn(async move {
        let engine = Arc::new(engine);
        let result = engine.clone().run(jobs, groups).await;
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
}

/// A directory asset in progress: published when its last file lands.
struct GroupState {
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
    file: OnceCell<TempFile>,
    remaining: AtomicUsize,
    group: Option<Arc<GroupState>>,
    /// For objects fetched in parts: how the whole is checked, learnt once (a HEAD).
    check: OnceCell<PartsCheck>,
    /// Each part's CRC, combined into the object's when a stored CRC is the check.
    part_crcs: Vec<AtomicU64>,
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
    /// Ask the store once per object (a HEAD) for a full-object CRC; else the ETag.
    /// `Verify::Size` asks nothing.
    async fn learn(fetch: &Fetch<'_>, parts: usize, verify: Verify) -> Result<PartsCheck> {
        if verify == Verify::Size {
            return Ok(PartsCheck::Size);
        }
        Ok(match fetch.stored_checksum().await? {
            Some(checksum) => PartsCheck::Stored(checksum),
            None if fetch.etag.and_then(md5_of_etag).is_some() => {
                let whole = Verifier::for_object(fetch.etag, verify);
                PartsCheck::Md5(Box::new(OrderedDigest::new(parts, whole)))
            }
            None => PartsCheck::Size,
        })
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
    async fn run(self: Arc<Self>, jobs: Vec<Job>, groups: Vec<PathBuf>) -> Result<()> {
        let groups = self.prepare_dirs(&jobs, groups)?;
        let semaphore = Arc::new(Semaphore::new(self.options.max_concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut failure: Option<Error> = None;
        'jobs: for (index, job) in jobs.into_iter().enumerate() {
            let ranges = split(job.size, self.options.part_size);
            let group = job.group.map(|g| groups[g].clone());
            let object = Arc::new(ObjectState {
                index,
                remaining: AtomicUsize::new(ranges.len()),
                part_crcs: ranges.iter().map(|_| AtomicU64::new(0)).collect(),
                ranges: ranges.clone(),
                file: OnceCell::new(),
                group,
                job,
                check: OnceCell::new(),
            });
            for (part, range) in ranges.into_iter().enumerate() {
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
    fn prepare_dirs(&self, jobs: &[Job], groups: Vec<PathBuf>) -> Result<Vec<Arc<GroupState>>> {
        let mut counts = vec![0usize; groups.len()];
        for job in jobs {
            if let Some(g) = job.group {
                counts[g] += 1;
            }
        }
        let mut stages = Vec::with_capacity(groups.len());
        for (index, dest) in groups.into_iter().enumerate() {
            if let Some(parent) = dest.parent() {
                create_dir_all(parent)?;
            }
            let stage = Stage::create(&dest)?;
            stages.push(Arc::new(GroupState {
                index,
                dest,
                stage: Mutex::new(Some(stage)),
                remaining: AtomicUsize::new(counts[index]),
            }));
        }
        let mut dirs = BTreeSet::new();
        for job in jobs {
            let parent = match job.group {
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
                let staged = object.group.as_ref().map(|g| staged_dest(g, &job.dest));
                let path = staged.as_ref().unwrap_or(&job.dest);
                TempFile::create(path, job.size, staged.is_some()).map_err(|e| e.with_key(&job.key))
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
        if object.ranges.len() == 1 {
            fetch
                .range_into(
                    &mut &file.file,
                    range,
                    &mut Verifier::for_object(job.etag.as_deref(), self.options.verify),
                )
                .await?;
            return self.publish(object).await;
        }
        let check = object
            .check
            .get_or_try_init(|| PartsCheck::learn(&fetch, object.ranges.len(), self.options.verify))
            .await?;
        let crc = fetch
            .range_into(
                &mut &file.file,
                range,
                &mut Verifier::for_part(check.part_algorithm()),
            )
            .await?;
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
            fetch.range_into(&mut &file.file, 0..job.size, &mut whole).await?;
        }
        self.publish(object).await
    }

    async fn publish(&self, object: &ObjectState) -> Result<()> {
        let job = &object.job;
        let file = object.file.get().expect("file created before its parts ran");
        match &object.group {
            None => {
                file.publish(&job.dest, self.options.overwrite)
                    .map_err(|e| e.with_key(&job.key))?;
                let _ = self.events.send(Event::FileDone(object.index));
            }
            Some(group) => {
                let _ = self.events.send(Event::FileDone(object.index));
                if group.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let stage = group.stage.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(stage) = stage {
                        stage.publish(&group.dest, self.options.overwrite)?;
                    }
                    let _ = self.events.send(Event::GroupDone(group.index));
                }
            }
        }
        Ok(())
    }
}

fn staged_dest(group: &GroupState, dest: &std::path::Path) -> PathBuf {
    let stage = group.stage.lock().unwrap_or_else(|p| p.into_inner());
    match stage.as_ref() {
        Some(stage) => stage.staged_path(&group.dest, dest),
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
