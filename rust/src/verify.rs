//! Checking downloaded bytes against what the store says they are: a full-object CRC32
//! the store keeps (preferred: cheap, and parts fetched in parallel combine theirs), or
//! the MD5 that a single-part upload's ETag is (hashed in order as parts land).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use md5::{Digest, Md5};

use crate::error::{Error, ErrorKind, Result};
use crate::store::unquote;

/// The bytes of one fetch as they are written: always their CRC32 (parts hand theirs on
/// to be combined), checked against whatever the store promised for a whole object.
pub struct Verifier {
    crc: crc32fast::Hasher,
    want_crc32: Option<u32>,
    md5: Option<([u8; 16], Md5)>,
}

impl Verifier {
    /// For a part: nothing to check on its own.
    pub fn for_part() -> Verifier {
        Verifier {
            crc: crc32fast::Hasher::new(),
            want_crc32: None,
            md5: None,
        }
    }

    /// For a whole object: single-part uploads carry their MD5 as the ETag (32 hex digits).
    pub fn for_object(etag: Option<&str>) -> Verifier {
        let md5 = etag.and_then(md5_of_etag).map(|digest| (digest, Md5::new()));
        Verifier {
            md5,
            ..Verifier::for_part()
        }
    }

    /// The store sent the object's CRC32: as good a check as MD5 and far cheaper.
    pub fn expect_crc32(&mut self, crc32: u32) {
        self.want_crc32 = Some(crc32);
        self.md5 = None;
    }

    pub fn update(&mut self, data: &[u8]) {
        self.crc.update(data);
        if let Some((_, h)) = &mut self.md5 {
            h.update(data);
        }
    }

    /// Check what was promised and return the bytes' CRC32; ready for another pass.
    pub fn finish(&mut self, key: &str) -> Result<u32> {
        let crc = std::mem::take(&mut self.crc).finalize();
        let crc_ok = self.want_crc32.is_none_or(|want| want == crc);
        let md5_ok = self
            .md5
            .as_mut()
            .is_none_or(|(want, h)| h.finalize_reset().as_slice() == want);
        if crc_ok && md5_ok {
            return Ok(crc);
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

/// The CRC32 of consecutive pieces, from each piece's CRC32 and length.
pub fn combine_crc32(pieces: impl IntoIterator<Item = (u32, u64)>) -> u32 {
    let mut whole = crc32fast::Hasher::new();
    for (crc, len) in pieces {
        whole.combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
    }
    whole.finalize()
}

/// Hashes an object's parts with MD5 in order while later parts are still downloading,
/// so the check costs little more wall time than the last part's share.
pub struct OrderedDigest {
    landed: Vec<AtomicBool>,
    state: Mutex<(usize, Verifier)>,
}

impl OrderedDigest {
    pub fn new(parts: usize, verifier: Verifier) -> OrderedDigest {
        OrderedDigest {
            landed: (0..parts).map(|_| AtomicBool::new(false)).collect(),
            state: Mutex::new((0, verifier)),
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
            tokio::task::block_in_place(|| hash_range(file, &mut state.1, ranges[state.0].clone()))?;
            state.0 += 1;
        }
        Ok(state.0)
    }

    /// Once every part has landed: finish hashing (waiting for a task still at it) and check.
    pub fn finish(&self, file: &File, ranges: &[Range<u64>], key: &str) -> Result<()> {
        tokio::task::block_in_place(|| {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.hash_ready(&mut state, file, ranges)?;
            state.0 = 0;
            state.1.finish(key).map(|_| ())
        })
    }
}

/// Feed `range` of `file` to `verifier` (bytes already on disk).
pub fn hash_range(file: &File, verifier: &mut Verifier, range: Range<u64>) -> Result<()> {
    let mut buf = vec![0u8; (range.end - range.start).min(4 << 20) as usize];
    let mut pos = range.start;
    while pos < range.end {
        let n = ((range.end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| Error::io("reading back the download", &e))?;
        verifier.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(())
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
        let mut v = Verifier::for_object(Some("\"9e107d9d372bb6826bd81d3542a419d6\""));
        v.update(&data[..10]);
        v.update(&data[10..]);
        assert_eq!(v.finish("k").unwrap(), crc32fast::hash(data));
        let mut flipped = data.to_vec();
        flipped[3] ^= 1;
        v.update(&flipped);
        assert_eq!(v.finish("k").unwrap_err().kind, ErrorKind::Integrity);
    }

    #[test]
    fn a_stored_crc32_replaces_md5() {
        let data = b"hello";
        let mut v = Verifier::for_object(Some("\"00000000000000000000000000000000\""));
        v.expect_crc32(crc32fast::hash(data));
        v.update(data);
        assert!(v.finish("k").is_ok());
        v.update(b"hellp");
        assert_eq!(v.finish("k").unwrap_err().kind, ErrorKind::Integrity);
    }

    #[test]
    fn part_crcs_combine_into_the_objects() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let pieces = [0..1, 1..40_000, 40_000..40_000, 40_000..100_000];
        let combined = combine_crc32(
            pieces
                .iter()
                .map(|r| (crc32fast::hash(&data[r.clone()]), r.len() as u64)),
        );
        assert_eq!(combined, crc32fast::hash(&data));
    }
}
