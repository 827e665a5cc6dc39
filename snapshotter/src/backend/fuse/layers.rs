//! The stack the FUSE overlay serves: one writable upper directory over read-only lowers
//! (top first), in the overlay format the store keeps: a whiteout is a 0/0 character
//! device (or a zero-size file with `user.overlay.whiteout`), an opaque directory carries
//! `user.overlay.opaque` or `trusted.overlay.opaque`.
//!
//! Layer index 0 is the upper directory, 1.. the lowers. Paths are relative to a layer's
//! root, `""` being the root itself; every lookup uses `lstat` (never follows the last
//! component) and only descends through directories.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Stat, CWD};

use crate::format;

/// The directories of the stack.
#[derive(Debug)]
pub(super) struct Layers {
    /// `[upper, lower 1 (top), …]`.
    pub dirs: Vec<PathBuf>,
    /// Scratch space on the upper's filesystem (copy-up temporaries).
    pub work: PathBuf,
    /// The xattr that marks opaque directories written here.
    pub opaque_xattr: &'static str,
}

pub(super) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether `st` (at `path`) is a whiteout.
pub(super) fn is_whiteout(st: &Stat, path: &Path) -> bool {
    match file_type(st) {
        FileType::CharacterDevice => st.st_rdev == 0,
        FileType::RegularFile if st.st_size == 0 => {
            let mut v = [0u8; 8];
            rustix::fs::lgetxattr(path, format::WHITEOUT_XATTR_USER, &mut v[..]).is_ok()
        }
        _ => false,
    }
}

/// Whether directory `path` is opaque.
pub(super) fn is_opaque(path: &Path) -> bool {
    [format::OPAQUE_XATTR_USER, format::OPAQUE_XATTR_TRUSTED]
        .iter()
        .any(|x| {
            let mut v = [0u8; 8];
            rustix::fs::lgetxattr(path, *x, &mut v[..])
                .is_ok_and(|n| format::is_opaque_value(&v[..n]))
        })
}

/// `lstat` that reads "no such entry" (also through a non-directory) as `None`.
pub(super) fn lstat(path: &Path) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Layers {
    /// `rel` in layer `i`.
    pub fn path(&self, i: usize, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.dirs[i].clone()
        } else {
            self.dirs[i].join(rel)
        }
    }

    /// The layers in which directory `rel` is part of the merged view, top first: the
    /// list ends at the first layer where it is opaque, or where something else (a
    /// whiteout, a file) stands at its name or at one of its parents'.
    pub fn dir_layers(&self, rel: &Path) -> io::Result<Vec<usize>> {
        let mut current: Vec<usize> = Vec::new();
        for i in 0..self.dirs.len() {
            current.push(i);
            if i > 0 && is_opaque(&self.dirs[i]) {
                break;
            }
        }
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            let mut next = Vec::new();
            for &i in &current {
                let p = self.path(i, &prefix);
                match lstat(&p)? {
                    Some(st) if file_type(&st) == FileType::Directory => {
                        next.push(i);
                        if is_opaque(&p) {
                            break;
                        }
                    }
                    Some(_) => break,
                    None => {}
                }
            }
            current = next;
        }
        Ok(current)
    }

    /// The visible entry at `rel`: its layer and `lstat`.
    pub fn find(&self, rel: &Path) -> io::Result<Option<(usize, Stat)>> {
        let Some(parent) = rel.parent() else {
            return Ok(lstat(&self.dirs[0])?.map(|st| (0, st)));
        };
        for i in self.dir_layers(parent)? {
            let p = self.path(i, rel);
            if let Some(st) = lstat(&p)? {
                if is_whiteout(&st, &p) {
                    return Ok(None);
                }
                return Ok(Some((i, st)));
            }
        }
        Ok(None)
    }

    /// Whether a lower layer has an entry at `rel` that the merged view would show were
    /// the upper directory empty there (so removing `rel` needs a whiteout).
    pub fn exists_below(&self, rel: &Path) -> io::Result<bool> {
        let Some(parent) = rel.parent() else {
            return Ok(true);
        };
        for i in self.dir_layers(parent)?.into_iter().filter(|i| *i > 0) {
            let p = self.path(i, rel);
            if let Some(st) = lstat(&p)? {
                return Ok(!is_whiteout(&st, &p));
            }
        }
        Ok(false)
    }

    /// The merged entries of directory `rel`: name, layer, `lstat`; sorted by name.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<(OsString, usize, Stat)>> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for i in self.dir_layers(rel)? {
            let dir = self.path(i, rel);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in rd {
                let name = e?.file_name();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let p = dir.join(&name);
                let Some(st) = lstat(&p)? else { continue };
                if is_whiteout(&st, &p) {
                    continue;
                }
                out.push((name, i, st));
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(out)
    }

    /// Whether the merged directory `rel` has no entries.
    pub fn is_empty_dir(&self, rel: &Path) -> io::Result<bool> {
        Ok(self.list(rel)?.is_empty())
    }
}

/// `parent/name` as a relative path (`name` alone under the root).
pub(super) fn child(parent: &Path, name: &OsStr) -> PathBuf {
    if parent.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        parent.join(name)
    }
}
