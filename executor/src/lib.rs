//! kiln's build executor, as a library.
//!
//! Today it holds the Dockerfile frontend ([`dockerfile`]) and the build plan ([`plan`]):
//! understanding a Dockerfile exactly as BuildKit does, and turning its stages into the
//! graph of work a `--target` needs; and the beginning of the rootless [`sandbox`]. The
//! library never prints; callers render results.

pub mod dockerfile;

pub mod plan;
pub mod sandbox;
