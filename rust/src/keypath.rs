//! Mapping object keys to relative local paths, refusing anything that could land
//! outside the destination or be misread by the filesystem.

use crate::error::{Error, ErrorKind, Result};

/// The part of `key` below `prefix`, checked to be a safe relative path: non-empty `/`
/// separated segments, none `.` or `..`, no backslash, NUL or control characters.
pub fn relative_key<'a>(prefix: &str, key: &'a str) -> Result<&'a str> {
    let rel = key
        .strip_prefix(prefix)
        .ok_or_else(|| invalid(key, format!("key is not under the prefix {prefix:?}")))?;
    check_relative(rel).map_err(|why| invalid(key, why))?;
    Ok(rel)
}

/// Why `rel` is not a safe relative path, if it is not.
pub fn check_relative(rel: &str) -> std::result::Result<(), String> {
    if rel.is_empty() {
        return Err("the key names the prefix itself, not an object below it".into());
    }
    if rel.starts_with('/') {
        return Err("the key would map to an absolute path".into());
    }
    if let Some(c) = rel.chars().find(|c| *c == '\\' || c.is_control()) {
        return Err(format!("the key contains the character {c:?}"));
    }
    for segment in rel.split('/') {
        match segment {
            "" => return Err("the key has an empty path segment".into()),
            "." | ".." => return Err(format!("the key has a {segment:?} segment and could escape dest")),
            _ => {}
        }
    }
    Ok(())
}

fn invalid(key: &str, why: String) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("unsafe object key: {why}")).with_key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_part_below_the_prefix() {
        assert_eq!(
            relative_key("h/eeg/", "h/eeg/seg-001.bin").unwrap(),
            "seg-001.bin"
        );
        assert_eq!(relative_key("a/x.zarr/", "a/x.zarr/c/0/1").unwrap(), "c/0/1");
    }

    #[test]
    fn rejects_keys_that_escape_or_confuse() {
        for bad in [
            "h/",
            "h//x",
            "h/../x",
            "h/./x",
            "h/a/..",
            "h/a\\b",
            "h/a\0b",
            "h/a\nb",
            "h/a\x7fb",
            "h/x/",
            "h//etc/passwd",
        ] {
            let err = relative_key("h/", bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidInput, "{bad:?} was accepted");
            assert_eq!(err.key.as_deref(), Some(bad));
        }
    }

    #[test]
    fn rejects_keys_outside_the_prefix() {
        assert!(relative_key("h/eeg/", "h/events/x").is_err());
    }

    #[test]
    fn allows_unusual_but_harmless_names() {
        for ok in ["...", "a..b", ".hidden", "sp ace", "ünï", "a/b/c.d"] {
            assert!(check_relative(ok).is_ok(), "{ok:?} was rejected");
        }
    }
}
