//! Copy-up: bringing an entry of a lower layer into the upper directory before it changes,
//! with its data, owner, mode, times and (non-private) xattrs. Data goes through
//! `copy_file_range` (the kernel reflinks or copies in place where it can) into a
//! temporary in the work directory, which is renamed into the upper directory once
//! complete, so the upper never holds a half-copied file. A file opened with `O_TRUNC`
//! skips the data ([`Layers::copy_up`]'s `with_data`).

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD};

use super::layers::{child, file_type, Layers};
use crate::format;

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Copies the non-private xattrs of `from` onto `to` (neither followed if a symlink).
pub(super) fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    for (name, value) in crate::xattr::read_all(from, |n| !format::is_private_xattr(n))? {
        rustix::fs::lsetxattr(to, name.as_slice(), &value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Owner, mode and times of `st` onto `to` (mode and times not for symlinks' targets).
pub(super) fn copy_meta(st: &Stat, to: &Path) -> io::Result<()> {
    rustix::fs::chownat(
        CWD,
        to,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if file_type(st) != FileType::Symlink {
        rustix::fs::chmodat(
            CWD,
            to,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    rustix::fs::utimensat(CWD, to, &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

impl Layers {
    fn temp(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        self.work.join(format!(
            "copyup-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Makes directory `rel` and its parents exist in the upper directory, with the
    /// metadata they have in the merged view.
    pub fn copy_up_dirs(&self, rel: &Path) -> io::Result<()> {
        // Usually the directory is in the upper already: known from its view, or one lstat.
        if self.upper_has_dir(rel) {
            return Ok(());
        }
        if super::layers::lstat(&self.path(0, rel))?
            .is_some_and(|st| file_type(&st) == FileType::Directory)
        {
            return Ok(());
        }
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            let up = self.path(0, &prefix);
            if super::layers::lstat(&up)?.is_some() {
                continue;
            }
            let Some((layer, st)) = self.find(&prefix)? else {
                return Err(io::Error::from_raw_os_error(libc_enoent()));
            };
            let parent = up.parent().map(Path::to_path_buf);
            let parent_st = match &parent {
                Some(p) => super::layers::lstat(p)?,
                None => None,
            };
            rustix::fs::mkdirat(CWD, &up, Mode::from_raw_mode(0o700))?;
            copy_xattrs(&self.path(layer, &prefix), &up)?;
            copy_meta(&st, &up)?;
            if let (Some(p), Some(pst)) = (&parent, &parent_st) {
                rustix::fs::utimensat(CWD, p, &times(pst), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            self.note_upper_dir(&prefix);
        }
        Ok(())
    }

    /// Brings `rel` into the upper directory (no-op when it is there). Directories come up
    /// empty (their lower entries stay merged); `with_data` false creates a regular file
    /// empty (an `O_TRUNC` open).
    pub fn copy_up(&self, rel: &Path, with_data: bool) -> io::Result<()> {
        let Some((layer, st)) = self.find(rel)? else {
            return Err(io::Error::from_raw_os_error(libc_enoent()));
        };
        if layer == 0 {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.copy_up_dirs(parent)?;
        }
        let src = self.path(layer, rel);
        let dst = self.path(0, rel);
        let tmp = self.temp();
        match file_type(&st) {
            FileType::Directory => {
                rustix::fs::mkdirat(CWD, &tmp, Mode::from_raw_mode(0o700))?;
            }
            FileType::RegularFile => {
                let out = rustix::fs::open(
                    &tmp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                if with_data {
                    let input =
                        rustix::fs::open(&src, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
                    copy_data(&input, &out, st.st_size as u64)?;
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlink(&src, Vec::new())?;
                rustix::fs::symlink(target.as_c_str(), &tmp)?;
            }
            FileType::Fifo => {
                rustix::fs::mknodat(CWD, &tmp, FileType::Fifo, Mode::from_raw_mode(0o600), 0)?;
            }
            other => {
                rustix::fs::mknodat(CWD, &tmp, other, Mode::from_raw_mode(0o600), st.st_rdev)?;
            }
        }
        // Copy-up is no change of the parent: its times are put back after the rename
        // (as kernel overlayfs does), so a diff does not see the parent as modified.
        let parent_up = dst.parent().map(Path::to_path_buf);
        let parent_st = match &parent_up {
            Some(p) => super::layers::lstat(p)?,
            None => None,
        };
        let done = (|| {
            copy_xattrs(&src, &tmp)?;
            copy_meta(&st, &tmp)?;
            rustix::fs::rename(&tmp, &dst)?;
            if let (Some(p), Some(pst)) = (&parent_up, &parent_st) {
                rustix::fs::utimensat(CWD, p, &times(pst), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            Ok(())
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp).or_else(|_| std::fs::remove_dir(&tmp));
        }
        if file_type(&st) == FileType::Directory {
            if done.is_ok() {
                self.note_upper_dir(rel);
            } else {
                self.forget_tree(rel);
            }
        } else if done.is_ok() {
            self.note_entry(rel, Some(0));
        } else if let Some(parent) = rel.parent() {
            self.forget_dir(parent);
        }
        done
    }

    /// Brings directory `rel` and everything under it into the upper directory: it no
    /// longer needs its lower layers (a directory about to be renamed).
    pub fn copy_up_tree(&self, rel: &Path) -> io::Result<()> {
        self.copy_up(rel, true)?;
        for (name, _, st) in self.list(rel)? {
            let c = child(rel, &name);
            if file_type(&st) == FileType::Directory {
                self.copy_up_tree(&c)?;
            } else {
                self.copy_up(&c, true)?;
            }
        }
        Ok(())
    }

    /// Marks upper directory `rel` opaque.
    pub fn set_opaque(&self, rel: &Path) -> io::Result<()> {
        rustix::fs::lsetxattr(
            self.path(0, rel),
            self.opaque_xattr,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )?;
        self.forget_tree(rel);
        Ok(())
    }

    /// Puts a whiteout at `rel` in the upper directory (its parents must be there).
    pub fn whiteout(&self, rel: &Path) -> io::Result<()> {
        rustix::fs::mknodat(
            CWD,
            self.path(0, rel),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )?;
        self.note_whiteout(rel);
        self.forget_tree_below(rel);
        Ok(())
    }

    /// Removes what stands at `rel` in the upper directory if it is a whiteout; returns
    /// whether it was one.
    pub fn clear_whiteout(&self, rel: &Path) -> io::Result<bool> {
        if !self.may_have_upper_whiteout(rel) {
            return Ok(false);
        }
        let p = self.path(0, rel);
        match super::layers::lstat(&p)? {
            Some(st) if format::is_whiteout(&p, &st) => {
                rustix::fs::unlink(&p)?;
                self.forget_tree(rel);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes upper directory `rel` with the whiteouts it holds (the merged directory
    /// was checked to be empty, so nothing else is there).
    pub fn remove_upper_dir(&self, rel: &Path) -> io::Result<()> {
        let p = self.path(0, rel);
        for e in std::fs::read_dir(&p)? {
            let e = e?;
            let cp = e.path();
            if let Some(st) = super::layers::lstat(&cp)? {
                if format::is_whiteout(&cp, &st) {
                    rustix::fs::unlink(&cp)?;
                } else if file_type(&st) == FileType::Directory {
                    // An upper-only directory holding only whiteouts.
                    self.remove_upper_dir(&child(rel, &e.file_name()))?;
                }
            }
        }
        rustix::fs::rmdir(&p)?;
        self.forget_tree(rel);
        Ok(())
    }
}

fn libc_enoent() -> i32 {
    rustix::io::Errno::NOENT.raw_os_error()
}

/// Copies `len` bytes with `copy_file_range`, falling back to read/write.
pub(super) fn copy_data(input: &impl AsFd, out: &impl AsFd, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        match rustix::fs::copy_file_range(input, None, out, None, left.min(1 << 30) as usize) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(rustix::io::Errno::XDEV)
            | Err(rustix::io::Errno::NOSYS)
            | Err(rustix::io::Errno::OPNOTSUPP)
            | Err(rustix::io::Errno::INVAL) => {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = rustix::io::read(input, &mut buf[..])?;
                    if n == 0 {
                        return Ok(());
                    }
                    let mut off = 0;
                    while off < n {
                        off += rustix::io::write(out, &buf[off..n])?;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
