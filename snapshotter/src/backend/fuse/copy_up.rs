//! Copy-up: bringing an entry of a lower layer into the upper directory before it changes,
//! with its data, owner, mode, times and (non-private) xattrs. Data goes through
//! `copy_file_range` (the kernel reflinks or copies in place where it can) into a
//! temporary in the work directory, which is renamed into the upper directory once
//! complete, so the upper never holds a half-copied file. A file opened with `O_TRUNC`
//! skips the data ([`Layers::copy_up`]'s `with_data`).

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};

use super::at::At;
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
pub(super) fn copy_xattrs(from: &At<'_>, to: &At<'_>) -> io::Result<()> {
    let to = to.xattr_path();
    for (name, value) in
        crate::xattr::read_all(&from.xattr_path(), |n| !format::is_private_xattr(n))?
    {
        rustix::fs::lsetxattr(
            &to,
            name.as_slice(),
            &value,
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

/// Owner, mode and times of `st` onto `to` (mode and times not for symlinks' targets).
pub(super) fn copy_meta(st: &Stat, to: &At<'_>) -> io::Result<()> {
    rustix::fs::chownat(
        to.fd(),
        to.rest(),
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if file_type(st) != FileType::Symlink {
        rustix::fs::chmodat(
            to.fd(),
            to.rest(),
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    rustix::fs::utimensat(to.fd(), to.rest(), &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Puts the times of `st` back on directory `dir`.
fn restore_times(dir: &At<'_>, st: &Stat) -> io::Result<()> {
    rustix::fs::utimensat(dir.fd(), dir.rest(), &times(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

impl Layers {
    /// A fresh name in the work directory.
    fn temp(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        PathBuf::from(format!(
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
        if self
            .lstat(0, rel)?
            .is_some_and(|st| file_type(&st) == FileType::Directory)
        {
            return Ok(());
        }
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            if self.lstat(0, &prefix)?.is_some() {
                continue;
            }
            let Some((layer, st)) = self.find(&prefix)? else {
                return Err(io::Error::from_raw_os_error(libc_enoent()));
            };
            let parent = prefix.parent().unwrap_or(Path::new(""));
            let parent_st = self.lstat(0, parent)?;
            let up = self.at(0, &prefix)?;
            rustix::fs::mkdirat(up.fd(), up.rest(), Mode::from_raw_mode(0o700))?;
            copy_xattrs(&self.at(layer, &prefix)?, &up)?;
            copy_meta(&st, &up)?;
            if let Some(pst) = &parent_st {
                restore_times(&self.at(0, parent)?, pst)?;
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
        let src = self.at(layer, rel)?;
        let dst = self.at(0, rel)?;
        let tmp_name = self.temp();
        let tmp = self.work_at(&tmp_name)?;
        match file_type(&st) {
            FileType::Directory => {
                rustix::fs::mkdirat(tmp.fd(), tmp.rest(), Mode::from_raw_mode(0o700))?;
            }
            FileType::RegularFile => {
                let out = rustix::fs::openat(
                    tmp.fd(),
                    tmp.rest(),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                if with_data {
                    let input = rustix::fs::openat(
                        src.fd(),
                        src.rest(),
                        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )?;
                    copy_data(&input, &out, st.st_size as u64)?;
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src.fd(), src.rest(), Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), tmp.fd(), tmp.rest())?;
            }
            FileType::Fifo => {
                rustix::fs::mknodat(
                    tmp.fd(),
                    tmp.rest(),
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )?;
            }
            other => {
                rustix::fs::mknodat(
                    tmp.fd(),
                    tmp.rest(),
                    other,
                    Mode::from_raw_mode(0o600),
                    st.st_rdev,
                )?;
            }
        }
        // Copy-up is no change of the parent: its times are put back after the rename
        // (as kernel overlayfs does), so a diff does not see the parent as modified.
        let parent = rel.parent();
        let parent_st = match parent {
            Some(p) => self.lstat(0, p)?,
            None => None,
        };
        let done = (|| {
            copy_xattrs(&src, &tmp)?;
            copy_meta(&st, &tmp)?;
            rustix::fs::renameat(tmp.fd(), tmp.rest(), dst.fd(), dst.rest())?;
            if let (Some(p), Some(pst)) = (parent, &parent_st) {
                restore_times(&self.at(0, p)?, pst)?;
            }
            Ok(())
        })();
        if done.is_err() {
            let _ = rustix::fs::unlinkat(tmp.fd(), tmp.rest(), AtFlags::empty())
                .or_else(|_| rustix::fs::unlinkat(tmp.fd(), tmp.rest(), AtFlags::REMOVEDIR));
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
            self.at(0, rel)?.xattr_path(),
            self.opaque_xattr,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )?;
        self.forget_tree(rel);
        Ok(())
    }

    /// Puts a whiteout at `rel` in the upper directory (its parents must be there).
    pub fn whiteout(&self, rel: &Path) -> io::Result<()> {
        let up = self.at(0, rel)?;
        rustix::fs::mknodat(
            up.fd(),
            up.rest(),
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
        let Some(st) = self.lstat(0, rel)? else {
            return Ok(false);
        };
        let up = self.at(0, rel)?;
        if !format::is_whiteout(&up.xattr_path(), &st) {
            return Ok(false);
        }
        rustix::fs::unlinkat(up.fd(), up.rest(), AtFlags::empty())?;
        self.forget_tree(rel);
        Ok(true)
    }

    /// Removes upper directory `rel` with the whiteouts it holds (the merged directory
    /// was checked to be empty, so nothing else is there).
    pub fn remove_upper_dir(&self, rel: &Path) -> io::Result<()> {
        let up = self.at(0, rel)?;
        if let Some(listing) = up.list()? {
            for (name, _) in &listing.entries {
                let c = listing.child(name)?;
                if let Some(st) = c.lstat()? {
                    if format::is_whiteout(&c.xattr_path(), &st) {
                        rustix::fs::unlinkat(c.fd(), c.rest(), AtFlags::empty())?;
                    } else if file_type(&st) == FileType::Directory {
                        // An upper-only directory holding only whiteouts.
                        self.remove_upper_dir(&child(rel, name))?;
                    }
                }
            }
        }
        rustix::fs::unlinkat(up.fd(), up.rest(), AtFlags::REMOVEDIR)?;
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
