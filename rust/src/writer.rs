//! Putting bytes on disk without ever exposing a partial result: files are written to a
//! temporary beside their final name and published by rename; directory assets are
//! staged whole and published as one directory. Nothing follows a planted symlink.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::journal::{Journal, State};
use crate::tempname::{self, Tag};

/// Files at least this large get their space reserved before the first byte is written.
const RESERVE_FROM: u64 = 1 << 20;

/// What `fallocate`'s result means for a reservation.
#[derive(Debug, PartialEq, Eq)]
enum Reserve {
    Done,
    /// The filesystem cannot reserve (NFSv3, older ZFS, …): only size the file, sparse.
    /// Never glibc's `posix_fallocate` emulation, which writes a byte into every block.
    SizeOnly,
    /// A real failure, a full disk (`ENOSPC`) above all: reported before any byte moves.
    Fail,
}

fn reserve_outcome(errno: i32) -> Reserve {
    match errno {
        0 => Reserve::Done,
        libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL => Reserve::SizeOnly,
        _ => Reserve::Fail,
    }
}

/// A file being written, with the journal of its progress if it is large. Removed on
/// drop unless published (or owned by a stage).
#[derive(Debug)]
pub struct TempFile {
    pub file: File,
    path: PathBuf,
    keep: AtomicBool,
    pub journal: Option<Journal>,
}

impl TempFile {
    /// A new temporary for `final_path` (or, inside a stage, the file itself), with its
    /// space reserved so a full disk fails now rather than half-way.
    pub fn create(final_path: &Path, size: u64, staged: bool) -> Result<TempFile> {
        let path = if staged {
            final_path.to_path_buf()
        } else {
            tempname::sibling(final_path, Tag::Part)
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true) // O_EXCL: never opens through a symlink
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&path)
            .map_err(|e| Error::io(&format!("creating {}", path.display()), &e))?;
        let temp = TempFile {
            file,
            path,
            keep: AtomicBool::new(staged),
            journal: None,
        };
        temp.reserve(size)?;
        Ok(temp)
    }

    /// Keep a journal beside the temporary, so that a run killed mid-object can be
    /// continued by a later one (`adopt`).
    pub fn journaled(mut self, etag: Option<&str>, size: u64, part_size: u64) -> Result<TempFile> {
        if let Some(path) = tempname::retagged(&self.path, Tag::Journal) {
            let journal = Journal::create(&path, etag, size, part_size)
                .map_err(|e| Error::io(&format!("creating {}", path.display()), &e))?;
            self.journal = Some(journal);
        }
        Ok(self)
    }

    /// Take over `candidate`, a dead run's temporary for `final_path`, if its journal
    /// says it holds this object (same ETag and size). The claim is a rename to this
    /// process's own name, so of two runs trying, one wins and the other starts afresh.
    /// `None` (and the candidate gone, if it was claimed) when it cannot be continued.
    pub fn adopt(
        final_path: &Path,
        candidate: &Path,
        etag: Option<&str>,
        size: u64,
    ) -> Option<(TempFile, State)> {
        let theirs = tempname::retagged(candidate, Tag::Journal)?;
        let path = tempname::sibling(final_path, Tag::Part);
        let journal_path = tempname::retagged(&path, Tag::Journal)?;
        std::fs::rename(candidate, &path).ok()?;
        // Claimed but unusable: neither trusted nor left for anyone else.
        let discard = || {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&journal_path);
            None
        };
        if std::fs::rename(&theirs, &journal_path).is_err() {
            return discard(); // no journal: nothing says what the bytes are
        }
        let state = match State::read(&journal_path) {
            Some(state) if state.is_for(etag, size) => state,
            _ => return discard(), // another object's, or a garbled journal
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let file = match file {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file() && m.len() == size) => file,
            _ => return discard(),
        };
        let Ok(journal) = Journal::reopen(&journal_path, &state) else {
            return discard();
        };
        let temp = TempFile {
            file,
            path,
            keep: AtomicBool::new(false),
            journal: Some(journal),
        };
        Some((temp, state))
    }

    fn reserve(&self, size: u64) -> Result<()> {
        // Small files are written in one go; reserving first would only add a syscall.
        if size < RESERVE_FROM {
            return Ok(());
        }
        let len = libc::off_t::try_from(size)
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "object too large"))?;
        // SAFETY: fallocate on an fd we own, mode 0: allocate [0, len) and extend the file.
        let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&self.file), 0, 0, len) };
        let errno = if rc == 0 {
            0
        } else {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        };
        match reserve_outcome(errno) {
            Reserve::Done => Ok(()),
            Reserve::SizeOnly => self
                .file
                .set_len(size)
                .map_err(|e| Error::io(&format!("sizing {}", self.path.display()), &e)),
            Reserve::Fail => Err(Error::io(
                &format!("reserving {size} bytes for {}", self.path.display()),
                &io::Error::from_raw_os_error(errno),
            )),
        }
    }

    /// Move the finished file to `final_path`. Without `overwrite`, an existing entry
    /// there (a file, a directory, a symlink, even a dangling one) is never replaced.
    /// `durable`: the bytes reach the disk before the rename and the rename after it, so
    /// a power loss leaves the old entry or the complete new file.
    pub fn publish(&self, final_path: &Path, overwrite: bool, durable: bool) -> Result<()> {
        if !self.keep.load(Ordering::Acquire) {
            if durable {
                self.sync()?;
            }
            rename(&self.path, final_path, overwrite)?;
            self.keep.store(true, Ordering::Release);
            self.remove_journal();
            if durable {
                sync_parent(final_path)?;
            }
        }
        Ok(())
    }

    /// fsync the file's bytes (a staged file: before its stage is published).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(&format!("syncing {}", self.path.display()), &e))
    }

    fn remove_journal(&self) {
        if self.journal.is_some() {
            if let Some(path) = tempname::retagged(&self.path, Tag::Journal) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
            self.remove_journal();
        }
    }
}

/// A directory asset being assembled under a temporary name. Removed on drop unless
/// published.
#[derive(Debug)]
pub struct Stage {
    pub path: PathBuf,
    published: bool,
}

impl Stage {
    pub fn create(final_dir: &Path) -> Result<Stage> {
        let path = tempname::sibling(final_dir, Tag::Stage);
        std::fs::create_dir(&path).map_err(|e| Error::io(&format!("creating {}", path.display()), &e))?;
        Ok(Stage {
            path,
            published: false,
        })
    }

    /// Take over `candidate`, a dead run's stage for `final_dir` (a rename to this
    /// process's own name: of two runs trying, one wins). `None` if it is gone.
    pub fn adopt(final_dir: &Path, candidate: &Path) -> Option<Stage> {
        let path = tempname::sibling(final_dir, Tag::Stage);
        std::fs::rename(candidate, &path).ok()?;
        let stage = Stage {
            path,
            published: false,
        };
        let is_dir = std::fs::symlink_metadata(&stage.path).is_ok_and(|m| m.is_dir());
        is_dir.then_some(stage) // a non-directory is removed with the dropped Stage
    }

    /// Where a file of the asset is written while staged.
    pub fn staged_path(&self, final_dir: &Path, final_file: &Path) -> PathBuf {
        match final_file.strip_prefix(final_dir) {
            Ok(rel) => self.path.join(rel),
            Err(_) => final_file.to_path_buf(),
        }
    }

    /// Put the complete directory in place. With `overwrite`, an existing entry is moved
    /// aside first and removed after, so the asset is replaced whole, never merged.
    /// `durable` (its files already synced): every directory of the stage is synced
    /// before the rename, the parent after it.
    pub fn publish(mut self, final_dir: &Path, overwrite: bool, durable: bool) -> Result<()> {
        if durable {
            sync_tree(&self.path).map_err(|e| Error::io(&format!("syncing {}", self.path.display()), &e))?;
        }
        if overwrite && std::fs::symlink_metadata(final_dir).is_ok() {
            let trash = tempname::sibling(final_dir, Tag::Trash);
            std::fs::rename(final_dir, &trash)
                .map_err(|e| Error::io(&format!("moving aside {}", final_dir.display()), &e))?;
            rename(&self.path, final_dir, false)?;
            remove_any(&trash).map_err(|e| Error::io(&format!("removing {}", trash.display()), &e))?;
        } else {
            rename(&self.path, final_dir, overwrite)?;
        }
        self.published = true;
        if durable {
            sync_parent(final_dir)?;
        }
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// fsync the directory holding `path`, so a rename into it survives a power loss.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent).map_err(|e| Error::io(&format!("syncing directory {}", parent.display()), &e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsync `dir` and every directory below it (their entries: the files staged there).
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

fn remove_any(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// rename(2), or with `overwrite == false` a rename that fails if the target exists.
fn rename(from: &Path, to: &Path, overwrite: bool) -> Result<()> {
    let result = if overwrite {
        std::fs::rename(from, to)
    } else {
        rename_noreplace(from, to)
    };
    result.map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::new(
            ErrorKind::FileExists,
            format!(
                "{} appeared after planning; pass overwrite=True to replace it",
                to.display()
            ),
        ),
        _ => Error::io(&format!("publishing {}", to.display()), &e),
    })
}

#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from_c = CString::new(from.as_os_str().as_bytes())?;
    let to_c = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 has no other preconditions.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => fallback_noreplace(from, to),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    fallback_noreplace(from, to)
}

/// A no-replace rename for filesystems without `RENAME_NOREPLACE`. A file: link(2), which
/// refuses to replace, then unlink the temporary. A directory: claim the name with
/// mkdir(2) (which fails if anything is there), then rename the stage over that empty
/// directory — rename(2) replaces an empty directory atomically, so the asset still
/// appears whole. If someone writes into the claimed directory first, it is left to them.
fn fallback_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    if !std::fs::symlink_metadata(from)?.is_dir() {
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    std::fs::create_dir(to)?;
    std::fs::rename(from, to).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => io::ErrorKind::AlreadyExists.into(),
        _ => {
            let _ = std::fs::remove_dir(to); // our empty claim
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_filesystem_without_fallocate_gets_a_sparse_file_and_a_full_disk_fails() {
        assert_eq!(reserve_outcome(0), Reserve::Done);
        for unsupported in [libc::EOPNOTSUPP, libc::ENOSYS, libc::EINVAL] {
            assert_eq!(
                reserve_outcome(unsupported),
                Reserve::SizeOnly,
                "errno {unsupported}"
            );
        }
        for real in [libc::ENOSPC, libc::EIO, libc::EBADF, libc::EFBIG] {
            assert_eq!(reserve_outcome(real), Reserve::Fail, "errno {real}");
        }
        // Where fallocate works the file has its final size and its blocks before a write.
        let dir = tempfile::tempdir().unwrap();
        let t = TempFile::create(&dir.path().join("big"), 4 << 20, false).unwrap();
        let meta = t.file.metadata().unwrap();
        assert_eq!(meta.len(), 4 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 >= 4 << 20,
            "not reserved: {} blocks",
            meta.blocks()
        );
    }

    #[test]
    fn durable_publishing_puts_the_same_bytes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.bin");
        let t = TempFile::create(&target, 3, false).unwrap();
        t.file.write_all_at(b"abc", 0).unwrap();
        t.publish(&target, false, true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");

        let asset = dir.path().join("eeg.zarr");
        let stage = Stage::create(&asset).unwrap();
        std::fs::create_dir(stage.path.join("c")).unwrap();
        std::fs::write(stage.path.join("c/0"), b"chunk").unwrap();
        stage.publish(&asset, false, true).unwrap();
        assert_eq!(std::fs::read(asset.join("c/0")).unwrap(), b"chunk");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "stage left behind"
        );
    }

    #[test]
    fn publishes_a_file_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.bin");
        let t = TempFile::create(&target, 3, false).unwrap();
        t.file.write_all_at(b"abc", 0).unwrap();
        assert!(!target.exists(), "visible before publishing");
        t.publish(&target, false, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");

        let t = TempFile::create(&target, 1, false).unwrap();
        t.file.write_all_at(b"z", 0).unwrap();
        assert_eq!(
            t.publish(&target, false, false).unwrap_err().kind,
            ErrorKind::FileExists
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        drop(t);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary left behind"
        );
    }

    #[test]
    fn never_replaces_a_dangling_symlink_without_consent() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.bin");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &target).unwrap();
        let t = TempFile::create(&target, 0, false).unwrap();
        assert_eq!(
            t.publish(&target, false, false).unwrap_err().kind,
            ErrorKind::FileExists
        );
        assert!(!dir.path().join("nowhere").exists(), "followed the symlink");
        let t = TempFile::create(&target, 0, false).unwrap();
        t.publish(&target, true, false).unwrap();
        assert!(!std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn never_writes_through_a_symlink_at_the_temporary_path() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        let planted = dir.path().join("inside-a-stage");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = TempFile::create(&planted, 4, true).unwrap_err();
        assert_eq!(err.kind, ErrorKind::FileExists);
        assert!(!victim.exists(), "followed the symlink");
        assert!(std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_staged_directory_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let asset = dir.path().join("eeg.zarr");
        let stage = Stage::create(&asset).unwrap();
        let inner = stage.staged_path(&asset, &asset.join("zarr.json"));
        std::fs::write(&inner, b"{}").unwrap();
        assert!(!asset.exists());
        drop(stage);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "stage not cleaned"
        );

        std::fs::create_dir(&asset).unwrap();
        std::fs::write(asset.join("old"), b"old").unwrap();
        let stage = Stage::create(&asset).unwrap();
        std::fs::write(stage.staged_path(&asset, &asset.join("new")), b"new").unwrap();
        let again = Stage::create(&asset).unwrap();
        assert_eq!(
            again.publish(&asset, false, false).unwrap_err().kind,
            ErrorKind::FileExists
        );
        stage.publish(&asset, true, false).unwrap();
        assert!(
            asset.join("new").exists() && !asset.join("old").exists(),
            "merged, not replaced"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "trash left behind"
        );
    }

    #[test]
    fn a_dead_runs_temporary_is_adopted_only_for_the_same_object() {
        use crate::journal::Journal;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("big.bin");
        let size = 10u64;
        // What a killed run leaves: a part file of the object's size and its journal.
        let leave = |etag: &str, len: u64| -> PathBuf {
            let part = dir.path().join(format!(
                ".big.bin.ursa-h-99999999-{:016x}.part",
                rand::random::<u64>()
            ));
            std::fs::write(&part, vec![7u8; len as usize]).unwrap();
            let journal = tempname::retagged(&part, Tag::Journal).unwrap();
            Journal::create(&journal, Some(etag), size, 4)
                .unwrap()
                .note(0, 4, true)
                .unwrap();
            part
        };

        let part = leave("\"e1\"", size);
        let (temp, state) = TempFile::adopt(&target, &part, Some("\"e1\""), size).unwrap();
        assert_eq!(state.held, vec![4, 0, 0]);
        assert!(!part.exists(), "not claimed");
        assert!(temp.journal.is_some());
        temp.publish(&target, false, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), vec![7u8; 10]);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("big.bin")],
            "journal left behind"
        );

        // Another ETag, or a part file of the wrong size: claimed and discarded, never used.
        for (etag, len) in [("\"e2\"", size), ("\"e1\"", size - 1)] {
            let part = leave(etag, len);
            assert!(TempFile::adopt(&target, &part, Some("\"e1\""), size).is_none());
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "not discarded");
        }
        // Gone (another run claimed it first): nothing to adopt.
        assert!(TempFile::adopt(
            &target,
            &dir.path().join(".big.bin.ursa-h-1-0000000000000000.part"),
            None,
            size
        )
        .is_none());
    }

    #[test]
    fn without_rename_noreplace_a_directory_still_publishes_whole_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let asset = dir.path().join("eeg.zarr");
        let stage = Stage::create(&asset).unwrap();
        std::fs::create_dir(stage.path.join("c")).unwrap();
        std::fs::write(stage.path.join("c/0"), b"chunk").unwrap();
        fallback_noreplace(&stage.path, &asset).unwrap();
        assert_eq!(std::fs::read(asset.join("c/0")).unwrap(), b"chunk");
        assert!(!stage.path.exists());

        // Anything already there (a directory, even an empty one, or a file) stays.
        for occupied in ["dir", "empty", "file"] {
            let taken = dir.path().join(format!("{occupied}.zarr"));
            match occupied {
                "dir" => {
                    std::fs::create_dir(&taken).unwrap();
                    std::fs::write(taken.join("theirs"), b"t").unwrap();
                }
                "empty" => std::fs::create_dir(&taken).unwrap(),
                _ => std::fs::write(&taken, b"t").unwrap(),
            }
            let stage = Stage::create(&taken).unwrap();
            std::fs::write(stage.path.join("ours"), b"o").unwrap();
            let err = fallback_noreplace(&stage.path, &taken).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{occupied}");
            assert!(stage.path.join("ours").exists(), "{occupied}: the stage was lost");
            assert!(!taken.join("ours").exists(), "{occupied}: merged");
        }

        // A file falls back to link + unlink, which refuses to replace as well.
        let temp = dir.path().join(".t");
        std::fs::write(&temp, b"new").unwrap();
        let file = dir.path().join("file.zarr");
        assert_eq!(
            fallback_noreplace(&temp, &file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"t");
    }
}
