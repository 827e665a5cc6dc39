//! kiln's snapshotter: copy-on-write snapshots for build steps, and the bridge between
//! snapshots and OCI layers. It knows nothing of Dockerfiles.
//!
//! An embedder needs [`Snapshotter`] and the types around it, re-exported here:
//! `Snapshotter::open(root, BackendChoice::Auto)`, then `prepare` → write into
//! [`ActiveSnapshot::root`] → `commit`, `view`, `import_dir`, `apply_layer`.
//!
//! - [`snapshotter`](mod@crate::snapshotter): the facade.
//! - [`format`](mod@crate::format): the on-disk overlay format every module agrees on (whiteouts, opaque dirs).
//! - [`idmap`]: container ids ↔ host ids through the build's user-namespace mapping.
//! - [`apply`]: OCI layer → directory, never writing outside it.
//! - [`diff`]: upper directory → deterministic OCI tar stream.
//! - [`layer`]: tar stream → compressed, content-addressed blob in one pass.
//! - [`store`]: committed and active snapshots on disk, crash-safe.
//! - [`root`]: [`Root`], paths resolved inside a directory, never outside (`openat2`).
//! - [`backend`]: overlay and copy mounts of `lowers + upper`, one contract.
//! - [`testsuite`]: tree descriptions for the shared backend battery.
//! - `proc_fd`: short paths for entries of open directories (`/proc/self/fd/N/name`).
//!
//! The library has no `unsafe`; the `kiln-overlay` mount program (`src/bin/kiln-overlay`)
//! keeps its fork/exec-time `unsafe` in one module of its own.

#![forbid(unsafe_code)]

pub mod apply;
pub mod backend;
pub mod diff;
pub mod format;
pub mod idmap;
pub mod layer;
mod proc_fd;
pub mod root;
pub mod snapshotter;
pub mod store;
pub mod testsuite;
mod xattr;

pub use backend::choice::probe_all;
pub use backend::{BackendChoice, BackendKind, ProbeError};
pub use diff::DiffOptions;
pub use layer::{Layer, LayerCompression};
pub use root::{Containment, Root, RootError};
pub use snapshotter::{
    copy_tree, ActiveSnapshot, CommitOptions, Committed, Snapshotter, SnapshotterError, View,
};
pub use store::ChainId;
