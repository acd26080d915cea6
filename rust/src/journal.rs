//! The journal beside a large object's temporary: which object it holds (ETag, size, part
//! size) and, per part, how many leading bytes are on disk. A line is appended only after
//! the write of those bytes returned, so a killed run's journal never claims bytes it did
//! not write; a later run on this machine continues from them. The journal says where to
//! continue, never whether the bytes are right: held bytes are read back and checksummed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::parts::split;

const MAGIC: &str = "ursa-journal 1";

/// Objects at least this large are journaled (smaller ones are cheap to fetch again).
pub const JOURNAL_FROM: u64 = 4 << 20;

/// Progress is journaled about this often per part (and when the part completes).
pub const JOURNAL_EVERY: u64 = 256 << 10;

/// What a journal says: the object, its ranges, and the bytes held at each range's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub etag: Option<String>,
    pub size: u64,
    pub part_size: u64,
    pub held: Vec<u64>,
}

impl State {
    pub fn ranges(&self) -> Vec<Range<u64>> {
        split(self.size, self.part_size)
    }

    pub fn held_total(&self) -> u64 {
        self.held.iter().sum()
    }

    /// Whether it describes this object (same ETag and size).
    pub fn is_for(&self, etag: Option<&str>, size: u64) -> bool {
        self.etag.as_deref() == etag && self.size == size
    }

    /// Read a journal; `None` for anything garbled or inconsistent (then the temporary is
    /// discarded, never trusted). A last line without its newline is a write cut short by
    /// the kill and is ignored.
    /// Only a regular file is read: a FIFO planted under a journal's name would otherwise
    /// hold the resume scan forever (`O_NONBLOCK` opens it without waiting for a writer).
    pub fn read(path: &Path) -> Option<State> {
        let mut text = String::new();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        file.take(16 << 20).read_to_string(&mut text).ok()?;
        State::parse(&text)
    }

    fn parse(text: &str) -> Option<State> {
        let complete = &text[..text.rfind('\n')? + 1];
        let mut lines = complete.lines();
        let header = lines.next()?.strip_prefix(MAGIC)?.strip_prefix(' ')?;
        let mut fields = header.splitn(3, ' ');
        let size: u64 = fields.next()?.parse().ok()?;
        let part_size: u64 = fields.next()?.parse().ok()?;
        let etag = match fields.next()? {
            "-" => None,
            tag => Some(tag.strip_prefix('=')?.to_string()),
        };
        if part_size == 0 {
            return None;
        }
        let ranges = split(size, part_size);
        let mut held = vec![0u64; ranges.len()];
        for line in lines {
            let (part, written) = line.split_once(' ')?;
            let part: usize = part.parse().ok()?;
            let written: u64 = written.parse().ok()?;
            let range = ranges.get(part)?;
            if written > range.end - range.start {
                return None;
            }
            held[part] = held[part].max(written);
        }
        Some(State {
            etag,
            size,
            part_size,
            held,
        })
    }
}

/// An open journal, appended to by every part task of its object.
#[derive(Debug)]
pub struct Journal {
    file: File,
    /// Per part: the leading bytes last journaled.
    noted: Vec<AtomicU64>,
}

impl Journal {
    /// A new journal at `path` for an object about to be written from scratch.
    pub fn create(path: &Path, etag: Option<&str>, size: u64, part_size: u64) -> io::Result<Journal> {
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(path)?;
        let etag = etag.map_or("-".to_string(), |e| format!("={e}"));
        writeln!(file, "{MAGIC} {size} {part_size} {etag}")?;
        let parts = split(size, part_size).len();
        Ok(Journal {
            file,
            noted: (0..parts).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// An adopted journal (already renamed to this process's name), to append to.
    pub fn reopen(path: &Path, state: &State) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Journal {
            file,
            noted: state.held.iter().map(|&h| AtomicU64::new(h)).collect(),
        })
    }

    /// `written` leading bytes of `part` are on disk. Noted when it is at least
    /// `JOURNAL_EVERY` past the last note, or `done`. One append (atomic for O_APPEND).
    pub fn note(&self, part: usize, written: u64, done: bool) -> io::Result<()> {
        let Some(noted) = self.noted.get(part) else {
            return Ok(());
        };
        let last = noted.load(Ordering::Relaxed);
        if written <= last || (!done && written - last < JOURNAL_EVERY) {
            return Ok(());
        }
        noted.store(written, Ordering::Relaxed);
        (&self.file).write_all(format!("{part} {written}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_in_place_of_a_journal_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(State::read(&path).is_none()));
        let refused = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(
            refused,
            Ok(true),
            "reading a FIFO as a journal blocked or succeeded"
        );
    }

    #[test]
    fn notes_read_back_as_the_bytes_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let journal = Journal::create(&path, Some("\"abc-2\""), 10 << 20, 4 << 20).unwrap();
        journal.note(0, 1 << 20, false).unwrap();
        journal.note(0, (1 << 20) + 5, false).unwrap(); // too soon: not written
        journal.note(2, 2 << 20, true).unwrap();
        journal.note(0, 3 << 20, false).unwrap();
        let state = State::read(&path).unwrap();
        assert_eq!(state.held, vec![3 << 20, 0, 2 << 20]);
        assert!(state.is_for(Some("\"abc-2\""), 10 << 20));
        assert!(!state.is_for(Some("\"other\""), 10 << 20));
        assert_eq!(state.held_total(), 5 << 20);

        let reopened = Journal::reopen(&path, &state).unwrap();
        reopened.note(1, 4 << 20, true).unwrap();
        assert_eq!(State::read(&path).unwrap().held, vec![3 << 20, 4 << 20, 2 << 20]);
    }

    #[test]
    fn a_torn_last_line_is_ignored_but_garbage_is_refused() {
        let base = "ursa-journal 1 100 40 =\"e\"\n0 40\n";
        assert_eq!(State::parse(&format!("{base}1 3")).unwrap().held, vec![40, 0, 0]);
        assert_eq!(
            State::parse(&format!("{base}1 3\n")).unwrap().held,
            vec![40, 3, 0]
        );
        assert!(State::parse("ursa-journal 1 100 40 -\n").unwrap().etag.is_none());
        for bad in [
            format!("{base}3 1\n"),  // no such part
            format!("{base}2 21\n"), // more than the part holds
            format!("{base}x y\n"),  // not numbers
            "ursa-journal 2 100 40 -\n".to_string(),
            "ursa-journal 1 100 0 -\n".to_string(),
            "garbage\n".to_string(),
            String::new(),
        ] {
            assert!(State::parse(&bad).is_none(), "{bad:?}");
        }
    }
}
