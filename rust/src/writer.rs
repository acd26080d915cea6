//! Putting bytes on disk without ever exposing a partial result: files are written to a
//! temporary beside their final name and published by rename; directory assets are
//! staged whole and published as one directory. Nothing follows a planted symlink.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::tempname::{self, Tag};

/// Files at least this large get their space reserved before the first byte is written.
const RESERVE_FROM: u64 = 1 << 20;

/// A file being written. Removed on drop unless published (or owned by a stage).
#[derive(Debug)]
pub struct TempFile {
    pub file: File,
    path: PathBuf,
    keep: AtomicBool,
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
        };
        temp.reserve(size)?;
        Ok(temp)
    }

    fn reserve(&self, size: u64) -> Result<()> {
        // Small files are written in one go; reserving first would only add a syscall.
        if size < RESERVE_FROM {
            return Ok(());
        }
        let len = libc::off_t::try_from(size)
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "object too large"))?;
        // SAFETY: fallocate on an fd we own, within the file's new length.
        let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&self.file), 0, len) };
        match rc {
            0 => Ok(()),
            libc::EOPNOTSUPP | libc::EINVAL => self
                .file
                .set_len(size)
                .map_err(|e| Error::io(&format!("sizing {}", self.path.display()), &e)),
            errno => Err(Error::io(
                &format!("reserving {size} bytes for {}", self.path.display()),
                &io::Error::from_raw_os_error(errno),
            )),
        }
    }

    /// Move the finished file to `final_path`. Without `overwrite`, an existing entry
    /// there (a file, a directory, a symlink, even a dangling one) is never replaced.
    pub fn publish(&self, final_path: &Path, overwrite: bool) -> Result<()> {
        if !self.keep.load(Ordering::Acquire) {
            rename(&self.path, final_path, overwrite)?;
            self.keep.store(true, Ordering::Release);
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
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

    /// Where a file of the asset is written while staged.
    pub fn staged_path(&self, final_dir: &Path, final_file: &Path) -> PathBuf {
        match final_file.strip_prefix(final_dir) {
            Ok(rel) => self.path.join(rel),
            Err(_) => final_file.to_path_buf(),
        }
    }

    /// Put the complete directory in place. With `overwrite`, an existing entry is moved
    /// aside first and removed after, so the asset is replaced whole, never merged.
    pub fn publish(mut self, final_dir: &Path, overwrite: bool) -> Result<()> {
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
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; renameat2 has no other preconditions.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: link(2) refuses to replace as well.
        Some(libc::EINVAL) | Some(libc::ENOSYS) if !from_is_dir(&from) => link_then_unlink(&from, &to),
        _ => Err(err),
    }
}

#[cfg(target_os = "linux")]
fn from_is_dir(path: &std::ffi::CStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(path.to_bytes())).is_dir()
}

#[cfg(target_os = "linux")]
fn link_then_unlink(from: &std::ffi::CStr, to: &std::ffi::CStr) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = Path::new(std::ffi::OsStr::from_bytes(from.to_bytes()));
    let to = Path::new(std::ffi::OsStr::from_bytes(to.to_bytes()));
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    if from.is_dir() {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        return std::fs::rename(from, to);
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn publishes_a_file_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.bin");
        let t = TempFile::create(&target, 3, false).unwrap();
        t.file.write_all_at(b"abc", 0).unwrap();
        assert!(!target.exists(), "visible before publishing");
        t.publish(&target, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");

        let t = TempFile::create(&target, 1, false).unwrap();
        t.file.write_all_at(b"z", 0).unwrap();
        assert_eq!(t.publish(&target, false).unwrap_err().kind, ErrorKind::FileExists);
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
        assert_eq!(t.publish(&target, false).unwrap_err().kind, ErrorKind::FileExists);
        assert!(!dir.path().join("nowhere").exists(), "followed the symlink");
        let t = TempFile::create(&target, 0, false).unwrap();
        t.publish(&target, true).unwrap();
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
            again.publish(&asset, false).unwrap_err().kind,
            ErrorKind::FileExists
        );
        stage.publish(&asset, true).unwrap();
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
}
