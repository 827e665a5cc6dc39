//! What garbage collection needs of the store: a lease on the root, the list of committed
//! snapshots, and the scratch directories of builds.
//!
//! The lease is `flock` on `<root>/gc.lock`. Every [`Store::open`] holds it *shared* for as
//! long as the store (or a clone of it) lives, so a `kiln build` or `kiln run` holds it
//! from start to end; a collector opens the store with [`Store::open_exclusive`], which
//! holds it *exclusively*. So nothing is ever removed while a build may still use it (a
//! snapshot it has just committed, a blob it has written but not tagged yet), and a build
//! that starts during a collection waits until it is over. The lease is taken before the
//! store's mutation lock (`<root>/lock`), in every process, so the two never deadlock.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::FlockOperation;

use super::{io_at, ChainId, Store, StoreError};

/// The lease file's name in the root.
const LEASE_FILE: &str = "gc.lock";

/// A held lease on a root: shared (a user of the store) or exclusive (a collector).
/// Released when dropped.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

impl Lease {
    fn open_file(root: &Path) -> Result<File, StoreError> {
        let path = root.join(LEASE_FILE);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at("opening", &path))
    }

    /// A shared lease: waits while a collector holds the root.
    pub fn shared(root: &Path) -> Result<Lease, StoreError> {
        let file = Lease::open_file(root)?;
        rustix::fs::flock(file.as_fd(), FlockOperation::LockShared)
            .map_err(|e| io_at("locking", &root.join(LEASE_FILE))(io::Error::from(e)))?;
        Ok(Lease { _file: file })
    }

    /// The exclusive lease: when other processes hold the root, calls `on_wait` once and
    /// waits for them to finish.
    pub fn exclusive(root: &Path, on_wait: &mut dyn FnMut()) -> Result<Lease, StoreError> {
        let file = Lease::open_file(root)?;
        let path = root.join(LEASE_FILE);
        match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Lease { _file: file }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => on_wait(),
            Err(e) => return Err(io_at("locking", &path)(io::Error::from(e))),
        }
        rustix::fs::flock(file.as_fd(), FlockOperation::LockExclusive)
            .map_err(|e| io_at("locking", &path)(io::Error::from(e)))?;
        Ok(Lease { _file: file })
    }
}

/// A committed snapshot as the collector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub id: ChainId,
    /// Its parent, `None` for a base (or when the parent file is unreadable).
    pub parent: Option<ChainId>,
    /// The snapshot's directory (`snapshots/<id>`), to measure.
    pub dir: PathBuf,
    /// When it was committed (the directory's modification time).
    pub modified: SystemTime,
}

impl Store {
    /// Opens the store at `root` holding the exclusive lease (see the module doc): no
    /// build uses it until the returned store is dropped. `on_wait` is called once if
    /// other kiln processes hold the root (the call then waits for them).
    pub fn open_exclusive(root: &Path, on_wait: &mut dyn FnMut()) -> Result<Store, StoreError> {
        Store::create_dirs(root)?;
        let lease = Lease::exclusive(root, on_wait)?;
        let store = Store {
            root: root.to_path_buf(),
            _lease: Arc::new(lease),
        };
        store.sweep()?;
        Ok(store)
    }

    /// The committed snapshots, in no particular order.
    pub fn committed(&self) -> Result<Vec<SnapshotEntry>, StoreError> {
        let snaps = self.root.join("snapshots");
        let mut out = Vec::new();
        for e in fs::read_dir(&snaps).map_err(io_at("reading", &snaps))? {
            let e = e.map_err(io_at("reading", &snaps))?;
            let Some(id) = ChainId::parse(&e.file_name().to_string_lossy()) else {
                continue;
            };
            let md = fs::symlink_metadata(e.path()).map_err(io_at("reading", &e.path()))?;
            if !md.is_dir() {
                continue;
            }
            let parent = self.parent(&id).ok().flatten();
            out.push(SnapshotEntry {
                parent,
                dir: e.path(),
                modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                id,
            });
        }
        Ok(out)
    }

    /// Directories that are not committed snapshots: active snapshots in `work/` (of
    /// running builds; dead ones were swept when the store opened) and unfinished commits
    /// or removals (`snapshots/.tmp-*`).
    pub fn scratch_dirs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        let work = self.root.join("work");
        for e in fs::read_dir(&work).map_err(io_at("reading", &work))? {
            out.push(e.map_err(io_at("reading", &work))?.path());
        }
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps).map_err(io_at("reading", &snaps))? {
            let e = e.map_err(io_at("reading", &snaps))?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_lease_waits_for_shared_holders() {
        let tmp = tempfile::tempdir().unwrap();
        let user = Store::open(tmp.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let root = tmp.path().to_path_buf();
        let collector = std::thread::spawn(move || {
            let mut waited = false;
            let store = Store::open_exclusive(&root, &mut || waited = true).unwrap();
            tx.send(()).unwrap();
            drop(store);
            waited
        });
        // The collector cannot start while the user's store is open.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(user);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the collector runs once the user is gone");
        assert!(collector.join().unwrap(), "on_wait was called");
    }

    #[test]
    fn committed_lists_snapshots_with_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let a = ChainId::new(None, "sha256:a");
        let b = ChainId::new(Some(&a), "sha256:b");
        store.prepare(None).unwrap().commit(&a).unwrap();
        store.prepare(Some(&a)).unwrap().commit(&b).unwrap();
        let mut got = store.committed().unwrap();
        got.sort_by_key(|s| s.parent.is_some());
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].id.clone(), got[0].parent.clone()),
            (a.clone(), None)
        );
        assert_eq!((got[1].id.clone(), got[1].parent.clone()), (b, Some(a)));
        let live = store.prepare(None).unwrap();
        assert_eq!(store.scratch_dirs().unwrap().len(), 1);
        drop(live);
        assert!(store.scratch_dirs().unwrap().is_empty());
    }
}
