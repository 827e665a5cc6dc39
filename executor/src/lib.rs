//! kiln's build executor, as a library.
//!
//! The public API an embedder needs is at the crate root: [`Build`] / [`build`] run a
//! build described by [`BuildOptions`] (with [`BuildOptions::builder`]), progress arrives
//! as [`Event`]s, failures as [`BuildError`]. Call [`sandbox::prelude`] first thing in
//! `main`. The rooms behind it:
//!
//! - [`dockerfile`]: the frontend, reading a Dockerfile exactly as BuildKit does;
//! - [`plan`]: the stages a `--target` needs, as a graph, with ARG/ENV scoping;
//! - [`graph`]: the plan lowered to steps, each with what it reads;
//! - `schedule`: walks the step graph, stages in parallel as their inputs are ready;
//! - [`cache`]: step keys and the build cache;
//! - `step`: runs one step (config instructions, COPY/ADD, RUN) on a snapshot;
//! - `export`: the image into the store, and every `-o` output;
//! - [`image`]: image configs, history, base images;
//! - [`store`]: the local OCI image layout;
//! - [`sandbox`]: rootless namespaces and running one RUN step;
//! - [`mounts`]: what a RUN mounts (secrets, ssh agents, caches, binds, tmpfs);
//! - [`context`]: the build context's `.dockerignore` and COPY patterns;
//! - [`image_run`]: a command in an image of the store (`kiln run`).
//!
//! The library never prints; progress reaches the caller as typed events.

mod build;
pub mod cache;
mod cancel;
pub mod context;
pub mod dockerfile;
mod error;
mod event;
mod export;
#[cfg(test)]
mod fuzz;
pub mod graph;
pub mod image;
pub mod image_run;
pub mod lint;
pub mod mounts;
mod options;
pub mod plan;
pub mod registry;
pub mod sandbox;
mod schedule;
mod snapshots;
mod step;
pub mod store;

pub use build::{build, build_with_channel, Build, BuildResult};
pub use cancel::CancelToken;
pub use error::{BuildError, RunFailure, SetupError, StepError, StepFailure};
pub use event::Event;
pub use export::{Output, OutputError};
pub use options::{
    default_root, BuildOptions, BuildOptionsBuilder, Entitlements, NamedContext, UnknownEntitlement,
};
pub use snapshots::{BackendChoice, LayerCompression};
