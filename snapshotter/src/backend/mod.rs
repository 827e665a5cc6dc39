//! Backends: the ways to present `lowers + upper` as one writable tree at a path.
//!
//! - [`overlay::OverlayBackend`]: kernel overlayfs, mounted inside the build's user and
//!   mount namespace (`userxattr` when not real root);
//! - [`copy::CopyBackend`]: a fresh directory with the lowers' merged view copied in
//!   (reflinks or `copy_file_range` where the filesystem allows); works everywhere.
//!
//! - [`fuse::FuseBackend`]: kiln's own FUSE overlay, served by threads of this process.
//!
//! All honour the same contract, checked by one test battery
//! (`snapshotter/tests/backend_battery.rs`): after a step, [`MountGuard::write_diff`] gives
//! the layer of what changed. [`choice`] probes them and picks one.

pub mod choice;
pub mod copy;
pub mod fuse;
pub mod overlay;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use choice::{BackendChoice, BackendKind};

use crate::diff::{DiffError, DiffOptions, DiffStats};

/// Why a backend could not mount.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend}: {context}: {source}")]
    Io {
        backend: &'static str,
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a backend does not work here (for `kiln doctor` and `auto`'s reason).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("preparing {path}: {source}")]
    Setup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source}; {hint}")]
    Mount {
        /// What the backend needs that may be missing.
        hint: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("reading through the {kind} mount: {source}")]
    Read {
        kind: BackendKind,
        #[source]
        source: std::io::Error,
    },
    #[error("the {kind} mount served wrong data")]
    WrongData { kind: BackendKind },
}

impl ProbeError {
    /// Turns a failure to create `path` into a [`ProbeError::Setup`].
    pub fn setup(path: &Path) -> impl FnOnce(std::io::Error) -> ProbeError {
        let path = path.to_path_buf();
        move |source| ProbeError::Setup { path, source }
    }
}

/// A way to mount `lowers + upper` at a target.
pub trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Its name in messages.
    fn name(&self) -> &'static str {
        self.kind().name()
    }
    /// Whether a step's changes land in the upper directory (overlay, FUSE) rather than
    /// in the mounted tree only (copy), where committing must replay the layer.
    fn changes_in_upper(&self) -> bool {
        true
    }
    /// Whether this backend works here (a probe mount in `scratch`); why not when it
    /// does not.
    fn works_here(&self, scratch: &Path) -> Result<(), ProbeError>;
    /// Presents `lowers` (top first) with `upper` on top at `target`. `work` is scratch
    /// space on the same filesystem as `upper`.
    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Box<dyn MountGuard>, BackendError>;
}

/// A live mount; unmounted (or cleaned up) when dropped.
pub trait MountGuard: Send {
    /// The root of the merged tree.
    fn root(&self) -> &Path;
    /// Writes the layer of what changed since the mount to `out`.
    fn write_diff(&self, opts: &DiffOptions, out: &mut dyn Write) -> Result<DiffStats, DiffError>;
}
