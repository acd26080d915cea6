//! Records of what a download published, so that a later `resume=True` run can tell a
//! file that is still exactly what was downloaded from one changed since. Each download
//! appends JSON lines to its own file under `<dest>/.ursa/records/` (no locking: many
//! downloads may write into one dest at once); `ursa.records` reads them all at plan time.
//!
//! A line holds the object (key, ETag, size) and the published file's identity taken
//! with fstat after its last write and its rename: inode, size, mtime and ctime in ns.
//! Any later write to the file changes its ctime (which no user call can set back), so a
//! record stops matching a file edited after download, even one of the same size.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One download's record file, opened on the first record.
#[derive(Debug)]
pub struct RecordLog {
    root: PathBuf,
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl RecordLog {
    /// Records for files under `root` (the download's dest), appended to `path`.
    pub fn new(root: PathBuf, path: PathBuf) -> RecordLog {
        RecordLog {
            root,
            path,
            file: Mutex::new(None),
        }
    }

    /// Record that `file` now holds object `key` (`etag`) at `dest`. One append each
    /// (atomic for O_APPEND), so a killed run leaves whole lines, at most one torn.
    pub fn note(&self, dest: &Path, key: &str, etag: Option<&str>, file: &File) -> io::Result<()> {
        let Some(rel) = dest.strip_prefix(&self.root).ok().and_then(Path::to_str) else {
            return Ok(()); // not under dest, or not UTF-8: it simply has no record
        };
        let meta = file.metadata()?;
        let line = format!(
            "{{\"path\":{},\"key\":{},\"etag\":{},\"size\":{},\"ino\":{},\"mtime_ns\":{},\"ctime_ns\":{}}}\n",
            json_str(rel),
            json_str(key),
            etag.map_or("null".to_string(), json_str),
            meta.len(),
            meta.ino(),
            nanos(meta.mtime(), meta.mtime_nsec()),
            nanos(meta.ctime(), meta.ctime_nsec()),
        );
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let opened = OpenOptions::new()
                .append(true)
                .create(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o644)
                .open(&self.path)?;
            *slot = Some(opened);
        }
        let out = slot.as_mut().expect("opened above");
        out.write_all(line.as_bytes())
    }
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// A JSON string literal.
fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_the_object_and_the_files_identity() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::new(dir.path().to_path_buf(), dir.path().join(".ursa/records/r.jsonl"));
        let dest = dir.path().join("a \"q\"\\b\n.bin");
        std::fs::write(&dest, b"abc").unwrap();
        let file = File::open(&dest).unwrap();
        log.note(&dest, "k/a", Some("\"e\""), &file).unwrap();
        log.note(Path::new("/elsewhere/x"), "k/x", None, &file).unwrap();
        let text = std::fs::read_to_string(dir.path().join(".ursa/records/r.jsonl")).unwrap();
        let ino = file.metadata().unwrap().ino();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("{\"path\":\"a \\\"q\\\"\\\\b\\u000a.bin\",\"key\":\"k/a\",\"etag\":\"\\\"e\\\"\",\"size\":3,"), "{text}");
        assert!(text.contains(&format!("\"ino\":{ino},")), "{text}");
    }
}
