//! Checking downloaded bytes against what the store says they are: a full-object CRC
//! the store keeps (preferred: cheap, and parts fetched in parallel combine theirs), or
//! the MD5 that a single-part upload's ETag is (hashed in order as parts land) — or, with
//! `Verify::Size`, nothing but the size.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::checksum::{Algorithm, Checksum, Running};
use crate::error::{Error, ErrorKind, Result};
use crate::md5sum::Md5;
use crate::store::unquote;
use crate::window::Window;

/// How hard to check a downloaded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// The size and the strongest check the store gives: a stored full-object CRC, else
    /// a single-part upload's MD5 ETag.
    #[default]
    Auto,
    /// The size only (what s5cmd and obstore check), for users who trust the transport.
    Size,
}

/// The bytes of one fetch as they are written: a running CRC (parts hand theirs on to be
/// combined), checked against whatever the store promised for a whole object.
pub struct Verifier {
    running: Option<Running>,
    want: Option<Checksum>,
    md5: Option<([u8; 16], Md5)>,
    /// Bytes seen since the last `finish`: a promise that comes after some bytes went by
    /// uncounted cannot be checked on this pass.
    seen: u64,
    mode: Verify,
}

impl Verifier {
    /// For a part: nothing to check on its own; with `algorithm`, its CRC is computed
    /// for combining into the object's.
    pub fn for_part(algorithm: Option<Algorithm>) -> Verifier {
        Verifier {
            running: algorithm.map(Running::new),
            want: None,
            md5: None,
            seen: 0,
            mode: Verify::Auto,
        }
    }

    /// For a whole object: a single-part upload carries its MD5 as the ETag (32 hex
    /// digits); a stored CRC, if the response brings one, replaces it (`expect`).
    pub fn for_object(etag: Option<&str>, mode: Verify) -> Verifier {
        let md5 = match mode {
            Verify::Auto => etag.and_then(md5_of_etag).map(|digest| (digest, Md5::new())),
            Verify::Size => None,
        };
        Verifier {
            md5,
            mode,
            ..Verifier::for_part(None)
        }
    }

    /// The store gave the object's full-object CRC: as good a check as MD5, far cheaper.
    pub fn expect(&mut self, checksum: Checksum) {
        if self.mode == Verify::Size {
            return;
        }
        self.want = Some(checksum);
        self.md5 = None;
        let same = self.running.as_ref().map(Running::algorithm) == Some(checksum.algorithm);
        if !same && self.seen == 0 {
            self.running = Some(Running::new(checksum.algorithm));
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        if let Some(running) = &mut self.running {
            running.update(data);
        }
        if let Some((_, h)) = &mut self.md5 {
            h.update(data);
        }
    }

    /// Check what was promised and return the bytes' CRC, if one was computed; ready for
    /// another pass over the same range.
    pub fn finish(&mut self, key: &str) -> Result<Option<Checksum>> {
        self.seen = 0;
        let got = self.running.as_mut().map(Running::finish);
        let crc_ok = self.want.is_none_or(|want| got == Some(want));
        let md5_ok = self
            .md5
            .as_mut()
            .is_none_or(|(want, h)| h.finalize_reset().as_slice() == want);
        if crc_ok && md5_ok {
            return Ok(got);
        }
        Err(mismatch(key))
    }
}

pub fn mismatch(key: &str) -> Error {
    let msg = "the downloaded bytes do not match the checksum the store gave";
    Error::new(ErrorKind::Integrity, msg).with_key(key)
}

pub fn md5_of_etag(etag: &str) -> Option<[u8; 16]> {
    let hex = unquote(etag);
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hashes an object's parts with MD5 in order while later parts are still downloading,
/// so the check costs little more wall time than the last part's share. The window
/// hears of each part hashed, so that fetching stays a bounded distance ahead.
pub struct OrderedDigest {
    landed: Vec<AtomicBool>,
    state: Mutex<(usize, Verifier)>,
    window: Arc<Window>,
}

impl OrderedDigest {
    pub fn new(parts: usize, verifier: Verifier, window: Arc<Window>) -> OrderedDigest {
        OrderedDigest {
            landed: (0..parts).map(|_| AtomicBool::new(false)).collect(),
            state: Mutex::new((0, verifier)),
            window,
        }
    }

    /// Mark part `i` landed and hash every landed part at the front, unless another task
    /// is already doing so (it re-checks before letting go, so nothing is missed).
    pub fn part_landed(&self, i: usize, file: &File, ranges: &[Range<u64>]) -> Result<()> {
        self.landed[i].store(true, Ordering::Release);
        loop {
            let Ok(mut state) = self.state.try_lock() else {
                return Ok(());
            };
            let next = self.hash_ready(&mut state, file, ranges)?;
            drop(state);
            if next >= ranges.len() || !self.landed[next].load(Ordering::Acquire) {
                return Ok(());
            }
        }
    }

    fn hash_ready(&self, state: &mut (usize, Verifier), file: &File, ranges: &[Range<u64>]) -> Result<usize> {
        while state.0 < ranges.len() && self.landed[state.0].load(Ordering::Acquire) {
            crate::runtime::off_runtime(|| hash_range(file, &mut state.1, ranges[state.0].clone()))?;
            state.0 += 1;
            self.window.hashed(state.0);
        }
        Ok(state.0)
    }

    /// Once every part has landed: finish hashing (waiting for a task still at it) and check.
    pub fn finish(&self, file: &File, ranges: &[Range<u64>], key: &str) -> Result<()> {
        crate::runtime::off_runtime(|| {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.hash_ready(&mut state, file, ranges)?;
            state.0 = 0;
            state.1.finish(key).map(|_| ())
        })
    }
}

/// Bytes read back at a time: small enough to stay in the CPU's cache between the copy
/// from the page cache and the hash, and kept per thread (a fresh buffer per part would
/// fault in its pages each time).
const READ_BACK: usize = 1 << 20;

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Feed `range` of `file` to `verifier` (bytes already on disk).
pub fn hash_range(file: &File, verifier: &mut Verifier, range: Range<u64>) -> Result<()> {
    READ_BUF.with_borrow_mut(|buf| {
        buf.resize(READ_BACK, 0);
        let mut pos = range.start;
        while pos < range.end {
            let n = ((range.end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)
                .map_err(|e| Error::io("reading back the download", &e))?;
            verifier.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_md5_etags_only() {
        let md5 = "\"9e107d9d372bb6826bd81d3542a419d6\"";
        assert!(md5_of_etag(md5).is_some());
        assert!(md5_of_etag("\"9e107d9d372bb6826bd81d3542a419d6-3\"").is_none());
        assert!(md5_of_etag("\"zz107d9d372bb6826bd81d3542a419d6\"").is_none());
    }

    #[test]
    fn verifier_accepts_the_right_bytes_and_rejects_a_flipped_one() {
        let data = b"The quick brown fox jumps over the lazy dog";
        let mut v = Verifier::for_object(Some("\"9e107d9d372bb6826bd81d3542a419d6\""), Verify::Auto);
        v.update(&data[..10]);
        v.update(&data[10..]);
        assert_eq!(v.finish("k").unwrap(), None);
        let mut flipped = data.to_vec();
        flipped[3] ^= 1;
        v.update(&flipped);
        assert_eq!(v.finish("k").unwrap_err().kind, ErrorKind::Integrity);
    }

    #[test]
    fn a_stored_crc_replaces_md5_whatever_its_algorithm() {
        let data = b"hello";
        for algorithm in Algorithm::ALL {
            let mut v = Verifier::for_object(Some("\"00000000000000000000000000000000\""), Verify::Auto);
            v.expect(Checksum::of(algorithm, data));
            v.update(data);
            assert_eq!(v.finish("k").unwrap(), Some(Checksum::of(algorithm, data)));
            v.expect(Checksum::of(algorithm, data));
            v.update(b"hellp");
            assert_eq!(v.finish("k").unwrap_err().kind, ErrorKind::Integrity);
        }
    }

    #[test]
    fn size_only_checks_nothing_else() {
        let mut v = Verifier::for_object(Some("\"00000000000000000000000000000000\""), Verify::Size);
        v.expect(Checksum::of(Algorithm::Crc32, b"hello"));
        v.update(b"other");
        assert!(v.finish("k").is_ok());
    }

    #[test]
    fn a_promise_after_unhashed_bytes_is_a_mismatch_not_a_pass() {
        let mut v = Verifier::for_object(None, Verify::Auto);
        v.update(b"he");
        v.expect(Checksum::of(Algorithm::Crc32c, b"hello"));
        v.update(b"llo");
        assert_eq!(v.finish("k").unwrap_err().kind, ErrorKind::Integrity);
    }
}
