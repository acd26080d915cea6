//! Temporaries on disk: cleaning dead runs' leftovers, finding what a killed run left to
//! continue, and the host name temporaries carry.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;

use super::to_py;
use crate::error::Error;
use crate::{journal, tempname};

/// Remove this machine's dead processes' temporaries from these directories, except the
/// part files in `keep` (to be adopted) and their journals; returns how many. The GIL is
/// released while a directory is scanned, and Ctrl+C is heard between directories.
#[pyfunction]
#[pyo3(signature = (dirs, keep = Vec::new()))]
pub(super) fn clean_stale(py: Python<'_>, dirs: Vec<PathBuf>, keep: Vec<PathBuf>) -> PyResult<usize> {
    let keep: HashSet<PathBuf> = keep.into_iter().collect();
    let mut removed = 0;
    for dir in dirs {
        removed += py
            .detach(|| tempname::clean_stale(&dir, &keep))
            .map_err(|e| to_py(Error::io(&format!("cleaning {}", dir.display()), &e)))?;
        py.check_signals()?;
    }
    Ok(removed)
}

/// A dead run's temporary that could be continued: (final path, temporary, etag, size,
/// bytes held).
type Resumable = (PathBuf, PathBuf, Option<String>, u64, u64);

fn resumable_in(dir: &Path) -> std::io::Result<Vec<Resumable>> {
    let mut found = Vec::new();
    for (path, temp) in tempname::stale_in(dir)? {
        if temp.tag != tempname::Tag::Part {
            continue;
        }
        let Some(state) =
            tempname::retagged(&path, tempname::Tag::Journal).and_then(|j| journal::State::read(&j))
        else {
            continue;
        };
        let held = state.held_total();
        found.push((dir.join(&temp.final_name), path, state.etag, state.size, held));
    }
    Ok(found)
}

/// The stages of directory assets that this machine's dead processes left in these
/// directories: (final directory, stage).
#[pyfunction]
pub(super) fn find_stages(py: Python<'_>, dirs: Vec<PathBuf>) -> PyResult<Vec<(PathBuf, PathBuf)>> {
    let mut found = Vec::new();
    for dir in dirs {
        let stale = py
            .detach(|| tempname::stale_in(&dir))
            .map_err(|e| to_py(Error::io(&format!("reading {}", dir.display()), &e)))?;
        py.check_signals()?;
        for (path, temp) in stale {
            if temp.tag == tempname::Tag::Stage {
                found.push((dir.join(&temp.final_name), path));
            }
        }
    }
    Ok(found)
}

/// The part files in these directories that this machine's dead processes left with a
/// readable journal. Nothing is claimed here: the engine claims one when it starts.
#[pyfunction]
pub(super) fn find_resumable(py: Python<'_>, dirs: Vec<PathBuf>) -> PyResult<Vec<Resumable>> {
    let mut found = Vec::new();
    for dir in dirs {
        let here = py
            .detach(|| resumable_in(&dir))
            .map_err(|e| to_py(Error::io(&format!("reading {}", dir.display()), &e)))?;
        found.extend(here);
        py.check_signals()?;
    }
    Ok(found)
}

/// This machine's name as temporaries carry it.
#[pyfunction]
pub(super) fn host_name() -> &'static str {
    tempname::host()
}
