//! The full-object checksums a store may keep for an object (`x-amz-checksum-*`): CRC32,
//! CRC32C and CRC64NVME (R2 keeps CRC64NVME for multipart uploads). All three are CRCs,
//! so parts fetched in parallel combine theirs into the object's — checking costs almost
//! nothing. SIMD-accelerated by `crc-fast`.

use base64::Engine as _;
use crc_fast::{CrcAlgorithm, Digest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
}

impl Algorithm {
    /// Every algorithm, in the order a response's headers are read.
    pub const ALL: [Algorithm; 3] = [Algorithm::Crc64Nvme, Algorithm::Crc32c, Algorithm::Crc32];

    /// The response header that carries it (`x-amz-checksum-<name>`).
    pub fn header(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "crc32",
            Algorithm::Crc32c => "crc32c",
            Algorithm::Crc64Nvme => "crc64nvme",
        }
    }

    fn crc(self) -> CrcAlgorithm {
        match self {
            Algorithm::Crc32 => CrcAlgorithm::Crc32IsoHdlc,
            Algorithm::Crc32c => CrcAlgorithm::Crc32Iscsi,
            Algorithm::Crc64Nvme => CrcAlgorithm::Crc64Nvme,
        }
    }

    fn width(self) -> usize {
        match self {
            Algorithm::Crc64Nvme => 8,
            _ => 4,
        }
    }

    /// The value of a header as S3 sends it: big-endian bytes, base64. A composite
    /// checksum of a multipart upload (`…-N`) is not the object's and gives `None`.
    pub fn decode(self, b64: &str) -> Option<Checksum> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        if bytes.len() != self.width() {
            return None;
        }
        let value = bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
        Some(Checksum {
            algorithm: self,
            value,
        })
    }
}

/// A full-object checksum: what the store promised, or what the bytes gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub value: u64,
}

impl Checksum {
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Checksum {
        let mut running = Running::new(algorithm);
        running.update(data);
        running.finish()
    }

    /// As S3 wants it in a header: big-endian bytes, base64.
    pub fn encode(self) -> String {
        let bytes = self.value.to_be_bytes();
        let width = self.algorithm.width();
        base64::engine::general_purpose::STANDARD.encode(&bytes[8 - width..])
    }
}

/// A checksum being computed over bytes as they arrive.
pub struct Running {
    algorithm: Algorithm,
    digest: Digest,
}

impl Running {
    pub fn new(algorithm: Algorithm) -> Running {
        Running {
            algorithm,
            digest: Digest::new(algorithm.crc()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    /// The checksum so far; the computation starts again from nothing.
    pub fn finish(&mut self) -> Checksum {
        Checksum {
            algorithm: self.algorithm,
            value: self.digest.finalize_reset(),
        }
    }
}

/// The checksum of consecutive pieces, from each piece's checksum and length.
pub fn combine(algorithm: Algorithm, pieces: impl IntoIterator<Item = (u64, u64)>) -> Checksum {
    let mut pieces = pieces.into_iter();
    let mut value = match pieces.next() {
        Some((first, _)) => first,
        None => return Checksum::of(algorithm, &[]),
    };
    for (next, len) in pieces {
        value = crc_fast::checksum_combine(algorithm.crc(), value, next, len);
    }
    Checksum { algorithm, value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_their_header_form() {
        // "hello world" * 1000 as SeaweedFS reports it for each algorithm.
        let data = b"hello world".repeat(1000);
        for (algorithm, header) in [
            (Algorithm::Crc32, "iH6F8A=="),
            (Algorithm::Crc32c, "ROPt5Q=="),
            (Algorithm::Crc64Nvme, "Fg5AiE8Eaws="),
        ] {
            let sum = Checksum::of(algorithm, &data);
            assert_eq!(sum.encode(), header, "{algorithm:?}");
            assert_eq!(algorithm.decode(header), Some(sum));
        }
        assert_eq!(Algorithm::Crc32.decode("iH6F8A==-3"), None, "composite");
        assert_eq!(Algorithm::Crc64Nvme.decode("iH6F8A=="), None, "wrong width");
    }

    #[test]
    fn pieces_combine_into_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let pieces = [0..1, 1..40_000, 40_000..40_000, 40_000..100_000];
        for algorithm in Algorithm::ALL {
            let combined = combine(
                algorithm,
                pieces
                    .iter()
                    .map(|r| (Checksum::of(algorithm, &data[r.clone()]).value, r.len() as u64)),
            );
            assert_eq!(combined, Checksum::of(algorithm, &data), "{algorithm:?}");
        }
    }
}
