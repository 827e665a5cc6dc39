//! The overlay filesystem served over FUSE (`fuser::Filesystem`).
//!
//! Inode numbers are kiln's own: one per path, given at first sight and kept for the
//! life of the mount (a hard link made here shares its source's number), so they stay
//! stable across copy-up. Namespace changes (create, unlink, rename, copy-up) take one
//! mutex; lookups, reads and writes do not. Entries and attributes are cached by the
//! kernel for a long time and misses are cached too (negative entries): the lowers never
//! change and every change of the upper goes through this filesystem.
//!
//! - `attr`: attributes as FUSE wants them (inode attributes, times, errors);
//! - `change`: a setattr's changes, applied to an upper path or an open upper fd;
//! - `nodes`: the node table (paths ↔ inode numbers);
//! - `namespace`: changes of the namespace (create, remove, rename, open for writing);
//! - `passthrough`: backing files the kernel reads and writes itself (real root);
//! - `dispatch`: the `fuser::Filesystem` operations, each a call into the above.

mod attr;
mod change;
mod dispatch;
mod namespace;
mod nodes;
mod passthrough;

pub(super) use change::kill_suidgid;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use fuser::{Errno, FileAttr, FileHandle, FileType as FuseType, INodeNo, Request};
use rustix::fs::Stat;

use super::at::At;
use super::layers::Layers;
use attr::*;
use nodes::Table;

/// A directory's entries as `opendir` saw them: inode, type, name, `lstat`.
pub(super) type DirEntries = Vec<(u64, FuseType, OsString, Stat)>;

pub(super) enum Handle {
    /// An open file: its inode, fd (which outlives an unlink of the file), and whether
    /// the fd is in the upper directory (so changing it through the fd is allowed).
    File(u64, OwnedFd, bool),
    Dir(DirEntries),
}

/// What to ask the kernel for at INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KernelIo {
    /// The writeback cache (`FUSE_WRITEBACK_CACHE`).
    pub writeback: bool,
    /// Passthrough to backing files (`FUSE_PASSTHROUGH`); when agreed, the writeback
    /// cache is not asked for.
    pub passthrough: bool,
}

/// The filesystem.
pub(super) struct OverlayFs {
    layers: Layers,
    table: RwLock<Table>,
    /// Held by every change of the upper directory.
    changes: Mutex<()>,
    handles: RwLock<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Whether the kernel caches writes (`FUSE_WRITEBACK_CACHE`, agreed at INIT): it then
    /// owns size and mtime, may read a file opened write-only, and places `O_APPEND`
    /// writes itself.
    writeback: bool,
    /// Whether to ask for the writeback cache at INIT.
    want_writeback: bool,
    /// Whether the kernel reads and writes open files itself (`FUSE_PASSTHROUGH`, agreed
    /// at INIT; asked for instead of the writeback cache, which it excludes).
    passthrough: bool,
    /// Whether to ask for passthrough at INIT.
    want_passthrough: bool,
    /// The backing files of passthrough opens.
    backings: passthrough::Backings,
    /// Notifications to the kernel (set once the session exists).
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl OverlayFs {
    pub fn new(
        layers: Layers,
        wanted: KernelIo,
        notifier: Arc<OnceLock<fuser::Notifier>>,
        passed_through: Arc<AtomicU64>,
    ) -> OverlayFs {
        OverlayFs {
            layers,
            table: RwLock::new(Table::new()),
            changes: Mutex::new(()),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            writeback: false,
            want_writeback: wanted.writeback,
            passthrough: false,
            want_passthrough: wanted.passthrough,
            backings: passthrough::Backings::new(passed_through),
            notifier,
        }
    }

    /// The mode of `ino` changed behind the kernel's back (set-ID bits cleared by a write
    /// or an `O_TRUNC` open). Without the writeback cache the kernel asks again anyway;
    /// with it, it trusts its cached attributes, so they are invalidated, from another
    /// thread (a notification must not be sent from inside the request it is about).
    fn mode_changed(&self, ino: u64) {
        if !self.writeback {
            return;
        }
        if let Some(n) = self.notifier.get().cloned() {
            std::thread::spawn(move || {
                if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                    tracing::debug!("invalidating the attributes of inode {ino}: {e}");
                }
            });
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

    /// How to answer the open `fh` (see [`passthrough`]); `writes`: it may write.
    fn serve(
        &self,
        fh: u64,
        writes: bool,
        register: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> std::io::Result<fuser::BackingId>,
    ) -> Result<passthrough::Served, Errno> {
        if !self.passthrough {
            return Ok(passthrough::Served::Cached);
        }
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        match hs.get(&fh) {
            Some(Handle::File(ino, fd, upper)) => self.backings.serve(
                passthrough::Open {
                    ino: *ino,
                    fh,
                    fd,
                    upper: *upper,
                    writes,
                },
                register,
            ),
            _ => Err(Errno::EBADF),
        }
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
            Some(Handle::File(_, fd, _)) => f(fd),
            _ => Err(Errno::EBADF),
        }
    }

    /// Like [`Self::with_fd`], for a handle whose fd is in the upper directory (else
    /// EBADF: a lower file must never change).
    fn with_upper_fd<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&OwnedFd) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        match hs.get(&fh.0) {
            Some(Handle::File(_, fd, true)) => f(fd),
            _ => Err(Errno::EBADF),
        }
    }

    /// Copies `ino` up and applies `change` to it in the upper directory, under the
    /// change lock.
    fn change_upper(
        &self,
        ino: INodeNo,
        change: impl FnOnce(&At<'_>) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let rel = self.path(ino)?;
        let _g = self.lock();
        self.layers.copy_up(&rel, true).map_err(errno)?;
        change(&self.layers.at(0, &rel).map_err(errno)?)
    }

    /// Calls `f` with `ino` where it is: in the layer that shows it.
    fn with_visible<T>(
        &self,
        ino: INodeNo,
        f: impl FnOnce(&At<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let rel = self.path(ino)?;
        let (layer, _) = self.find(&rel)?;
        f(&self.layers.at(layer, &rel).map_err(errno)?)
    }

    /// `fstat` of any open handle of inode `ino`.
    fn open_fstat(&self, ino: u64) -> Option<Stat> {
        let hs = self.handles.read().unwrap_or_else(|e| e.into_inner());
        hs.values().find_map(|h| match h {
            Handle::File(i, fd, _) if *i == ino => rustix::fs::fstat(fd).ok(),
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
}
