//! The download engine against an in-process S3-like server that injects faults: which
//! failure wins when parts fail together, directory assets published whole (and replaced
//! whole), the integrity re-fetch of an object fetched in parts, and cancellation leaving
//! no temporary behind.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{FaultKind, Server};
use tokio::runtime::Runtime;
use ursa::error::ErrorKind;
use ursa::retry::RetryPolicy;
use ursa::transfer::{self, DirectoryAsset, Download, Event, Job, Options};
use ursa::verify::Verify;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn options() -> Options {
    Options {
        max_concurrency: 16,
        part_size: 64 << 10,
        overwrite: false,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            idle_timeout: Duration::from_secs(5),
        },
        verify: Verify::Auto,
        durable: false,
        md5_ahead: 2 << 20,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn job(server: &Server, key: &str, bytes: Vec<u8>, dest: PathBuf, asset: Option<usize>) -> Job {
    let size = bytes.len() as u64;
    let etag = server.put(key, bytes);
    Job {
        store: 0,
        key: key.into(),
        size,
        etag: Some(etag),
        dest,
        asset,
        adopt: None,
    }
}

/// Drain the events until the engine is finished; its outcome and the events.
fn finish(download: &Download) -> (ursa::error::Result<()>, Vec<Event>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while let Some(batch) = download.next_events(Duration::from_millis(50)) {
        events.extend(batch);
        assert!(Instant::now() < deadline, "the engine never finished");
    }
    (download.outcome(), events)
}

/// Every entry under `dir`, relative, in order.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().to_string_lossy().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_permanent_failure_beats_the_cancellations_it_causes_and_nothing_is_left() {
    let rt = runtime();
    let server = rt.block_on(Server::start());
    let dir = tempfile::tempdir().unwrap();
    let jobs = vec![
        job(
            &server,
            "slow.bin",
            data(300_000, 1),
            dir.path().join("slow.bin"),
            None,
        ),
        job(
            &server,
            "denied.bin",
            data(10, 2),
            dir.path().join("denied.bin"),
            None,
        ),
    ];
    server.break_requests("slow.bin", FaultKind::Stall, usize::MAX);
    server.break_requests("denied.bin", FaultKind::Status(403), 1);
    let download = transfer::start(&rt, vec![server.store()], jobs, vec![], options(), None);
    let (outcome, events) = finish(&download);
    let err = outcome.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    assert_eq!(err.key.as_deref(), Some("denied.bin"));
    assert!(events.is_empty());
    assert!(tree(dir.path()).is_empty(), "left behind: {:?}", tree(dir.path()));
}

#[test]
fn a_directory_asset_is_published_whole_and_replaced_whole() {
    let rt = runtime();
    let server = rt.block_on(Server::start());
    let dir = tempfile::tempdir().unwrap();
    let asset = dir.path().join("eeg.zarr");
    let files = [("zarr.json", 100), ("data/c/0", 200_000), ("data/c/1", 5)];
    let make_jobs = |seed: u8| -> Vec<Job> {
        files
            .iter()
            .map(|(rel, len)| {
                let key = format!("rec/eeg.zarr/{rel}");
                job(&server, &key, data(*len, seed), asset.join(rel), Some(0))
            })
            .collect()
    };

    let download = transfer::start(
        &rt,
        vec![server.store()],
        make_jobs(1),
        vec![DirectoryAsset {
            dest: asset.clone(),
            adopt: None,
        }],
        options(),
        None,
    );
    let (outcome, events) = finish(&download);
    outcome.unwrap();
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::AssetDone(0))).count(),
        1
    );
    assert_eq!(
        events.last(),
        Some(&Event::AssetDone(0)),
        "published before its last file"
    );
    for (rel, len) in files {
        assert_eq!(std::fs::read(asset.join(rel)).unwrap(), data(len, 1));
    }

    // Without consent, an existing asset is never touched; with it, replaced whole.
    std::fs::write(asset.join("stale-extra"), b"old").unwrap();
    let download = transfer::start(
        &rt,
        vec![server.store()],
        make_jobs(2),
        vec![DirectoryAsset {
            dest: asset.clone(),
            adopt: None,
        }],
        options(),
        None,
    );
    assert_eq!(finish(&download).0.unwrap_err().kind, ErrorKind::FileExists);
    assert_eq!(std::fs::read(asset.join("data/c/1")).unwrap(), data(5, 1));
    assert_eq!(
        tree(dir.path()).iter().filter(|e| !e.contains('/')).count(),
        1,
        "stage left"
    );

    let replace = Options {
        overwrite: true,
        ..options()
    };
    let download = transfer::start(
        &rt,
        vec![server.store()],
        make_jobs(3),
        vec![DirectoryAsset {
            dest: asset.clone(),
            adopt: None,
        }],
        replace,
        None,
    );
    finish(&download).0.unwrap();
    assert!(!asset.join("stale-extra").exists(), "merged instead of replaced");
    assert_eq!(std::fs::read(asset.join("data/c/0")).unwrap(), data(200_000, 3));
    assert_eq!(
        tree(dir.path()).iter().filter(|e| !e.contains('/')).count(),
        1,
        "trash left"
    );
}

#[test]
fn a_bad_checksum_over_parts_fetches_the_object_again_whole() {
    let rt = runtime();
    let server = rt.block_on(Server::start());
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(300_000, 7);
    let dest = dir.path().join("big.bin");
    let jobs = vec![job(&server, "big.bin", bytes.clone(), dest.clone(), None)];
    server.break_requests("big.bin", FaultKind::FlipByte(1000), 1);
    let download = transfer::start(&rt, vec![server.store()], jobs, vec![], options(), None);
    let (outcome, events) = finish(&download);
    outcome.unwrap();
    assert_eq!(events, [Event::FileDone(0)]);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        bytes,
        "a flipped byte went through"
    );
    let gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    // Five parts of 64 KiB, then one whole GET (no Range) after the MD5 mismatch.
    assert_eq!(gets.len(), 6, "{gets:?}");
    assert_eq!(gets.iter().filter(|r| r.range.is_none()).count(), 1);
    assert_eq!(
        download
            .progress
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn cancelling_removes_every_temporary_and_stage() {
    let rt = runtime();
    let server = rt.block_on(Server::start());
    let dir = tempfile::tempdir().unwrap();
    let asset = dir.path().join("events.lance");
    let mut jobs = vec![job(
        &server,
        "big.bin",
        data(400_000, 1),
        dir.path().join("big.bin"),
        None,
    )];
    jobs.push(job(&server, "a/x", data(1000, 2), asset.join("x"), Some(0)));
    jobs.push(job(&server, "a/y", data(70_000, 3), asset.join("y"), Some(0)));
    server.break_requests("big.bin", FaultKind::Stall, usize::MAX);
    server.break_requests("a/y", FaultKind::Stall, usize::MAX);
    let download = transfer::start(
        &rt,
        vec![server.store()],
        jobs,
        vec![DirectoryAsset {
            dest: asset,
            adopt: None,
        }],
        options(),
        None,
    );
    // Wait until the temporaries exist and bytes are flowing, then cancel.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tree(dir.path()).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the download never started: {:?}",
            tree(dir.path())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    download.cancel();
    let (outcome, _) = finish(&download);
    assert_eq!(outcome.unwrap_err().kind, ErrorKind::Cancelled);
    assert!(tree(dir.path()).is_empty(), "left behind: {:?}", tree(dir.path()));
}

#[test]
fn an_object_checked_by_its_md5_is_fetched_in_order_close_behind_its_hash() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(Server::start());
    // 24 parts on a slow link, 16 requests allowed at once, a window of two parts.
    let options = Options {
        md5_ahead: 2 * options().part_size,
        ..options()
    };
    let bytes = data(24 * options.part_size as usize, 5);
    let job = job(
        &server,
        "big.bin",
        bytes.clone(),
        dir.path().join("big.bin"),
        None,
    );
    server.break_requests("big.bin", FaultKind::DelayMs(30), 24);
    let download = transfer::start(&rt, vec![server.store()], vec![job], vec![], options, None);
    let (outcome, _) = finish(&download);
    outcome.unwrap();
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), bytes);
    let ranges: Vec<u64> = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .filter_map(|r| {
            r.range
                .as_deref()?
                .strip_prefix("bytes=")?
                .split('-')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(ranges.len(), 24);
    // The i-th request may be for part i or the one after it (two go at once, in either
    // order), never for a part further on: that one waits for the hash.
    let parts: Vec<u64> = ranges.iter().map(|r| r / options.part_size).collect();
    assert!(
        parts.iter().enumerate().all(|(i, &p)| p < i as u64 + 2),
        "a part went ahead of the window: {parts:?}"
    );
    let most = server.most_at_once("big.bin");
    assert!(
        most <= 2,
        "{most} parts in flight at once, beyond the window of two"
    );
}

#[test]
fn an_object_in_parts_alone_keeps_every_connection_busy() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let server = rt.block_on(Server::start());
    // 8 MiB in parts of at most 4 MiB, 8 connections: cut into 8 parts of 1 MiB, all at
    // once, rather than 2 parts with 6 connections left to the objects after it.
    let options = Options {
        max_concurrency: 8,
        part_size: 4 << 20,
        md5_ahead: 1 << 30,
        ..options()
    };
    let bytes = data(8 << 20, 9);
    let big = job(
        &server,
        "big.bin",
        bytes.clone(),
        dir.path().join("big.bin"),
        None,
    );
    let after = job(
        &server,
        "after.bin",
        data(10, 1),
        dir.path().join("after.bin"),
        None,
    );
    server.break_requests("big.bin", FaultKind::DelayMs(100), 8);
    let download = transfer::start(&rt, vec![server.store()], vec![big, after], vec![], options, None);
    let (outcome, _) = finish(&download);
    outcome.unwrap();
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), bytes);
    assert_eq!(server.most_at_once("big.bin"), 8);
}
