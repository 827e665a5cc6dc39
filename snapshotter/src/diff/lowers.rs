//! The merged view of lower directories (overlay format, top first), looked up path by
//! path without materialising it: what the copy backend's diff compares a tree against.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::format::{is_opaque, is_whiteout};
use crate::proc_fd::ShortPath;

pub(crate) struct LowerView<'a> {
    pub lowers: &'a [PathBuf],
}

enum InLower {
    Found(ShortPath),
    /// Hidden here (whiteout, a file over a directory, or an opaque directory above).
    Hidden,
    /// This lower says nothing; look further down.
    Absent,
}

impl LowerView<'_> {
    fn in_lower(lower: &Path, comps: &[&[u8]]) -> InLower {
        let mut p = ShortPath::new(lower);
        let mut opaque_above = false;
        for (i, c) in comps.iter().enumerate() {
            let pushed = p.push(OsStr::from_bytes(c));
            let Ok(md) = pushed.and_then(|()| fs::symlink_metadata(&*p)) else {
                return if opaque_above {
                    InLower::Hidden
                } else {
                    InLower::Absent
                };
            };
            if is_whiteout(&p, &md) {
                return InLower::Hidden;
            }
            let last = i + 1 == comps.len();
            if last {
                return InLower::Found(p);
            }
            if !md.is_dir() {
                return InLower::Hidden;
            }
            opaque_above |= is_opaque(&p);
        }
        InLower::Absent
    }

    /// The lower file that provides `rel` in the merged view.
    pub fn lookup(&self, rel: &[u8]) -> Option<(ShortPath, Metadata)> {
        let comps: Vec<&[u8]> = rel
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for lower in self.lowers {
            match Self::in_lower(lower, &comps) {
                InLower::Found(p) => {
                    let md = fs::symlink_metadata(&*p).ok()?;
                    return Some((p, md));
                }
                InLower::Hidden => return None,
                InLower::Absent => {}
            }
        }
        None
    }

    /// The names in directory `rel` of the merged view.
    pub fn children(&self, rel: &[u8]) -> BTreeSet<Vec<u8>> {
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        let comps: Vec<&[u8]> = rel
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for lower in self.lowers {
            let dir = match Self::in_lower(lower, &comps) {
                InLower::Found(p) => p,
                InLower::Hidden => break,
                InLower::Absent if comps.is_empty() => ShortPath::new(lower),
                InLower::Absent => continue,
            };
            let Ok(md) = fs::symlink_metadata(&*dir) else {
                break;
            };
            if !md.is_dir() {
                break;
            }
            if let Ok(rd) = fs::read_dir(&*dir) {
                for e in rd.flatten() {
                    let name = e.file_name().as_bytes().to_vec();
                    let mut p = ShortPath::new(&dir);
                    if p.push(&e.file_name()).is_err() {
                        continue;
                    }
                    let wh = fs::symlink_metadata(&p)
                        .map(|m| is_whiteout(&p, &m))
                        .unwrap_or(false);
                    if wh {
                        hidden.insert(name);
                    } else if !hidden.contains(&name) {
                        names.insert(name);
                    }
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        names
    }
}

/// Whether `md` (the tree) and `lower` describe the same entry, content included when the
/// metadata cannot tell (same size and whole-second times).
pub(crate) fn same_entry(path: &Path, md: &Metadata, lower: &Path, lmd: &Metadata) -> bool {
    if md.file_type() != lmd.file_type()
        || md.mode() != lmd.mode()
        || md.uid() != lmd.uid()
        || md.gid() != lmd.gid()
    {
        return false;
    }
    if super::layer_xattrs(path).ok() != super::layer_xattrs(lower).ok() {
        return false;
    }
    let ft = md.file_type();
    if ft.is_symlink() {
        return fs::read_link(path).ok() == fs::read_link(lower).ok();
    }
    if ft.is_dir() {
        return md.mtime() == lmd.mtime() && md.mtime_nsec() == lmd.mtime_nsec();
    }
    if !ft.is_file() {
        return md.rdev() == lmd.rdev() && md.mtime() == lmd.mtime();
    }
    // A new hard link to a file changes its link count: both names must be written.
    if md.len() != lmd.len()
        || md.nlink() != lmd.nlink()
        || md.mtime() != lmd.mtime()
        || md.mtime_nsec() != lmd.mtime_nsec()
    {
        return false;
    }
    if md.mtime_nsec() != 0 {
        return true;
    }
    let hash = |p: &Path| -> Option<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        h.update_reader(fs::File::open(p).ok()?).ok()?;
        Some(h.finalize())
    };
    hash(path).is_some() && hash(path) == hash(lower)
}
