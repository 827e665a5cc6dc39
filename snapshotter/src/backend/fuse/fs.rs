//! The overlay filesystem served over FUSE (`fuser::Filesystem`).
//!
//! Inode numbers are kiln's own: one per path, given at first sight and kept for the
//! life of the mount (a hard link made here shares its source's number), so they stay
//! stable across copy-up. Namespace changes (create, unlink, rename, copy-up) take one
//! mutex; lookups, reads and writes do not. Entries and attributes are cached by the
//! kernel for a long time and misses are cached too (negative entries): the lowers never
//! change and every change of the upper goes through this filesystem.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType as FuseType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD};

use super::layers::{child, file_type, Layers};
use crate::format;

/// How long the kernel may keep entries and attributes.
const TTL: Duration = Duration::from_secs(3600);

/// The longest name a directory entry may have.
const NAME_MAX: usize = 255;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn rerr(e: rustix::io::Errno) -> Errno {
    Errno::from(io::Error::from(e))
}

fn kind(st: &Stat) -> FuseType {
    match file_type(st) {
        FileType::Directory => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::CharacterDevice => FuseType::CharDevice,
        FileType::BlockDevice => FuseType::BlockDevice,
        FileType::Socket => FuseType::Socket,
        _ => FuseType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

/// Answers a getxattr/listxattr: the size when asked for it (`size` 0), ERANGE when the
/// caller's buffer is too small, else the bytes.
fn reply_xattr(v: Result<Vec<u8>, Errno>, size: u32, reply: ReplyXattr) {
    match v {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

/// The attributes sent with a negative entry (only node id 0 matters).
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FuseType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn attr(ino: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: kind(st),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// Paths ↔ inode numbers.
#[derive(Default)]
struct Table {
    paths: HashMap<u64, Vec<PathBuf>>,
    inos: HashMap<PathBuf, u64>,
    next: u64,
}

impl Table {
    fn new() -> Table {
        let mut t = Table {
            next: 2,
            ..Default::default()
        };
        t.paths.insert(1, vec![PathBuf::new()]);
        t.inos.insert(PathBuf::new(), 1);
        t
    }

    fn ino_for(&mut self, path: &Path) -> u64 {
        if let Some(i) = self.inos.get(path) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.inos.insert(path.to_path_buf(), i);
        self.paths.entry(i).or_default().push(path.to_path_buf());
        i
    }

    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        self.paths.get(&ino).and_then(|p| p.first().cloned())
    }

    fn add_link(&mut self, ino: u64, path: &Path) {
        self.remove_path(path);
        self.inos.insert(path.to_path_buf(), ino);
        self.paths.entry(ino).or_default().push(path.to_path_buf());
    }

    fn remove_path(&mut self, path: &Path) {
        if let Some(i) = self.inos.remove(path) {
            if let Some(ps) = self.paths.get_mut(&i) {
                ps.retain(|p| p != path);
            }
        }
    }

    /// `from` (and everything under it) is now at `to`.
    fn rename(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .inos
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        // What stood at `to` is replaced.
        let replaced: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(to))
            .cloned()
            .collect();
        for p in replaced {
            self.remove_path(&p);
        }
        for (p, i) in moved {
            self.remove_path(&p);
            let rest = p.strip_prefix(from).unwrap_or(Path::new(""));
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.inos.insert(np.clone(), i);
            self.paths.entry(i).or_default().push(np);
        }
    }
}

/// A directory's entries as `opendir` saw them: inode, type, name, `lstat`.
type DirEntries = Vec<(u64, FuseType, OsString, Stat)>;

enum Handle {
    /// An open file: its inode and fd (which outlives an unlink of the file).
    File(u64, OwnedFd),
    Dir(DirEntries),
}

/// The filesystem.
pub(super) struct OverlayFs {
    layers: Layers,
    table: RwLock<Table>,
    /// Held by every change of the upper directory.
    changes: Mutex<()>,
    handles: RwLock<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
}

impl OverlayFs {
    pub fn new(layers: Layers) -> OverlayFs {
        OverlayFs {
            layers,
            table: RwLock::new(Table::new()),
            changes: Mutex::new(()),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .path_of(ino.0)
            .ok_or(Errno::ENOENT)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        fh
    }

    fn drop_handle(&self, fh: FileHandle) {
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
    }

    fn with_fd<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&OwnedFd) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        match hs.get(&fh.0) {
            Some(Handle::File(_, fd)) => f(fd),
            _ => Err(Errno::EBADF),
        }
    }

    /// Copies `ino` up and applies `change` to its upper path, under the change lock.
    fn change_upper(
        &self,
        ino: INodeNo,
        change: impl FnOnce(&Path) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let rel = self.path(ino)?;
        let _g = self.lock();
        self.layers.copy_up(&rel, true).map_err(errno)?;
        change(&self.layers.path(0, &rel))
    }

    /// The path of `ino` in the layer that shows it.
    fn visible_path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let rel = self.path(ino)?;
        let (layer, _) = self.find(&rel)?;
        Ok(self.layers.path(layer, &rel))
    }

    /// `fstat` of any open handle of inode `ino`.
    fn open_fstat(&self, ino: u64) -> Option<Stat> {
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        hs.values().find_map(|h| match h {
            Handle::File(i, fd) if *i == ino => rustix::fs::fstat(fd).ok(),
            _ => None,
        })
    }

    /// The visible entry at `rel`, or ENOENT.
    fn find(&self, rel: &Path) -> Result<(usize, Stat), Errno> {
        self.layers.find(rel).map_err(errno)?.ok_or(Errno::ENOENT)
    }

    fn entry_of(&self, rel: &Path) -> Result<FileAttr, Errno> {
        let (_, st) = self.find(rel)?;
        let ino = self.table().ino_for(rel);
        Ok(attr(ino, &st))
    }

    /// Owner of a new entry in `parent` for `req`: the caller, with the parent's group
    /// when the parent is set-group-ID (as the kernel does).
    fn new_owner(&self, req: &Request, parent: &Path) -> (u32, u32, bool) {
        match self.layers.find(parent) {
            Ok(Some((_, st))) if st.st_mode & 0o2000 != 0 => (req.uid(), st.st_gid, true),
            _ => (req.uid(), req.gid(), false),
        }
    }

    /// Creates `parent/name` in the upper directory with `make`, owned by the caller and
    /// with exactly `mode`; returns its path and whether a whiteout stood there.
    fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        make: impl FnOnce(&Path) -> io::Result<()>,
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
        let up = self.layers.path(0, &rel);
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
            CWD,
            &up,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(rerr)?;
        let st = super::layers::lstat(&up)
            .map_err(errno)?
            .ok_or(Errno::EIO)?;
        if file_type(&st) != FileType::Symlink {
            let mut m = mode & 0o7777;
            if sgid_dir && file_type(&st) == FileType::Directory {
                m |= 0o2000;
            }
            rustix::fs::chmodat(CWD, &up, Mode::from_raw_mode(m), AtFlags::empty())
                .map_err(rerr)?;
        }
        Ok((rel, had_whiteout))
    }

    fn reply_new(&self, rel: &Path, reply: ReplyEntry) {
        match self.entry_of(rel) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Removes `rel` (not a directory unless `dir`) from the merged view.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
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
        let up = self.layers.path(0, &rel);
        if layer == 0 || super::layers::lstat(&up).map_err(errno)?.is_some() {
            if is_dir {
                self.layers.remove_upper_dir(&rel).map_err(errno)?;
            } else {
                rustix::fs::unlink(&up).map_err(rerr)?;
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

    fn do_rename(
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
                    if super::layers::lstat(&self.layers.path(0, &dst))
                        .map_err(errno)?
                        .is_some()
                    {
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
        let renamed =
            rustix::fs::rename(self.layers.path(0, &src), self.layers.path(0, &dst)).map_err(rerr);
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

    fn open_file(&self, ino: INodeNo, flags: i32) -> Result<u64, Errno> {
        let rel = self.path(ino)?;
        let acc = flags & libc_o_accmode();
        let writable =
            acc != OFlags::RDONLY.bits() as i32 || flags & OFlags::TRUNC.bits() as i32 != 0;
        let path = if writable {
            let _g = self.lock();
            self.layers
                .copy_up(&rel, flags & OFlags::TRUNC.bits() as i32 == 0)
                .map_err(errno)?;
            self.layers.path(0, &rel)
        } else {
            let (layer, _) = self.find(&rel)?;
            self.layers.path(layer, &rel)
        };
        let keep = OFlags::from_bits_retain(flags as _)
            & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY);
        let fd = rustix::fs::open(
            &path,
            keep | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(rerr)?;
        Ok(self.add_handle(Handle::File(ino.0, fd)))
    }
}

fn libc_o_accmode() -> i32 {
    (OFlags::RDONLY | OFlags::WRONLY | OFlags::RDWR).bits() as i32
}

fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => (-(e.duration().as_secs() as i64), 0),
            };
            Timespec {
                tv_sec: sec as _,
                tv_nsec: nsec as _,
            }
        }
    }
}

impl Filesystem for OverlayFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = fuser::InitFlags::FUSE_PARALLEL_DIROPS
            | fuser::InitFlags::FUSE_CACHE_SYMLINKS
            | fuser::InitFlags::FUSE_DO_READDIRPLUS
            | fuser::InitFlags::FUSE_READDIRPLUS_AUTO;
        let _ = config.add_capabilities(wanted & config.capabilities());
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
        _req: &Request,
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
        let run = || -> Result<Stat, Errno> {
            let rel = self.path(ino)?;
            let _g = self.lock();
            self.layers.copy_up(&rel, size != Some(0)).map_err(errno)?;
            let up = self.layers.path(0, &rel);
            if let Some(m) = mode {
                rustix::fs::chmodat(CWD, &up, Mode::from_raw_mode(m & 0o7777), AtFlags::empty())
                    .map_err(rerr)?;
            }
            if uid.is_some() || gid.is_some() {
                rustix::fs::chownat(
                    CWD,
                    &up,
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(rerr)?;
            }
            if let Some(s) = size {
                let by_handle =
                    fh.map(|fh| self.with_fd(fh, |fd| rustix::fs::ftruncate(fd, s).map_err(rerr)));
                match by_handle {
                    Some(Ok(())) => {}
                    _ => {
                        let f = rustix::fs::open(
                            &up,
                            OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                            Mode::empty(),
                        )
                        .map_err(rerr)?;
                        rustix::fs::ftruncate(&f, s).map_err(rerr)?;
                    }
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ts = Timestamps {
                    last_access: timespec(atime),
                    last_modification: timespec(mtime),
                };
                rustix::fs::utimensat(CWD, &up, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
            }
            super::layers::lstat(&up)
                .map_err(errno)?
                .ok_or(Errno::ENOENT)
        };
        match run() {
            Ok(st) => reply.attr(&TTL, &attr(ino.0, &st)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let run = || -> Result<Vec<u8>, Errno> {
            let t = rustix::fs::readlink(self.visible_path(ino)?, Vec::new()).map_err(rerr)?;
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
            rustix::fs::mknodat(CWD, p, ft, Mode::from_raw_mode(mode & 0o7777), rdev as _)?;
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
            rustix::fs::mkdirat(CWD, p, Mode::from_raw_mode(0o700))?;
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
            rustix::fs::symlink(target, p)?;
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
            let linked = rustix::fs::linkat(
                CWD,
                self.layers.path(0, &src),
                CWD,
                self.layers.path(0, &dst),
                AtFlags::empty(),
            )
            .map_err(rerr);
            self.layers.forget_tree(&dst);
            linked?;
            self.table().add_link(ino.0, &dst);
            let st = super::layers::lstat(&self.layers.path(0, &dst))
                .map_err(errno)?
                .ok_or(Errno::EIO)?;
            Ok(attr(ino.0, &st))
        };
        match run() {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(ino, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
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
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let append = flags.0 & OFlags::APPEND.bits() as i32 != 0;
        let run = |fd: &OwnedFd| -> Result<u32, Errno> {
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
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
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
        match rustix::fs::statvfs(&self.layers.dirs[0]) {
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
                up,
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
            let p = self.visible_path(ino)?;
            crate::xattr::get(&p, name.as_bytes())
                .map_err(rerr)?
                .ok_or(Errno::NO_XATTR)
        };
        reply_xattr(run(), size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let run = || -> Result<Vec<u8>, Errno> {
            let p = self.visible_path(ino)?;
            let mut out = Vec::new();
            for name in crate::xattr::list(&p).map_err(rerr)? {
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
        let done = self.change_upper(ino, |up| rustix::fs::lremovexattr(up, name).map_err(rerr));
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
            let up = self.layers.path(0, &rel);
            let keep = OFlags::from_bits_retain(flags as _)
                & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::TRUNC);
            let wanted = mode & 0o7777;
            let fd = rustix::fs::open(
                &up,
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
                let parent_st = super::layers::lstat(&self.layers.path(0, &pp)).map_err(errno)?;
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
            Ok((attr(ino, &st), self.add_handle(Handle::File(ino, fd))))
        };
        match run() {
            Ok((a, fh)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
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
