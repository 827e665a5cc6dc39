//! kiln's build executor, as a library.
//!
//! - [`dockerfile`]: the frontend, reading a Dockerfile exactly as BuildKit does;
//! - [`plan`]: the stages a `--target` needs, as a graph, with ARG/ENV scoping;
//! - [`sandbox`]: rootless namespaces and running one RUN step;
//! - [`mounts`]: what a RUN mounts (secrets, ssh agents, caches, binds, tmpfs);
//! - [`image`], [`store`]: image configs and the local OCI image layout;
//! - [`image_run`]: a command in an image of the store (`kiln run`);
//! - [`build`]: the one entry point that turns a Dockerfile and a context into an image.
//!
//! The library never prints; progress reaches the caller as typed events.

pub mod build;
pub mod dockerfile;
pub mod image;
pub mod image_run;
pub mod mounts;
pub mod plan;
pub mod sandbox;
pub mod store;
