//! TEMPORARY: the snapshotter facade's API over the old snapshotter items, until the
//! facade lands in `kiln-snapshotter`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_snapshotter::backend::copy::CopyBackend;
use kiln_snapshotter::backend::fuse::FuseBackend;
use kiln_snapshotter::backend::overlay::OverlayBackend;
use kiln_snapshotter::backend::{Backend, MountGuard};
pub use kiln_snapshotter::diff::DiffOptions;
pub use kiln_snapshotter::layer::{Layer, LayerCompression};
pub use kiln_snapshotter::store::ChainId;
use kiln_snapshotter::store::{Active, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Overlay,
    Fuse,
    Copy,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "overlay" => Ok(BackendChoice::Overlay),
            "fuse" => Ok(BackendChoice::Fuse),
            "copy" => Ok(BackendChoice::Copy),
            _ => Err("auto, overlay, fuse, copy".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Overlay,
    Fuse,
    Copy,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotterError(String);

fn e(x: impl std::fmt::Display) -> SnapshotterError {
    SnapshotterError(x.to_string())
}

#[derive(Clone)]
pub struct Snapshotter {
    store: Store,
    backend: Arc<dyn Backend>,
    kind: BackendKind,
    reason: String,
    scratch: PathBuf,
}

pub struct ActiveSnapshot {
    guard: Option<Box<dyn MountGuard>>,
    active: Active,
    root: PathBuf,
}

impl ActiveSnapshot {
    pub fn root(&self) -> &Path {
        &self.root
    }
}

pub struct View {
    _guard: Option<Box<dyn MountGuard>>,
    _active: Option<Active>,
    _empty: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl View {
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub diff: DiffOptions,
    pub blob_dir: PathBuf,
    pub compression: LayerCompression,
}

pub struct Committed {
    pub chain: ChainId,
    pub layer: Layer,
}

pub fn copy_tree(src: &Path, dest: &Path) -> Result<(), SnapshotterError> {
    kiln_snapshotter::backend::copy::materialize(&[src.to_path_buf()], dest).map_err(e)
}

impl Snapshotter {
    pub fn open(
        root: &Path,
        choice: BackendChoice,
        scratch: &Path,
    ) -> Result<Snapshotter, SnapshotterError> {
        let store = Store::open(root).map_err(e)?;
        let works = |b: &dyn Backend| {
            let probe = scratch.join(format!("probe-{}", b.name()));
            let ok = b.probe(&probe);
            let _ = std::fs::remove_dir_all(&probe);
            ok
        };
        let (backend, kind, reason): (Arc<dyn Backend>, BackendKind, String) = match choice {
            BackendChoice::Overlay => (
                Arc::new(OverlayBackend),
                BackendKind::Overlay,
                "asked".into(),
            ),
            BackendChoice::Copy => (Arc::new(CopyBackend), BackendKind::Copy, "asked".into()),
            BackendChoice::Fuse => {
                works(&FuseBackend).map_err(e)?;
                (Arc::new(FuseBackend), BackendKind::Fuse, "asked".into())
            }
            BackendChoice::Auto => {
                if works(&OverlayBackend).is_ok() {
                    (
                        Arc::new(OverlayBackend),
                        BackendKind::Overlay,
                        "auto".into(),
                    )
                } else if works(&FuseBackend).is_ok() {
                    (Arc::new(FuseBackend), BackendKind::Fuse, "auto".into())
                } else {
                    (Arc::new(CopyBackend), BackendKind::Copy, "auto".into())
                }
            }
        };
        Ok(Snapshotter {
            store,
            backend,
            kind,
            reason,
            scratch: scratch.to_path_buf(),
        })
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn prepare(&self, parent: Option<&ChainId>) -> Result<ActiveSnapshot, SnapshotterError> {
        let active = self.store.prepare(parent).map_err(e)?;
        let guard = active.mount(self.backend.as_ref()).map_err(e)?;
        Ok(ActiveSnapshot {
            root: guard.root().to_path_buf(),
            guard: Some(guard),
            active,
        })
    }

    pub fn view(&self, parent: Option<&ChainId>) -> Result<View, SnapshotterError> {
        match parent {
            None => {
                let d = tempfile::tempdir_in(&self.scratch).map_err(e)?;
                Ok(View {
                    root: d.path().to_path_buf(),
                    _guard: None,
                    _active: None,
                    _empty: Some(d),
                })
            }
            Some(c) => {
                let active = self.store.prepare(Some(c)).map_err(e)?;
                let guard = active.mount(self.backend.as_ref()).map_err(e)?;
                Ok(View {
                    root: guard.root().to_path_buf(),
                    _guard: Some(guard),
                    _active: Some(active),
                    _empty: None,
                })
            }
        }
    }

    pub fn commit(
        &self,
        mut active: ActiveSnapshot,
        opts: &CommitOptions,
    ) -> Result<Option<Committed>, SnapshotterError> {
        let guard = active.guard.take().ok_or_else(|| e("not mounted"))?;
        let layer = kiln_snapshotter::layer::write_layer(
            guard.as_ref(),
            &opts.diff,
            &opts.blob_dir,
            opts.compression,
        )
        .map_err(e)?;
        drop(guard);
        let Some(layer) = layer else { return Ok(None) };
        let id = ChainId::new(active.active.parent(), &layer.digest);
        if self.kind == BackendKind::Copy && !self.store.exists(&id) {
            let f = std::fs::File::open(&layer.path).map_err(e)?;
            kiln_snapshotter::apply::apply_layer(
                std::io::BufReader::new(f),
                active.active.upper(),
                &Default::default(),
            )
            .map_err(e)?;
        }
        active.active.commit(&id).map_err(e)?;
        Ok(Some(Committed { chain: id, layer }))
    }

    pub fn import_dir(
        &self,
        parent: Option<&ChainId>,
        dir: &Path,
        opts: &CommitOptions,
    ) -> Result<Option<Committed>, SnapshotterError> {
        let active = self.store.prepare(parent).map_err(e)?;
        kiln_snapshotter::backend::copy::materialize(&[dir.to_path_buf()], active.upper())
            .map_err(e)?;
        let guard = active.mount(self.backend.as_ref()).map_err(e)?;
        let a = ActiveSnapshot {
            root: guard.root().to_path_buf(),
            guard: Some(guard),
            active,
        };
        self.commit(a, opts)
    }

    pub fn apply_layer(
        &self,
        parent: Option<&ChainId>,
        layer_digest: &str,
        blob: impl Read,
    ) -> Result<ChainId, SnapshotterError> {
        let id = ChainId::new(parent, layer_digest);
        if !self.store.exists(&id) {
            self.store
                .apply(parent, layer_digest, blob, &Default::default())
                .map_err(e)?;
        }
        Ok(id)
    }

    pub fn exists(&self, id: &ChainId) -> bool {
        self.store.exists(id)
    }
}
