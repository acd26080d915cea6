//! Splitting an object into the byte ranges fetched in parallel.

use std::ops::Range;

/// Ranges covering `0..size`, each `part_size` long but the last. Objects no larger than
/// one part (and empty ones) are a single range fetched with one plain GET.
#[allow(clippy::single_range_in_vec_init)] // one range is the point: a single GET
pub fn split(size: u64, part_size: u64) -> Vec<Range<u64>> {
    let part_size = part_size.max(1);
    if size <= part_size {
        return vec![0..size];
    }
    (0..size.div_ceil(part_size))
        .map(|i| i * part_size..((i + 1) * part_size).min(size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_empty_objects_are_one_range() {
        assert_eq!(split(0, 8), vec![0..0]);
        assert_eq!(split(8, 8), vec![0..8]);
    }

    #[test]
    fn ranges_cover_the_object_exactly() {
        for (size, part) in [(9u64, 8u64), (16, 8), (17, 8), (1 << 30, 16 << 20), (1000, 1)] {
            let ranges = split(size, part);
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, size);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            assert!(ranges.iter().all(|r| r.end - r.start <= part && r.end > r.start));
        }
        assert_eq!(split(17, 8), vec![0..8, 8..16, 16..17]);
    }
}
