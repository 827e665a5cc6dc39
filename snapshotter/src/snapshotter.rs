//! [`Snapshotter`]: the one thing an embedder sees of storage. It holds the snapshot
//! [`Store`] and the backend that mounts snapshots, and offers the step life cycle:
//!
//! ```text
//! prepare(parent) → ActiveSnapshot (mounted, writable) → commit → Some(Committed) | None
//! view(parent)    → View (mounted; dropped: unmounted and removed, nothing committed)
//! import_dir / apply_layer → a committed snapshot from a directory / a layer blob
//! ```
//!
//! Whatever the backend, committing gives the same snapshot: the copy backend, which has
//! no upper directory, replays the step's layer into one here.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{apply_layer, ApplyError, ApplyOptions, ApplyStats};
use crate::backend::choice::{self, BackendChoice, BackendKind};
use crate::backend::{Backend, BackendError, MountGuard, ProbeError};
use crate::diff::{DiffError, DiffOptions};
use crate::layer::{write_layer, Layer, LayerCompression, LayerError};
use crate::store::{Active, ChainId, Store, StoreError};

/// Why a snapshotter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("snapshotter {kind} was asked for but does not work here: {source}")]
    Unavailable {
        kind: BackendKind,
        #[source]
        source: ProbeError,
    },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How a commit writes its layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Id mapping and timestamp clamp of the diff.
    pub diff: DiffOptions,
    /// Where the layer blob goes (`<blob_dir>/<sha256 hex>`).
    pub blob_dir: PathBuf,
    pub compression: LayerCompression,
}

/// A committed snapshot and the layer it was made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub chain: ChainId,
    pub layer: Layer,
}

/// Snapshots on disk and the backend that mounts them. Cheap to clone; shared across
/// threads.
#[derive(Clone)]
pub struct Snapshotter {
    store: Store,
    backend: Arc<dyn Backend>,
    kind: BackendKind,
    reason: Arc<str>,
}

impl fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshotter")
            .field("root", &self.store.root())
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .finish()
    }
}

/// A writable, mounted snapshot on top of its parent. Dropped without
/// [`Snapshotter::commit`]: unmounted and removed.
pub struct ActiveSnapshot {
    // Field order is drop order: unmount before the directories go.
    guard: Box<dyn MountGuard>,
    active: Active,
}

impl ActiveSnapshot {
    /// The root of the mounted tree, where the step writes.
    pub fn root(&self) -> &Path {
        self.guard.root()
    }

    /// The snapshot it is on top of.
    pub fn parent(&self) -> Option<&ChainId> {
        self.active.parent()
    }
}

impl fmt::Debug for ActiveSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveSnapshot")
            .field("root", &self.root())
            .field("parent", &self.parent())
            .finish()
    }
}

/// A mounted tree to read. Dropped: unmounted and removed; nothing is committed.
pub struct View {
    root: PathBuf,
    // Field order is drop order: unmount before the directories go.
    _guard: Option<Box<dyn MountGuard>>,
    _active: Active,
}

impl View {
    /// The root of the tree (an empty directory for a view of nothing).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View").field("root", &self.root()).finish()
    }
}

impl Snapshotter {
    /// Opens the store at `root` (created if needed; leftovers of dead processes swept)
    /// with the backend `choice` names, probed in a directory of the store, on the
    /// filesystem its snapshots are mounted from (a probe elsewhere, on a tmpfs, can
    /// pass where the store's filesystem then fails the mounts).
    pub fn open(root: &Path, choice: BackendChoice) -> Result<Snapshotter, SnapshotterError> {
        let store = Store::open(root)?;
        let probe_dir = store.probe_dir()?;
        let chosen = choice::choose(choice, probe_dir.path())
            .map_err(|(kind, source)| SnapshotterError::Unavailable { kind, source })?;
        drop(probe_dir);
        tracing::info!(backend = %chosen.kind, reason = %chosen.reason, "snapshotter");
        Ok(Snapshotter {
            store,
            backend: chosen.backend,
            kind: chosen.kind,
            reason: chosen.reason.into(),
        })
    }

    /// The backend that mounts.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Why this backend (`auto: kernel overlayfs works here`, …).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// A writable snapshot on `parent` (`None`: on nothing), mounted.
    pub fn prepare(&self, parent: Option<&ChainId>) -> Result<ActiveSnapshot, SnapshotterError> {
        let active = self.store.prepare(parent)?;
        let guard = active.mount(self.backend.as_ref())?;
        Ok(ActiveSnapshot { guard, active })
    }

    /// A mounted tree of `parent` to read (`None`: an empty directory).
    pub fn view(&self, parent: Option<&ChainId>) -> Result<View, SnapshotterError> {
        let active = self.store.prepare(parent)?;
        let guard = match parent {
            Some(_) => Some(active.mount(self.backend.as_ref())?),
            None => None,
        };
        let root = match &guard {
            Some(g) => g.root().to_path_buf(),
            None => active.mount_point(),
        };
        Ok(View {
            root,
            _guard: guard,
            _active: active,
        })
    }

    /// Commits what changed in `active` as a layer (its blob in `opts.blob_dir`) and a
    /// snapshot; `None` when nothing changed (no layer, nothing committed).
    pub fn commit(
        &self,
        active: ActiveSnapshot,
        opts: &CommitOptions,
    ) -> Result<Option<Committed>, SnapshotterError> {
        let ActiveSnapshot { guard, active } = active;
        let layer = match write_layer(guard.as_ref(), &opts.diff, &opts.blob_dir, opts.compression)
        {
            Ok(layer) => layer,
            Err(e) => {
                // Unmounted first: the active snapshot's tree is removed when it drops,
                // which a live mount on it would stop half-way (a full disk left one).
                drop(guard);
                drop(active);
                return Err(e.into());
            }
        };
        // The copy backend's tree stays on disk (in the active snapshot) once unmounted.
        let tree = guard.root().to_path_buf();
        drop(guard);
        let Some(layer) = layer else {
            return Ok(None);
        };
        let chain = ChainId::new(active.parent(), &layer.digest);
        if !self.backend.changes_in_upper() && !self.store.exists(&chain) {
            // The step wrote into a full copy, not an upper directory: the snapshot is
            // the layer itself, applied (its cost is the size of the change).
            let blob = File::open(&layer.path).map_err(|source| SnapshotterError::Io {
                context: "reading the layer",
                path: layer.path.clone(),
                source,
            })?;
            let apply = ApplyOptions {
                uid_map: opts.diff.uid_map.clone(),
                gid_map: opts.diff.gid_map.clone(),
                ..ApplyOptions::default()
            };
            apply_layer(BufReader::new(blob), active.upper(), &apply)?;
            crate::backend::copy::copy_dir_metadata(&tree, active.upper()).map_err(|source| {
                SnapshotterError::Io {
                    context: "copying directory metadata from",
                    path: tree.clone(),
                    source,
                }
            })?;
        }
        active.commit(&chain)?;
        Ok(Some(Committed { chain, layer }))
    }

    /// The contents of `dir` as one layer on `parent`, committed; `None` when that
    /// changes nothing.
    pub fn import_dir(
        &self,
        parent: Option<&ChainId>,
        dir: &Path,
        opts: &CommitOptions,
    ) -> Result<Option<Committed>, SnapshotterError> {
        let copy_err = |source| SnapshotterError::Io {
            context: "copying",
            path: dir.to_path_buf(),
            source,
        };
        let active = self.store.prepare(parent)?;
        let active = if self.backend.changes_in_upper() {
            // Straight into the upper directory: no copy through the mount.
            crate::backend::copy::materialize(&[dir.to_path_buf()], active.upper())
                .map_err(copy_err)?;
            let guard = active.mount(self.backend.as_ref())?;
            ActiveSnapshot { guard, active }
        } else {
            let guard = active.mount(self.backend.as_ref())?;
            crate::backend::copy::materialize(&[dir.to_path_buf()], guard.root())
                .map_err(copy_err)?;
            ActiveSnapshot { guard, active }
        };
        self.commit(active, opts)
    }

    /// Applies a base-image layer (`blob`: plain, gzip or zstd tar) on `parent` as a
    /// committed snapshot, with what applying did (its `warnings`: what was skipped or
    /// not kept, for the user); when that snapshot exists already, nothing is read and
    /// the stats are empty.
    pub fn apply_layer(
        &self,
        parent: Option<&ChainId>,
        layer_digest: &str,
        blob: impl Read,
    ) -> Result<(ChainId, ApplyStats), SnapshotterError> {
        let (committed, stats) =
            self.store
                .apply(parent, layer_digest, blob, &ApplyOptions::default())?;
        Ok((committed.id, stats))
    }

    /// Whether snapshot `id` is committed.
    pub fn exists(&self, id: &ChainId) -> bool {
        self.store.exists(id)
    }

    /// Removes committed snapshot `id` (refused while a snapshot has it as parent).
    pub fn remove(&self, id: &ChainId) -> Result<(), SnapshotterError> {
        Ok(self.store.remove(id)?)
    }
}

/// Copies the tree at `src` into `dest` (created if missing), with owners (where
/// permitted), modes, times, xattrs and hard links: `-o type=local` exports and
/// cache-mount seeding.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<(), SnapshotterError> {
    crate::backend::copy::materialize(&[src.to_path_buf()], dest).map_err(|source| {
        SnapshotterError::Io {
            context: "copying",
            path: src.to_path_buf(),
            source,
        }
    })
}
