//! The build cache: a step's key → the snapshot and layer it committed, so an unchanged
//! step costs a lookup (`CACHED`) instead of a run.
//!
//! - [`key`]: step keys, blake3 over everything a step's result depends on;
//! - [`context`]: content digests of COPY/ADD sources and bind-mounted trees;
//! - [`entries`]: entries on disk, written atomically, checked against the store;
//! - [`transfer`]: `--cache-to`/`--cache-from`, the cache shared through a registry or an
//!   OCI layout;
//! - [`remote`]: the layers an imported registry cache names, fetched when needed.
//!
//! Filesystem steps (RUN, COPY, ADD, WORKDIR) are cached; config-only steps are cheap and
//! always re-applied, so their history carries this build's timestamps. Secret and ssh
//! values never enter a key (changing a secret does not bust the cache, as in BuildKit),
//! nor does a cache mount's content.

pub mod context;
pub mod entries;
pub mod key;
pub mod remote;
pub mod transfer;

pub use context::ContextDigests;
pub use entries::{CacheError, CachedStep, StepCache};
pub use key::{KeyHasher, StepKey};
pub use remote::RemoteBlobs;
