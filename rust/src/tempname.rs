//! The one naming pattern for everything ursa writes before it is complete:
//! `.<final name>.ursa-<host>-<pid>-<random>.<tag>` in the final directory. The host and
//! pid let a later run tell a killed run's leftovers on this machine (safe to remove or
//! adopt) from a live run's, and from another machine's on a shared filesystem (never
//! touched: its pids mean nothing here).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand::Rng;

const MARK: &str = ".ursa-";

/// What a temporary holds: a file being written (and the journal of its progress), a
/// directory asset being staged, or a replaced asset on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Part,
    Journal,
    Stage,
    Trash,
}

impl Tag {
    fn as_str(self) -> &'static str {
        match self {
            Tag::Part => "part",
            Tag::Journal => "journal",
            Tag::Stage => "stage",
            Tag::Trash => "trash",
        }
    }

    fn parse(text: &str) -> Option<Tag> {
        [Tag::Part, Tag::Journal, Tag::Stage, Tag::Trash]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// This machine's name as it appears in temporaries: letters, digits and `-` only (so
/// the name parses back unambiguously), at most 63 characters, `host` if it has none.
pub fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let raw = if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            String::new()
        };
        sanitize_host(&raw)
    })
}

fn sanitize_host(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .take(63)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "host".to_string()
    } else {
        clean
    }
}

/// A fresh temporary name beside `final_path`.
pub fn sibling(final_path: &Path, tag: Tag) -> PathBuf {
    let token: u64 = rand::rng().random();
    named(final_path, tag, host(), std::process::id(), token)
}

/// The temporary `final_path` would get with these parts (a journal shares its file's).
fn named(final_path: &Path, tag: Tag, host: &str, pid: u32, token: u64) -> PathBuf {
    let name = final_path
        .file_name()
        .unwrap_or(OsStr::new("object"))
        .to_string_lossy();
    final_path.with_file_name(format!(".{name}{MARK}{host}-{pid}-{token:016x}.{}", tag.as_str()))
}

/// The same temporary with another tag (a part file's journal, and back).
pub fn retagged(temp: &Path, tag: Tag) -> Option<PathBuf> {
    let name = Temp::parse(temp.file_name()?.to_str()?)?;
    let token = u64::from_str_radix(&name.token, 16).ok()?;
    let final_path = temp.with_file_name(&name.final_name);
    Some(named(&final_path, tag, &name.host, name.pid, token))
}

/// A name that follows the pattern, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temp {
    pub final_name: String,
    pub host: String,
    pub pid: u32,
    pub token: String,
    pub tag: Tag,
}

impl Temp {
    pub fn parse(file_name: &str) -> Option<Temp> {
        let rest = file_name.strip_prefix('.')?;
        let (final_name, tail) = rest.rsplit_once(MARK)?;
        let (owner, tag) = tail.split_once('.')?;
        let (owner, token) = owner.rsplit_once('-')?;
        let (host, pid) = owner.rsplit_once('-')?;
        let hex = token.len() == 16 && token.bytes().all(|b| b.is_ascii_hexdigit());
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !hex || !host_ok || final_name.is_empty() {
            return None;
        }
        Some(Temp {
            final_name: final_name.to_string(),
            host: host.to_string(),
            pid: pid.parse().ok()?,
            token: token.to_string(),
            tag: Tag::parse(tag)?,
        })
    }

    /// Left by a process of this machine that no longer runs: ours to clean or adopt.
    pub fn is_stale_here(&self) -> bool {
        self.host == host() && !pid_alive(self.pid)
    }
}

/// The pid that owns `file_name`, if it follows the pattern (whatever its host).
pub fn owner(file_name: &str) -> Option<u32> {
    Temp::parse(file_name).map(|t| t.pid)
}

/// Whether a process with this pid exists (EPERM means it does, owned by someone else).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This machine's dead processes' temporaries in `dir` (path and parsed name).
pub fn stale_in(dir: &Path) -> io::Result<Vec<(PathBuf, Temp)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(temp) = name.to_str().and_then(Temp::parse) else {
            continue;
        };
        if temp.is_stale_here() {
            found.push((entry.path(), temp));
        }
    }
    Ok(found)
}

/// Remove the temporaries in `dir` left by this machine's processes that no longer exist,
/// except those in `keep` (part files about to be adopted; their journals stay with them).
/// Never follows symlinks; never touches a live process's temporaries or another
/// machine's. Returns how many were removed.
pub fn clean_stale(dir: &Path, keep: &HashSet<PathBuf>) -> io::Result<usize> {
    let mut removed = 0;
    for (path, temp) in stale_in(dir)? {
        let kept_part = match temp.tag {
            Tag::Journal => retagged(&path, Tag::Part).is_some_and(|p| keep.contains(&p)),
            _ => keep.contains(&path),
        };
        if kept_part {
            continue;
        }
        let is_dir = std::fs::symlink_metadata(&path).map(|m| m.is_dir());
        let result = match is_dir {
            Ok(true) => std::fs::remove_dir_all(&path),
            Ok(false) => std::fs::remove_file(&path),
            Err(e) => Err(e),
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

    /// pid_max on Linux is at most 2^22, so this pid cannot exist.
    const DEAD: u32 = 99_999_999;

    #[test]
    fn names_round_trip_to_their_owner() {
        for tag in [Tag::Part, Tag::Journal, Tag::Stage, Tag::Trash] {
            let p = sibling(Path::new("/d/eeg.zarr"), tag);
            assert_eq!(p.parent(), Some(Path::new("/d")));
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(&format!(".eeg.zarr.ursa-{}-", host())), "{name}");
            let temp = Temp::parse(name).unwrap();
            assert_eq!(
                (temp.pid, temp.tag, temp.host.as_str()),
                (std::process::id(), tag, host())
            );
            assert_eq!(temp.final_name, "eeg.zarr");
        }
        assert_ne!(
            sibling(Path::new("a"), Tag::Part),
            sibling(Path::new("a"), Tag::Part)
        );
        let part = sibling(Path::new("/d/a-b.c"), Tag::Part);
        let journal = retagged(&part, Tag::Journal).unwrap();
        assert!(journal.to_str().unwrap().ends_with(".journal"));
        assert_eq!(retagged(&journal, Tag::Part).unwrap(), part);
    }

    #[test]
    fn hosts_are_reduced_to_a_parseable_name() {
        assert_eq!(sanitize_host("node-1.cluster.local"), "node-1_cluster_local");
        assert_eq!(sanitize_host(""), "host");
        let odd = named(Path::new("x.bin"), Tag::Part, &sanitize_host("a.ursa-b-1"), 7, 1);
        let temp = Temp::parse(odd.to_str().unwrap()).unwrap();
        assert_eq!((temp.final_name.as_str(), temp.pid), ("x.bin", 7));
    }

    #[test]
    fn ordinary_names_have_no_owner() {
        for name in [
            "seg-001.bin",
            ".hidden",
            ".x.ursa-12-zz.part",
            ".x.ursa-h-1-0123456789abcdef.tmp",
            // the first release's names (no host): never this machine's to judge
            ".x.ursa-12-0123456789abcdef.part",
        ] {
            assert_eq!(owner(name), None, "{name}");
        }
    }

    #[test]
    fn cleans_only_this_hosts_dead_owners_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let here = host();
        let live = sibling(&dir.path().join("a.bin"), Tag::Part);
        std::fs::write(&live, b"x").unwrap();
        let dead = dir
            .path()
            .join(format!(".b.bin.ursa-{here}-{DEAD}-0123456789abcdef.part"));
        std::fs::write(&dead, b"x").unwrap();
        let dead_stage = dir
            .path()
            .join(format!(".c.zarr.ursa-{here}-{DEAD}-0123456789abcdef.stage"));
        std::fs::create_dir(&dead_stage).unwrap();
        std::fs::write(dead_stage.join("zarr.json"), b"{}").unwrap();
        let elsewhere = dir
            .path()
            .join(format!(".d.bin.ursa-not-{here}-{DEAD}-0123456789abcdef.part"));
        std::fs::write(&elsewhere, b"x").unwrap();
        let kept = dir
            .path()
            .join(format!(".e.bin.ursa-{here}-{DEAD}-0123456789abcdef.part"));
        let kept_journal = retagged(&kept, Tag::Journal).unwrap();
        std::fs::write(&kept, b"x").unwrap();
        std::fs::write(&kept_journal, b"x").unwrap();
        let user = dir.path().join("keep.bin");
        std::fs::write(&user, b"x").unwrap();

        let keep = HashSet::from([kept.clone()]);
        assert_eq!(clean_stale(dir.path(), &keep).unwrap(), 2);
        assert!(live.exists() && user.exists() && elsewhere.exists());
        assert!(kept.exists() && kept_journal.exists());
        assert!(!dead.exists() && !dead_stage.exists());
    }
}
