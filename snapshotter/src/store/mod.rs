//! The snapshot store: committed snapshots (immutable directories in overlay format, keyed
//! by a blake3 chain id) and active snapshots (an upper, a work and a mount directory that
//! a build step writes through a backend).
//!
//! ```text
//! <root>/lock                     flock: one mutation at a time across kiln processes
//! <root>/gc.lock                  flock: shared while a store is open, exclusive to collect
//! <root>/snapshots/<chainid>/fs   the snapshot's content (its layer, in overlay format)
//! <root>/snapshots/<chainid>/parent   the parent chain id, or empty
//! <root>/work/<id>/{upper,work,mnt,owner}   an active snapshot and the pid that owns it
//! ```
//! A snapshot is committed by renaming a fully written and synced directory into
//! `snapshots/`, so a crash leaves either nothing or a whole snapshot; leftovers of dead
//! processes in `work/` (and unfinished `snapshots/.tmp-*`) are removed when a store is
//! opened. Active snapshots are created, committed and removed under the lock, so that
//! sweep never sees one half made. What collection needs (the lease, listing) is in `gc`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{apply_layer, ApplyError, ApplyOptions, ApplyStats};

/// A chain id: blake3 over the parent's chain id and the layer digest, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(String);

impl ChainId {
    /// The id of the snapshot made by `layer_digest` on top of `parent`.
    pub fn new(parent: Option<&ChainId>, layer_digest: &str) -> ChainId {
        let mut h = blake3::Hasher::new();
        if let Some(p) = parent {
            h.update(p.0.as_bytes());
        }
        h.update(b"\n");
        h.update(layer_digest.as_bytes());
        ChainId(h.finalize().to_hex().to_string())
    }

    /// Parses a stored id (64 hex digits).
    pub fn parse(s: &str) -> Option<ChainId> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| ChainId(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {0} does not exist")]
    NotFound(ChainId),
    #[error("snapshot {0} is the parent of snapshot {1}; remove that first")]
    HasChildren(ChainId, ChainId),
    #[error("snapshot {id} is damaged: {why}")]
    Damaged { id: String, why: String },
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

fn io_at(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        context,
        path,
        source,
    }
}

mod gc;

pub use gc::{Lease, SnapshotEntry};

/// An open store. It holds a lease on the root (shared, or exclusive for a collector: see
/// `gc`) until the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    _lease: Arc<Lease>,
}

/// Holds the store lock until dropped.
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0.as_fd(), rustix::fs::FlockOperation::Unlock);
    }
}

/// This process's identity for owner files: pid and start time (pids are reused).
fn owner_token(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the parenthesised command name.
    let after = &stat[stat.rfind(')')? + 2..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Whether process `pid` runs. A zombie does not: a build killed with its parent stays
/// one until a distant reaper collects it (seconds, or never when the reaper is not
/// `init`), and what it owned must be swept meanwhile.
pub fn process_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
        !matches!(state, Some("Z" | "X"))
    })
}

/// Whether the process a token names still runs (and is the one that wrote it).
fn owner_alive(token: &str) -> bool {
    let Some(pid) = token
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    process_running(pid) && owner_token(pid).as_deref() == Some(token.trim())
}

impl Store {
    /// Opens (creating if needed) a store at `root` and removes what dead processes left.
    /// The store holds the root's shared lease: a collection running now is waited for,
    /// and none starts while the store lives.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::create_dirs(root)?;
        let lease = Lease::shared(root)?;
        let store = Store {
            root: root.to_path_buf(),
            _lease: Arc::new(lease),
        };
        store.sweep()?;
        Ok(store)
    }

    fn create_dirs(root: &Path) -> Result<(), StoreError> {
        for d in ["snapshots", "work"] {
            fs::create_dir_all(root.join(d)).map_err(io_at("creating", &root.join(d)))?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<Lock, StoreError> {
        let path = self.root.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at("opening", &path))?;
        rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_at("locking", &path)(io::Error::from(e)))?;
        Ok(Lock(f))
    }

    fn sweep(&self) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let work = self.root.join("work");
        for e in fs::read_dir(&work).map_err(io_at("reading", &work))? {
            let e = e.map_err(io_at("reading", &work))?;
            let owner = fs::read_to_string(e.path().join("owner")).unwrap_or_default();
            if !owner_alive(&owner) {
                tracing::info!(path = %e.path().display(), "removing an active snapshot left by a dead process");
                remove_tree(&e.path())?;
            }
        }
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps).map_err(io_at("reading", &snaps))? {
            let e = e.map_err(io_at("reading", &snaps))?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                remove_tree(&e.path())?;
            }
        }
        Ok(())
    }

    fn snapshot_dir(&self, id: &ChainId) -> PathBuf {
        self.root.join("snapshots").join(id.as_str())
    }

    /// Whether snapshot `id` is committed.
    pub fn exists(&self, id: &ChainId) -> bool {
        self.snapshot_dir(id).join("fs").is_dir()
    }

    /// The parent of committed snapshot `id`.
    pub fn parent(&self, id: &ChainId) -> Result<Option<ChainId>, StoreError> {
        let path = self.snapshot_dir(id).join("parent");
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(id.clone())
            } else {
                io_at("reading", &path)(e)
            }
        })?;
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        ChainId::parse(t)
            .map(Some)
            .ok_or_else(|| StoreError::Damaged {
                id: id.to_string(),
                why: format!("bad parent id {t:?}"),
            })
    }

    /// The content directories of `id` and its ancestors, top (newest) first: the lower
    /// directories for a mount.
    pub fn lowers(&self, id: &ChainId) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            if !self.exists(&c) {
                return Err(StoreError::NotFound(c));
            }
            out.push(self.snapshot_dir(&c).join("fs"));
            cur = self.parent(&c)?;
            if out.len() > 10_000 {
                return Err(StoreError::Damaged {
                    id: id.to_string(),
                    why: "parent chain loops".into(),
                });
            }
        }
        Ok(out)
    }

    /// A read-only view of committed snapshot `id`: its content directories, top first,
    /// ready to be mounted as lowers.
    pub fn view(&self, id: &ChainId) -> Result<Vec<PathBuf>, StoreError> {
        self.lowers(id)
    }

    /// A fresh directory on the store's own filesystem, where upper and work directories
    /// live, to probe backends in (overlayfs, for one, cannot take its upper directory
    /// on every filesystem: not on another overlay, as a container's root is). It has an
    /// owner file, so the sweep of another process leaves it alone while this process
    /// lives and removes it after; dropped, it is removed.
    pub fn probe_dir(&self) -> Result<tempfile::TempDir, StoreError> {
        let work = self.root.join("work");
        let _lock = self.lock()?;
        let dir = tempfile::Builder::new()
            .prefix("probe-")
            .tempdir_in(&work)
            .map_err(io_at("creating a probe directory in", &work))?;
        let token = owner_token(std::process::id()).unwrap_or_default();
        let owner = dir.path().join("owner");
        fs::write(&owner, token).map_err(io_at("writing", &owner))?;
        Ok(dir)
    }

    /// Starts an active snapshot on top of `parent`.
    pub fn prepare(&self, parent: Option<&ChainId>) -> Result<Active, StoreError> {
        let lowers = match parent {
            Some(p) => self.lowers(p)?,
            None => Vec::new(),
        };
        let work = self.root.join("work");
        // Under the lock: the sweep of another process never sees it without its owner.
        let _lock = self.lock()?;
        let dir = tempfile::Builder::new()
            .prefix("active-")
            .tempdir_in(&work)
            .map_err(io_at("creating an active snapshot in", &work))?
            .keep();
        for d in ["upper", "work", "mnt"] {
            fs::create_dir(dir.join(d)).map_err(io_at("creating", &dir.join(d)))?;
        }
        let token = owner_token(std::process::id()).unwrap_or_default();
        fs::write(dir.join("owner"), token).map_err(io_at("writing", &dir.join("owner")))?;
        Ok(Active {
            store: self.clone(),
            upper: dir.join("upper"),
            dir,
            parent: parent.cloned(),
            lowers,
            done: false,
        })
    }

    /// Applies a layer on top of `parent` and commits it (or returns the existing snapshot).
    pub fn apply(
        &self,
        parent: Option<&ChainId>,
        layer_digest: &str,
        layer: impl Read,
        opts: &ApplyOptions,
    ) -> Result<(Committed, ApplyStats), StoreError> {
        let id = ChainId::new(parent, layer_digest);
        if self.exists(&id) {
            return Ok((
                Committed {
                    dir: self.snapshot_dir(&id).join("fs"),
                    id,
                },
                ApplyStats::default(),
            ));
        }
        let active = self.prepare(parent)?;
        let stats = apply_layer(layer, active.upper(), opts)?;
        Ok((active.commit(&id)?, stats))
    }

    /// Removes committed snapshot `id`; refused while another snapshot has it as parent.
    pub fn remove(&self, id: &ChainId) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        if !self.exists(id) {
            return Err(StoreError::NotFound(id.clone()));
        }
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps).map_err(io_at("reading", &snaps))? {
            let e = e.map_err(io_at("reading", &snaps))?;
            let Some(child) = ChainId::parse(&e.file_name().to_string_lossy()) else {
                continue;
            };
            if self.parent(&child).ok().flatten().as_ref() == Some(id) {
                return Err(StoreError::HasChildren(id.clone(), child));
            }
        }
        // Rename away first so a crash never leaves a half-removed snapshot under its id.
        let doomed = snaps.join(format!(".tmp-remove-{}", id.as_str()));
        let dir = self.snapshot_dir(id);
        fs::rename(&dir, &doomed).map_err(io_at("removing", &dir))?;
        remove_tree(&doomed)
    }
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub id: ChainId,
    /// Its content directory.
    pub dir: PathBuf,
}

/// A snapshot being written. Dropping it without [`Active::commit`] removes it.
#[derive(Debug)]
pub struct Active {
    store: Store,
    dir: PathBuf,
    upper: PathBuf,
    parent: Option<ChainId>,
    lowers: Vec<PathBuf>,
    done: bool,
}

impl Active {
    /// Where the step's changes go (overlay upper directory).
    pub fn upper(&self) -> &Path {
        &self.upper
    }
    /// Overlay's work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Where a backend mounts the merged view.
    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("mnt")
    }
    /// Mounts this snapshot's lowers and upper at its mount point with `backend`.
    pub fn mount(
        &self,
        backend: &dyn crate::backend::Backend,
    ) -> Result<Box<dyn crate::backend::MountGuard>, crate::backend::BackendError> {
        backend.mount(&self.lowers, &self.upper, &self.work(), &self.mount_point())
    }

    /// The committed lower directories, top first.
    pub fn lowers(&self) -> &[PathBuf] {
        &self.lowers
    }
    pub fn parent(&self) -> Option<&ChainId> {
        self.parent.as_ref()
    }

    /// Makes the upper directory the committed snapshot `id`. If `id` already exists
    /// (another process committed the same content), that one is kept.
    pub fn commit(mut self, id: &ChainId) -> Result<Committed, StoreError> {
        let store = self.store.clone();
        let upper = self.upper.clone();
        // Data first: everything the step wrote reaches the disk before the rename.
        if let Ok(f) = File::open(&upper) {
            let _ = rustix::fs::syncfs(f.as_fd());
        }
        let _lock = store.lock()?;
        let target = store.snapshot_dir(id);
        let committed = Committed {
            id: id.clone(),
            dir: target.join("fs"),
        };
        if store.exists(id) {
            return Ok(committed);
        }
        let snaps = store.root.join("snapshots");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&snaps)
            .map_err(io_at("creating a snapshot in", &snaps))?
            .keep();
        let mut parent_file = File::create(tmp.join("parent")).map_err(io_at("writing", &tmp))?;
        parent_file
            .write_all(
                self.parent
                    .as_ref()
                    .map(ChainId::as_str)
                    .unwrap_or("")
                    .as_bytes(),
            )
            .and_then(|()| parent_file.sync_all())
            .map_err(io_at("writing", &tmp))?;
        fs::rename(&upper, tmp.join("fs"))
            .map_err(io_at("moving the upper directory into", &tmp))?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, &target).map_err(io_at("committing", &target))?;
        sync_dir(&snaps)?;
        self.done = true;
        let _ = remove_tree(&self.dir);
        Ok(committed)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tree(&self.dir);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at("syncing", dir))
}

/// Removes a directory tree (or a file), making directories writable first (an
/// unprivileged owner may meet read-only directories in a snapshot). Gone already is fine.
///
/// Both passes go from directory fds, never whole paths: a snapshot may hold a path past
/// `PATH_MAX` once the store's directory is prefixed (one near it inside the mount).
pub fn remove_tree(path: &Path) -> Result<(), StoreError> {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at("removing", path)(e)),
            _ => Ok(()),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let owner_only = rustix::fs::Mode::from_raw_mode(0o700);
    if rustix::fs::chmod(path, owner_only).is_ok() {
        if let Ok(dir) = open_dir_at(rustix::fs::CWD, path) {
            make_dirs_writable(dir);
        }
    }
    fs::remove_dir_all(path).map_err(io_at("removing", path))
}

/// Opens directory `name` below `at`, not following a symlink.
fn open_dir_at(at: impl AsFd, name: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::OFlags;
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// Makes every directory below open directory `dir` readable, writable and searchable
/// by its owner, each named from its parent's fd (best effort: what cannot be changed is
/// left for the removal to report).
fn make_dirs_writable(dir: OwnedFd) {
    use rustix::fs::{AtFlags, FileType};
    let Ok(mut listing) = rustix::fs::Dir::new(dir) else {
        return;
    };
    let mut subdirs = Vec::new();
    while let Some(Ok(e)) = listing.read() {
        let name = e.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if matches!(e.file_type(), FileType::Directory | FileType::Unknown) {
            subdirs.push(name.to_owned());
        }
    }
    let Ok(fd) = listing.fd() else {
        return;
    };
    for name in subdirs {
        let is_dir = rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if !is_dir {
            continue;
        }
        let _ = rustix::fs::chmodat(
            fd,
            name.as_c_str(),
            rustix::fs::Mode::from_raw_mode(0o700),
            AtFlags::empty(),
        );
        if let Ok(child) = open_dir_at(fd, name.as_c_str()) {
            make_dirs_writable(child);
        }
    }
}

#[cfg(test)]
mod tests;
