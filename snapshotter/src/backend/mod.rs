//! Backends: the ways to present `lowers + upper` as one writable tree at a path.
//!
//! - [`overlay::OverlayBackend`]: kernel overlayfs, mounted inside the build's user and
//!   mount namespace (`userxattr` when not real root);
//! - [`copy::CopyBackend`]: a fresh directory with the lowers' merged view copied in
//!   (reflinks or `copy_file_range` where the filesystem allows); works everywhere.
//!
//! Both honour the same contract, checked by one test battery
//! (`snapshotter/tests/backend_battery.rs`): after a step, [`MountGuard::write_diff`] gives
//! the layer of what changed.

pub mod copy;
pub mod fuse;
pub mod overlay;

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// A way to mount `lowers + upper` at a target.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether this backend works here; the reason when it does not (for `kiln doctor`).
    fn probe(&self, scratch: &Path) -> Result<(), String>;
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
