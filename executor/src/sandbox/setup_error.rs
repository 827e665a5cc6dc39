//! Why pid 1 could not set up a step's root: [`SetupError`], with what it was doing.

use std::io;

/// A failure while preparing the root filesystem or a step's mounts inside it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file operation failed while doing `context`.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A system call (mount, chdir, pivot_root, …) failed while doing `context`.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: rustix::io::Errno,
    },
    /// A mount target outside the root (`..`).
    #[error("mount target {0:?} leaves the root")]
    TargetLeavesRoot(String),
    /// A mount target whose path goes through a symlink.
    #[error("mount target {0:?} passes through a symlink")]
    TargetThroughSymlink(String),
    /// A file operation failed (the path is in the message).
    #[error(transparent)]
    File(#[from] io::Error),
    /// Mount options holding a NUL byte.
    #[error(transparent)]
    Options(#[from] std::ffi::NulError),
}

/// Labels an `io::Error` with what was being done.
pub(super) fn io_doing(context: String) -> impl FnOnce(io::Error) -> SetupError {
    move |source| SetupError::Io { context, source }
}

/// Labels a failed system call with what was being done.
pub(super) fn sys_doing(context: String) -> impl FnOnce(rustix::io::Errno) -> SetupError {
    move |source| SetupError::Sys { context, source }
}
