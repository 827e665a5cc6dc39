//! Kernel passthrough (`FUSE_PASSTHROUGH`, Linux 6.9+): the reads, writes and mmap of an
//! open file go from the kernel straight to the backing file, with no request to this
//! daemon, and the page cache is the backing file's, as under kernel overlayfs.
//! Registering a backing file needs `CAP_SYS_ADMIN` in the initial user namespace, so
//! only real root has it; everyone else is served by the threads (with the writeback
//! cache, which the kernel does not combine with passthrough).
//!
//! The kernel ties one backing file to an inode while any open of it is live, and every
//! open of it must then name that backing file (anything else fails the open with EIO),
//! so a backing is shared by the opens of an inode and closed with the last one. An
//! upper file's backing is opened read-write, whatever the first open asked, so later
//! writers can share it. The one case it cannot serve is an inode open on its *lower*
//! file (a reader, or a mapped library) that is copied up meanwhile: a later read-only
//! open shares the lower backing (the content the other opens see: only a truncation by
//! path changes an upper file without an open), and a later open for writing fails with
//! ETXTBSY, as writing a running program does; `KILN_FUSE_PASSTHROUGH=0` gives kernel
//! overlayfs's behaviour there.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::Errno;

/// A backing file registered with the kernel; closed (`FUSE_DEV_IOC_BACKING_CLOSE`) when
/// the last open of its inode is released.
pub(in crate::backend::fuse) struct Backing {
    pub id: fuser::BackingId,
    /// `(st_dev, st_ino)` of the file behind it.
    file: (u64, u64),
    /// Opened for writing (an upper file), so writers may share it.
    writable: bool,
}

/// How an open is answered.
pub(in crate::backend::fuse) enum Served {
    /// Through the backing file.
    Passthrough(Arc<Backing>),
    /// Through the threads and the page cache (passthrough is off or was refused).
    Cached,
}

/// An open to serve: its inode, its fd, and where that fd is.
pub(in crate::backend::fuse) struct Open<'a> {
    pub ino: u64,
    pub fh: u64,
    pub fd: &'a OwnedFd,
    /// The fd is in the upper directory.
    pub upper: bool,
    /// The open may write.
    pub writes: bool,
}

#[derive(Default)]
struct State {
    by_inode: HashMap<u64, Weak<Backing>>,
    /// Open → (inode, backing).
    by_handle: HashMap<u64, (u64, Arc<Backing>)>,
}

/// The backing files of the open files.
pub(in crate::backend::fuse) struct Backings {
    state: Mutex<State>,
    /// The kernel refused a backing file (e.g. `ELOOP`: the store's filesystem is stacked
    /// already); every later open is served by the threads, so no inode mixes modes.
    refused: AtomicBool,
    /// Opens answered with a backing file.
    served: Arc<AtomicU64>,
}

impl Backings {
    pub fn new(served: Arc<AtomicU64>) -> Backings {
        Backings {
            state: Mutex::default(),
            refused: AtomicBool::new(false),
            served,
        }
    }

    /// How to answer `open`; `register` asks the kernel for a backing id. ETXTBSY: an open
    /// for writing of an inode whose opens read its lower file.
    pub fn serve(
        &self,
        open: Open<'_>,
        register: impl FnOnce(BorrowedFd<'_>) -> io::Result<fuser::BackingId>,
    ) -> Result<Served, Errno> {
        if self.refused.load(Ordering::Relaxed) {
            return Ok(Served::Cached);
        }
        let file = match rustix::fs::fstat(open.fd) {
            Ok(st) => (st.st_dev, st.st_ino),
            Err(e) => return Err(super::attr::rerr(e)),
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let live = s.by_inode.get(&open.ino).and_then(Weak::upgrade);
        let backing = match live {
            Some(b) if b.file == file && (b.writable || !open.writes) => b,
            Some(_) if open.writes => return Err(Errno::ETXTBSY),
            Some(b) => b,
            None => {
                // An upper file's backing read-write, for the writers that may share it.
                let rw = open
                    .upper
                    .then(|| reopen_read_write(open.fd))
                    .and_then(Result::ok);
                let writable = rw.is_some() || open.writes;
                match register(rw.as_ref().unwrap_or(open.fd).as_fd()) {
                    Ok(id) => {
                        let b = Arc::new(Backing { id, file, writable });
                        s.by_inode.insert(open.ino, Arc::downgrade(&b));
                        b
                    }
                    Err(e) => {
                        if !self.refused.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                "the kernel refused a FUSE passthrough backing file ({e}); \
                                 reads and writes go through kiln's serving threads"
                            );
                        }
                        return Ok(Served::Cached);
                    }
                }
            }
        };
        s.by_handle.insert(open.fh, (open.ino, backing.clone()));
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(Served::Passthrough(backing))
    }

    /// The open `fh` is released: its backing goes with the inode's last open.
    pub fn release(&self, fh: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ino, b)) = s.by_handle.remove(&fh) {
            drop(b);
            if s.by_inode.get(&ino).is_some_and(|w| w.strong_count() == 0) {
                s.by_inode.remove(&ino);
            }
        }
    }
}

/// The file behind `fd` opened again, read-write (`/proc/self/fd`).
fn reopen_read_write(fd: &OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}
