//! The one naming pattern for everything ursa writes before it is complete:
//! `.<final name>.ursa-<pid>-<random>.<tag>` in the final directory. The embedded pid
//! lets a later run tell a killed run's leftovers (safe to remove) from a live one's.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use rand::Rng;

const MARK: &str = ".ursa-";

/// What a temporary holds: a file being written, a directory asset being staged, or a
/// replaced asset on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Part,
    Stage,
    Trash,
}

impl Tag {
    fn as_str(self) -> &'static str {
        match self {
            Tag::Part => "part",
            Tag::Stage => "stage",
            Tag::Trash => "trash",
        }
    }
}

/// A fresh temporary name beside `final_path`.
pub fn sibling(final_path: &Path, tag: Tag) -> PathBuf {
    let name = final_path
        .file_name()
        .unwrap_or(OsStr::new("object"))
        .to_string_lossy();
    let token: u64 = rand::rng().random();
    let pid = std::process::id();
    final_path.with_file_name(format!(".{name}{MARK}{pid}-{token:016x}.{}", tag.as_str()))
}

/// The pid that owns `file_name`, if it follows the pattern.
pub fn owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(MARK)?;
    let (pid, token_tag) = tail.split_once('-')?;
    let (token, tag) = token_tag.split_once('.')?;
    let known_tag = ["part", "stage", "trash"].contains(&tag);
    let hex = token.len() == 16 && token.bytes().all(|b| b.is_ascii_hexdigit());
    (known_tag && hex).then(|| pid.parse().ok()).flatten()
}

/// Whether a process with this pid exists (EPERM means it does, owned by someone else).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Remove the temporaries in `dir` left by processes that no longer exist. Never follows
/// symlinks and never touches a live process's temporaries. Returns how many were removed.
pub fn clean_stale(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_their_owner() {
        for tag in [Tag::Part, Tag::Stage, Tag::Trash] {
            let p = sibling(Path::new("/d/eeg.zarr"), tag);
            assert_eq!(p.parent(), Some(Path::new("/d")));
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(".eeg.zarr.ursa-"), "{name}");
            assert_eq!(owner(name), Some(std::process::id()));
        }
        assert_ne!(
            sibling(Path::new("a"), Tag::Part),
            sibling(Path::new("a"), Tag::Part)
        );
    }

    #[test]
    fn ordinary_names_have_no_owner() {
        for name in [
            "seg-001.bin",
            ".hidden",
            ".x.ursa-12-zz.part",
            ".x.ursa-1-0123456789abcdef.tmp",
        ] {
            assert_eq!(owner(name), None, "{name}");
        }
    }

    #[test]
    fn cleans_only_dead_owners_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let live = sibling(&dir.path().join("a.bin"), Tag::Part);
        std::fs::write(&live, b"x").unwrap();
        // pid_max on Linux is at most 2^22, so this pid cannot exist.
        let dead = dir.path().join(".b.bin.ursa-99999999-0123456789abcdef.part");
        std::fs::write(&dead, b"x").unwrap();
        let dead_stage = dir.path().join(".c.zarr.ursa-99999999-0123456789abcdef.stage");
        std::fs::create_dir(&dead_stage).unwrap();
        std::fs::write(dead_stage.join("zarr.json"), b"{}").unwrap();
        let user = dir.path().join("keep.bin");
        std::fs::write(&user, b"x").unwrap();

        assert_eq!(clean_stale(dir.path()).unwrap(), 2);
        assert!(live.exists() && user.exists());
        assert!(!dead.exists() && !dead_stage.exists());
    }
}
