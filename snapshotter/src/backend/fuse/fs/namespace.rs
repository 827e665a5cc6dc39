//! Changes of the namespace: creating, removing and renaming entries, and opening
//! files (copied up first when opened for writing), each under the change lock.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use fuser::{Errno, Generation, INodeNo, RenameFlags, ReplyEntry, Request};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::attr::*;
use super::{Handle, OverlayFs};
use crate::backend::fuse::at::At;
use crate::backend::fuse::layers::{child, file_type};

impl OverlayFs {
    /// Creates `parent/name` in the upper directory with `make`, owned by the caller and
    /// with exactly `mode`; returns its path and whether a whiteout stood there.
    pub(super) fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        make: impl FnOnce(&At<'_>) -> io::Result<()>,
    ) -> Result<(PathBuf, bool), Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let pp = self.path(parent)?;
        let rel = child(&pp, name);
        if self.layers.find(&rel).map_err(errno)?.is_some() {
            return Err(Errno::EEXIST);
        }
        self.layers.copy_up_dirs(&pp).map_err(errno)?;
        let had_whiteout = self.layers.clear_whiteout(&rel).map_err(errno)?;
        let up = self.layers.at(0, &rel).map_err(errno)?;
        let made = make(&up).map_err(errno);
        if had_whiteout {
            self.layers.forget_tree(&rel);
        } else {
            self.layers.note_entry(&rel, made.is_ok().then_some(0));
            self.layers.forget_tree_below(&rel);
        }
        made?;
        let (uid, gid, sgid_dir) = self.new_owner(req, &pp);
        rustix::fs::chownat(
            up.fd(),
            up.rest(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(rerr)?;
        let st = up.lstat().map_err(errno)?.ok_or(Errno::EIO)?;
        if file_type(&st) != FileType::Symlink {
            let mut m = mode & 0o7777;
            if sgid_dir && file_type(&st) == FileType::Directory {
                m |= 0o2000;
            }
            rustix::fs::chmodat(up.fd(), up.rest(), Mode::from_raw_mode(m), AtFlags::empty())
                .map_err(rerr)?;
        }
        Ok((rel, had_whiteout))
    }

    pub(super) fn reply_new(&self, rel: &Path, reply: ReplyEntry) {
        match self.entry_of(rel) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Removes `rel` (not a directory unless `dir`) from the merged view.
    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let pp = self.path(parent)?;
        let rel = child(&pp, name);
        let _g = self.lock();
        let (layer, st) = self.find(&rel)?;
        let is_dir = file_type(&st) == FileType::Directory;
        match (dir, is_dir) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        if dir && !self.layers.is_empty_dir(&rel).map_err(errno)? {
            return Err(Errno::ENOTEMPTY);
        }
        self.layers.copy_up_dirs(&pp).map_err(errno)?;
        if layer == 0 || self.layers.lstat(0, &rel).map_err(errno)?.is_some() {
            if is_dir {
                self.layers.remove_upper_dir(&rel).map_err(errno)?;
            } else {
                let up = self.layers.at(0, &rel).map_err(errno)?;
                rustix::fs::unlinkat(up.fd(), up.rest(), AtFlags::empty()).map_err(rerr)?;
            }
        }
        if is_dir {
            self.layers.forget_tree_below(&rel);
        }
        if self.layers.exists_below(&rel).map_err(errno)? {
            self.layers.whiteout(&rel).map_err(errno)?;
        } else {
            self.layers.note_entry(&rel, None);
        }
        self.table().remove_path(&rel);
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if name.len() > NAME_MAX || newname.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let src = child(&self.path(parent)?, name);
        let dst_parent = self.path(newparent)?;
        let dst = child(&dst_parent, newname);
        if dst.starts_with(&src) && dst != src {
            return Err(Errno::EINVAL);
        }
        let _g = self.lock();
        let (slayer, sst) = self.find(&src)?;
        let src_dir = file_type(&sst) == FileType::Directory;
        if src == dst {
            return Ok(());
        }
        if let Some((_, dst_st)) = self.layers.find(&dst).map_err(errno)? {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let dst_dir = file_type(&dst_st) == FileType::Directory;
            match (src_dir, dst_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) => {
                    if !self.layers.is_empty_dir(&dst).map_err(errno)? {
                        return Err(Errno::ENOTEMPTY);
                    }
                    if self.layers.lstat(0, &dst).map_err(errno)?.is_some() {
                        self.layers.remove_upper_dir(&dst).map_err(errno)?;
                    }
                }
                (false, false) => {}
            }
        }
        // The source comes up whole: a directory with lower entries takes them along and
        // becomes opaque, so the layer never needs a redirect.
        let src_lower = slayer > 0 || self.layers.exists_below(&src).map_err(errno)?;
        if src_dir && src_lower {
            self.layers.copy_up_tree(&src).map_err(errno)?;
        } else {
            self.layers.copy_up(&src, true).map_err(errno)?;
        }
        self.layers.copy_up_dirs(&dst_parent).map_err(errno)?;
        let had_whiteout = self.layers.clear_whiteout(&dst).map_err(errno)?;
        let renamed = (|| {
            let (from, to) = (self.layers.at(0, &src)?, self.layers.at(0, &dst)?);
            rustix::fs::renameat(from.fd(), from.rest(), to.fd(), to.rest())?;
            Ok(())
        })()
        .map_err(errno);
        self.layers.forget_tree(&src);
        self.layers.forget_tree(&dst);
        renamed?;
        if src_dir && (had_whiteout || self.layers.exists_below(&dst).map_err(errno)?) {
            self.layers.set_opaque(&dst).map_err(errno)?;
        }
        if self.layers.exists_below(&src).map_err(errno)? {
            self.layers.whiteout(&src).map_err(errno)?;
        }
        self.table().rename(&src, &dst);
        Ok(())
    }

    pub(super) fn open_file(&self, req: &Request, ino: INodeNo, flags: i32) -> Result<u64, Errno> {
        let rel = self.path(ino)?;
        let acc = flags & libc_o_accmode();
        let trunc = flags & OFlags::TRUNC.bits() as i32 != 0;
        let writable = acc != OFlags::RDONLY.bits() as i32 || trunc;
        let layer = if writable {
            let _g = self.lock();
            self.layers.copy_up(&rel, !trunc).map_err(errno)?;
            0
        } else {
            self.find(&rel)?.0
        };
        let (at, upper) = (self.layers.at(layer, &rel).map_err(errno)?, layer == 0);
        let keep = self.backing_flags(flags) & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY);
        let open = |f: OFlags| {
            rustix::fs::openat(
                at.fd(),
                at.rest(),
                f | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
        };
        let fd = match open(keep) {
            // Write-only made read-write, where this daemon may not read (a plain user's
            // mount of a file without read permission): as asked, then.
            Err(rustix::io::Errno::ACCESS)
                if self.writeback && acc == OFlags::WRONLY.bits() as i32 =>
            {
                open(keep & !OFlags::RDWR | OFlags::WRONLY)
            }
            r => r,
        }
        .map_err(rerr)?;
        // `O_TRUNC` arrives here (`FUSE_ATOMIC_O_TRUNC`): it truncates like a write.
        if trunc && super::kill_suidgid(req, &fd)? {
            self.mode_changed(ino.0);
        }
        Ok(self.add_handle(Handle::File(ino.0, fd, upper)))
    }

    /// The flags to open a backing file with for an open with `flags`. With the writeback
    /// cache the kernel reads the pages a write only partly covers, also from a file opened
    /// write-only, and places `O_APPEND` writes at the size it owns: so write-only becomes
    /// read-write and `O_APPEND` goes.
    pub(super) fn backing_flags(&self, flags: i32) -> OFlags {
        let mut f = OFlags::from_bits_retain(flags as _);
        if self.writeback {
            if f & (OFlags::RDONLY | OFlags::WRONLY | OFlags::RDWR) == OFlags::WRONLY {
                f = (f & !OFlags::WRONLY) | OFlags::RDWR;
            }
            f &= !OFlags::APPEND;
        }
        f
    }
}

pub(super) fn libc_o_accmode() -> i32 {
    (OFlags::RDONLY | OFlags::WRONLY | OFlags::RDWR).bits() as i32
}
