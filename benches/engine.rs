//! Engine micro-benchmarks against the local filesystem store, so regressions in the
//! planner and the write path show without a server: `cargo bench --bench engine`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ursa::keypath::relative_key;
use ursa::parts::split;
use ursa::runtime::runtime;
use ursa::store::{Store, StoreConfig};
use ursa::transfer::{self, Job, Options};

fn report(name: &str, runs: Vec<Duration>, unit: &str, per_run: f64) {
    let mut runs = runs;
    runs.sort();
    let median = runs[runs.len() / 2].as_secs_f64();
    println!(
        "{name:<34} median {:>9.3} ms   {:>12.0} {unit}/s",
        median * 1e3,
        per_run / median
    );
}

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect()
}

fn bench_planner() {
    let prefix = "4f2c/eeg/eeg.zarr/";
    let keys: Vec<String> = (0..200_000)
        .map(|i| format!("{prefix}data/c/{}/{}", i / 1000, i % 1000))
        .collect();
    let runs = time(7, || {
        keys.iter().filter(|k| relative_key(prefix, k).is_ok()).count()
    });
    report("planner: check 200k keys", runs, "keys", keys.len() as f64);
    let runs = time(7, || {
        (0..100_000u64)
            .map(|i| split(i << 20, 16 << 20).len())
            .sum::<usize>()
    });
    report("planner: split 100k sizes", runs, "objects", 100_000.0);
}

fn bench_write_path(label: &str, files: usize, size: usize) {
    let src = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..files {
        std::fs::write(src.path().join(format!("{i:06}")), &body).unwrap();
    }
    let store = Arc::new(Store::new(&StoreConfig::Local).unwrap());
    let rt = runtime().expect("runtime");
    let runs = time(5, || {
        let dest = tempfile::tempdir().unwrap();
        let jobs = (0..files)
            .map(|i| Job {
                store: 0,
                key: src
                    .path()
                    .join(format!("{i:06}"))
                    .to_str()
                    .unwrap()
                    .trim_start_matches('/')
                    .to_string(),
                size: size as u64,
                etag: None,
                dest: dest.path().join(format!("{i:06}")),
                asset: None,
                adopt: None,
            })
            .collect();
        let download = transfer::start(
            &rt,
            vec![store.clone()],
            jobs,
            Vec::new(),
            Options::default(),
            None,
        );
        while download.next_events(Duration::from_millis(50)).is_some() {}
        download.outcome().unwrap();
    });
    report(
        &format!("write path: {label}"),
        runs.clone(),
        "files",
        files as f64,
    );
    report(
        &format!("write path: {label}"),
        runs,
        "MB",
        (files * size) as f64 / 1e6,
    );
}

/// The MD5 a single-part upload is checked by, ours and the `md-5` crate's (for the
/// OpenSSL figure on the same machine: `python -m timeit` over `hashlib.md5`).
fn bench_md5() {
    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let ours = time(5, || {
        let mut h = ursa::md5sum::Md5::new();
        data.chunks(1 << 20).for_each(|c| h.update(c));
        h.finalize_reset()
    });
    report("MD5 of 256 MiB (ursa)", ours, "MiB", 256.0);
    let crate_md5 = time(5, || {
        let mut h = <md5::Md5 as md5::Digest>::new();
        data.chunks(1 << 20).for_each(|c| md5::Digest::update(&mut h, c));
        md5::Digest::finalize(h)
    });
    report("MD5 of 256 MiB (md-5 crate)", crate_md5, "MiB", 256.0);
}

fn main() {
    bench_md5();
    bench_planner();
    bench_write_path("2,000 x 256 KiB", 2000, 256 << 10);
    bench_write_path("20,000 x 4 KiB", 20_000, 4 << 10);
    bench_write_path("1 x 512 MiB", 1, 512 << 20);
}
