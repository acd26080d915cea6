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

/// The length of an object's parts (all but the last are this long).
pub fn part_len(ranges: &[Range<u64>]) -> u64 {
    ranges.first().map_or(1, |r| (r.end - r.start).max(1))
}

/// Parts are never cut smaller than this to spread an object over the connections.
pub const MIN_PART: u64 = 1 << 20;

/// The part size for an object of `size` bytes: `part_size`, or, for an object fetched in
/// parts that has fewer parts than there are connections, smaller (down to `MIN_PART`)
/// so that it alone keeps every connection busy. Objects are started in plan order, so
/// the object being reported gets the whole concurrency and finishes before later ones,
/// instead of leaving most connections to objects further on, which then land long
/// before they are reported. Objects no larger than `part_size` stay one GET.
pub fn part_size_for(size: u64, part_size: u64, connections: usize) -> u64 {
    if size <= part_size {
        return part_size;
    }
    let even = size.div_ceil(connections.max(1) as u64);
    even.clamp(MIN_PART.min(part_size), part_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_in_parts_is_spread_over_the_connections() {
        const MIB: u64 = 1 << 20;
        assert_eq!(part_size_for(16 * MIB, 16 * MIB, 32), 16 * MIB); // one GET
        assert_eq!(part_size_for(48 * MIB, 16 * MIB, 32), 3 * MIB / 2); // 32 parts
        assert_eq!(part_size_for(1 << 30, 16 * MIB, 32), 16 * MIB); // 64 parts already
        assert_eq!(part_size_for(20 * MIB, 16 * MIB, 32), MIB); // never below 1 MiB
        assert_eq!(part_size_for(300_000, 64 << 10, 16), 64 << 10); // parts set smaller
    }

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
