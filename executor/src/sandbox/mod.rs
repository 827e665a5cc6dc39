//! The rootless sandbox: how kiln gets the privileges it needs without having them.
//!
//! - [`subid`]: the caller's subordinate id ranges (`/etc/subuid`, `/etc/subgid`) and the
//!   `newuidmap`/`newgidmap` helpers, which decide between a full and a single mapping;
//! - [`userns`]: starting a process in new user, mount (and other) namespaces with the
//!   single mapping `0 → caller`, or just a private mount namespace as real root.
//!
//! RUN execution (pid 1, /proc, /dev, pivot_root, capabilities) builds on these.

pub mod subid;
pub mod userns;
