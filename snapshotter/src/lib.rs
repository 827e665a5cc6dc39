//! kiln's snapshotter: copy-on-write snapshots for build steps, and the bridge between
//! snapshots and OCI layers. It knows nothing of Dockerfiles.
//!
//! - [`format`](mod@crate::format): the on-disk overlay format every module agrees on (whiteouts, opaque dirs).
//! - [`idmap`]: container ids ↔ host ids through the build's user-namespace mapping.
//! - [`apply`]: OCI layer → directory, never writing outside it.
//! - [`diff`]: upper directory → deterministic OCI tar stream.
//! - [`layer`]: tar stream → compressed, content-addressed blob in one pass.
//! - [`store`]: committed and active snapshots on disk, crash-safe.
//! - [`root`]: [`Root`], paths resolved inside a directory, never outside (`openat2`).
//! - [`backend`]: overlay and copy mounts of `lowers + upper`, one contract.
//! - [`testsuite`]: tree descriptions for the shared backend battery.

pub mod apply;
pub mod backend;
pub mod diff;
pub mod format;
pub mod idmap;
pub mod layer;
pub mod root;
pub mod store;
pub mod testsuite;
mod xattr;

pub use root::{Containment, Root, RootError};
