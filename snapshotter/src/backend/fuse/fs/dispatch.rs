//! The `fuser::Filesystem` operations: each answers the kernel through the node table,
//! the stack's lookups and the namespace changes.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, FileType as FuseType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::attr::*;
use super::change::Change;
use super::namespace::libc_o_accmode;
use super::passthrough::Served;
use super::{DirEntries, Handle, OverlayFs};
use crate::backend::fuse::layers::{child, file_type};
use crate::format;

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        use fuser::InitFlags as F;
        // - `HANDLE_KILLPRIV_V2`: this daemon clears set-ID bits on write and truncation
        //   (`kill_suidgid`), so the kernel stops asking for `security.capability` before
        //   every write and for the attributes before every chown;
        // - `ATOMIC_O_TRUNC`: `O_TRUNC` comes with the open, not as a setattr after it.
        let mut wanted = F::FUSE_PARALLEL_DIROPS
            | F::FUSE_CACHE_SYMLINKS
            | F::FUSE_DO_READDIRPLUS
            | F::FUSE_READDIRPLUS_AUTO
            | F::FUSE_HANDLE_KILLPRIV_V2
            | F::FUSE_ATOMIC_O_TRUNC;
        // - `PASSTHROUGH` (real root, Linux 6.9+): open files are read and written by the
        //   kernel on the backing file; the kernel takes it only without the writeback
        //   cache, and only for a filesystem that may still be stacked once (depth 1).
        let passthrough = self.want_passthrough
            && config.capabilities().contains(F::FUSE_PASSTHROUGH)
            && config.set_max_stack_depth(1).is_ok();
        if passthrough {
            wanted |= F::FUSE_PASSTHROUGH;
        } else if self.want_writeback {
            wanted |= F::FUSE_WRITEBACK_CACHE;
        }
        let wanted = wanted & config.capabilities();
        if config.add_capabilities(wanted).is_ok() {
            self.writeback = wanted.contains(F::FUSE_WRITEBACK_CACHE);
            self.passthrough = wanted.contains(F::FUSE_PASSTHROUGH);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if name.len() > NAME_MAX {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let pp = match self.path(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let rel = child(&pp, name);
        match self.layers.find(&rel) {
            Ok(Some((_, st))) => {
                let ino = self.table().ino_for(&rel);
                reply.entry(&TTL, &attr(ino, &st), Generation(0));
            }
            // A miss the kernel may remember (node id 0 with a TTL: a negative entry):
            // `$PATH` searches and include-path probing stop costing requests.
            Ok(None) => reply.entry(&TTL, &negative_attr(), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(fh) = fh {
            if let Ok(st) = self.with_fd(fh, |fd| rustix::fs::fstat(fd).map_err(rerr)) {
                return reply.attr(&TTL, &attr(ino.0, &st));
            }
        }
        match self.path(ino).and_then(|p| self.find(&p)) {
            Ok((_, st)) => reply.attr(&TTL, &attr(ino.0, &st)),
            // An unlinked file still open: the kernel asks without a handle (fstat).
            Err(e) => match self.open_fstat(ino.0) {
                Some(st) => reply.attr(&TTL, &attr(ino.0, &st)),
                None => reply.error(e),
            },
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = Change {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let run = || -> Result<Stat, Errno> {
            // Through an open fd of the upper directory when the kernel names one (a
            // truncation, the times the writeback cache sets at close): the file is up
            // already, so no path, no copy-up, no change lock.
            if let Some(fh) = fh {
                match self.with_upper_fd(fh, |fd| change.apply_fd(req, fd)) {
                    Err(Errno::EBADF) => {}
                    done => return done,
                }
            }
            let rel = self.path(ino)?;
            let _g = self.lock();
            self.layers.copy_up(&rel, size != Some(0)).map_err(errno)?;
            let up = self.layers.at(0, &rel).map_err(errno)?;
            change.apply_at(req, &up)
        };
        match run() {
            Ok(st) => reply.attr(&TTL, &attr(ino.0, &st)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let run = || -> Result<Vec<u8>, Errno> {
            let t = self.with_visible(ino, |at| {
                rustix::fs::readlinkat(at.fd(), at.rest(), Vec::new()).map_err(rerr)
            })?;
            Ok(t.into_bytes())
        };
        match run() {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _g = self.lock();
        let ft = FileType::from_raw_mode(mode);
        // A 0/0 character device is how the overlay format writes a whiteout: it cannot be
        // stored, so it is refused, as kernel overlayfs refuses it.
        if ft == FileType::CharacterDevice && rdev == 0 {
            return reply.error(Errno::EPERM);
        }
        match self.create_entry(req, parent, name, mode, |p| {
            let m = Mode::from_raw_mode(mode & 0o7777);
            rustix::fs::mknodat(p.fd(), p.rest(), ft, m, rdev as _)?;
            Ok(())
        }) {
            Ok((rel, _)) => self.reply_new(&rel, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _g = self.lock();
        let made = self.create_entry(req, parent, name, mode, |p| {
            rustix::fs::mkdirat(p.fd(), p.rest(), Mode::from_raw_mode(0o700))?;
            Ok(())
        });
        match made {
            Ok((rel, had_whiteout)) => {
                // A directory made where a lower one was deleted must not show its entries.
                if had_whiteout || self.layers.exists_below(&rel).unwrap_or(false) {
                    if let Err(e) = self.layers.set_opaque(&rel) {
                        return reply.error(errno(e));
                    }
                }
                self.reply_new(&rel, reply)
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _g = self.lock();
        match self.create_entry(req, parent, link_name, 0o777, |p| {
            rustix::fs::symlinkat(target, p.fd(), p.rest())?;
            Ok(())
        }) {
            Ok((rel, _)) => self.reply_new(&rel, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let run = || -> Result<FileAttr, Errno> {
            if newname.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            let src = self.path(ino)?;
            let dp = self.path(newparent)?;
            let dst = child(&dp, newname);
            let _g = self.lock();
            let (_, st) = self.find(&src)?;
            if file_type(&st) == FileType::Directory {
                return Err(Errno::EPERM);
            }
            if self.layers.find(&dst).map_err(errno)?.is_some() {
                return Err(Errno::EEXIST);
            }
            self.layers.copy_up(&src, true).map_err(errno)?;
            self.layers.copy_up_dirs(&dp).map_err(errno)?;
            self.layers.clear_whiteout(&dst).map_err(errno)?;
            let linked = (|| {
                let (from, to) = (self.layers.at(0, &src)?, self.layers.at(0, &dst)?);
                rustix::fs::linkat(from.fd(), from.rest(), to.fd(), to.rest(), AtFlags::empty())?;
                Ok(())
            })()
            .map_err(errno);
            self.layers.forget_tree(&dst);
            linked?;
            self.table().add_link(ino.0, &dst);
            let st = self
                .layers
                .lstat(0, &dst)
                .map_err(errno)?
                .ok_or(Errno::EIO)?;
            Ok(attr(ino.0, &st))
        };
        match run() {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fh = match self.open_file(req, ino, flags.0) {
            Ok(fh) => fh,
            Err(e) => return reply.error(e),
        };
        let writes = flags.0 & libc_o_accmode() != OFlags::RDONLY.bits() as i32;
        match self.serve(fh, writes, |fd| reply.open_backing(fd)) {
            Ok(Served::Passthrough(b)) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b.id)
            }
            Ok(Served::Cached) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => {
                self.drop_handle(FileHandle(fh));
                reply.error(e)
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let run = |fd: &OwnedFd| -> Result<Vec<u8>, Errno> {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                let n =
                    rustix::io::pread(fd, &mut buf[got..], offset + got as u64).map_err(rerr)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            Ok(buf)
        };
        match self.with_fd(fh, run) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        // With the writeback cache the kernel gives `O_APPEND` writes their offset (the
        // backing fd is opened without it).
        let append = !self.writeback && flags.0 & OFlags::APPEND.bits() as i32 != 0;
        let run = |fd: &OwnedFd| -> Result<u32, Errno> {
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
                && super::kill_suidgid(req, fd)?
            {
                self.mode_changed(ino.0);
            }
            let mut done = 0;
            while done < data.len() {
                let n = if append {
                    rustix::io::write(fd, &data[done..]).map_err(rerr)?
                } else {
                    rustix::io::pwrite(fd, &data[done..], offset + done as u64).map_err(rerr)?
                };
                done += n;
            }
            Ok(done as u32)
        };
        match self.with_fd(fh, run) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.backings.release(fh.0);
        self.drop_handle(fh);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let run = || -> Result<u64, Errno> {
            let rel = self.path(ino)?;
            let list = self.layers.list(&rel).map_err(errno)?;
            let parent_ino = match rel.parent() {
                Some(p) => self.table().ino_for(p),
                None => 1,
            };
            let (_, own) = self.find(&rel)?;
            let mut entries: DirEntries = vec![
                (ino.0, FuseType::Directory, OsString::from("."), own),
                (parent_ino, FuseType::Directory, OsString::from(".."), own),
            ];
            let mut t = self.table();
            for (name, _, st) in list {
                let i = t.ino_for(&child(&rel, &name));
                entries.push((i, kind(&st), name, st));
            }
            drop(t);
            Ok(self.add_handle(Handle::Dir(entries)))
        };
        match run() {
            // The kernel may keep the listing: the directory changes only through here.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        let Some(Handle::Dir(entries)) = hs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, k, name, _)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *k, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        let Some(Handle::Dir(entries)) = hs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, _, name, st)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(*ino),
                (i + 1) as u64,
                name,
                &TTL,
                &attr(*ino, st),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.drop_handle(fh);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::fstatvfs(self.layers.upper_root()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(rerr(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        use std::os::unix::ffi::OsStrExt;
        if format::is_private_xattr(name.as_bytes()) {
            return reply.error(Errno::EPERM);
        }
        let done = self.change_upper(ino, |up| {
            rustix::fs::lsetxattr(
                up.xattr_path(),
                name,
                value,
                rustix::fs::XattrFlags::from_bits_retain(flags as _),
            )
            .map_err(rerr)
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        use std::os::unix::ffi::OsStrExt;
        if format::is_private_xattr(name.as_bytes()) {
            return reply.error(Errno::NO_XATTR);
        }
        let run = || -> Result<Vec<u8>, Errno> {
            self.with_visible(ino, |at| {
                crate::xattr::get(&at.xattr_path(), name.as_bytes())
                    .map_err(rerr)?
                    .ok_or(Errno::NO_XATTR)
            })
        };
        reply_xattr(run(), size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let run = || -> Result<Vec<u8>, Errno> {
            let names =
                self.with_visible(ino, |at| crate::xattr::list(&at.xattr_path()).map_err(rerr))?;
            let mut out = Vec::new();
            for name in names {
                if !format::is_private_xattr(&name) {
                    out.extend_from_slice(&name);
                    out.push(0);
                }
            }
            Ok(out)
        };
        reply_xattr(run(), size, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        use std::os::unix::ffi::OsStrExt;
        if format::is_private_xattr(name.as_bytes()) {
            return reply.error(Errno::NO_XATTR);
        }
        let done = self.change_upper(ino, |up| {
            rustix::fs::lremovexattr(up.xattr_path(), name).map_err(rerr)
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        // The hot path of every build that writes files: one open makes the file and is
        // the handle; owner and mode are set on the fd.
        let run = || -> Result<(FileAttr, u64), Errno> {
            if name.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            let pp = self.path(parent)?;
            let rel = child(&pp, name);
            let _g = self.lock();
            if self.layers.find(&rel).map_err(errno)?.is_some() {
                return Err(Errno::EEXIST);
            }
            self.layers.copy_up_dirs(&pp).map_err(errno)?;
            let had_whiteout = self.layers.clear_whiteout(&rel).map_err(errno)?;
            let up = self.layers.at(0, &rel).map_err(errno)?;
            let keep = self.backing_flags(flags)
                & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::TRUNC);
            let wanted = mode & 0o7777;
            let fd = rustix::fs::openat(
                up.fd(),
                up.rest(),
                keep | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(wanted & 0o777),
            )
            .map_err(rerr);
            if had_whiteout {
                self.layers.forget_tree(&rel);
            } else {
                self.layers.note_entry(&rel, fd.is_ok().then_some(0));
            }
            let fd = fd?;
            // The file was made by this process: with the caller's own ids (the common
            // case, root in the build) the filesystem already gave it the right owner,
            // set-group-ID directories included.
            if req.uid() != rustix::process::geteuid().as_raw()
                || req.gid() != rustix::process::getegid().as_raw()
            {
                let parent_st = self.layers.lstat(0, &pp).map_err(errno)?;
                let gid = match parent_st {
                    Some(st) if st.st_mode & 0o2000 != 0 => st.st_gid,
                    _ => req.gid(),
                };
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::from_raw(req.uid())),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(rerr)?;
            }
            let mut st = rustix::fs::fstat(&fd).map_err(rerr)?;
            // The process umask (or a chown clearing set-ID bits) may have changed the mode.
            if st.st_mode & 0o7777 != wanted {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(wanted)).map_err(rerr)?;
                st.st_mode = (st.st_mode & !0o7777) | wanted;
            }
            let ino = self.table().ino_for(&rel);
            Ok((attr(ino, &st), self.add_handle(Handle::File(ino, fd, true))))
        };
        let (a, fh) = match run() {
            Ok(done) => done,
            Err(e) => return reply.error(e),
        };
        let (g, h) = (Generation(0), FileHandle(fh));
        match self.serve(fh, true, |fd| reply.open_backing(fd)) {
            Ok(Served::Passthrough(b)) => {
                reply.created_passthrough(&TTL, &a, g, h, FopenFlags::empty(), &b.id)
            }
            Ok(Served::Cached) => reply.created(&TTL, &a, g, h, FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => {
                self.drop_handle(h);
                reply.error(e)
            }
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.with_fd(fh, |fd| {
            rustix::fs::fallocate(
                fd,
                rustix::fs::FallocateFlags::from_bits_retain(mode as _),
                offset,
                length,
            )
            .map_err(rerr)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.with_fd(fh, |fd| {
            let pos = match whence {
                3 => rustix::fs::SeekFrom::Data(offset as u64),
                4 => rustix::fs::SeekFrom::Hole(offset as u64),
                0 => rustix::fs::SeekFrom::Start(offset as u64),
                1 => rustix::fs::SeekFrom::Current(offset),
                _ => rustix::fs::SeekFrom::End(offset),
            };
            rustix::fs::seek(fd, pos).map_err(rerr)
        });
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(e),
        }
    }
}
