//! Detaching: the mounting process starts a serving process in a new session and waits
//! for it to say the mount is live (or why not) on a pipe. The two `unsafe` operations
//! this needs are here, each with the invariant it relies on.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The environment variable that passes the write end of the readiness pipe.
pub const READY_FD_ENV: &str = "KILN_OVERLAY_READY_FD";

/// Makes `cmd`'s child the leader of a new session, so it outlives the caller's
/// terminal and process group.
pub fn in_new_session(cmd: &mut Command) {
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes exactly one system call (setsid),
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
}

/// The readiness pipe the parent passed in [`READY_FD_ENV`], taken once (the variable is
/// removed so nothing started later sees it).
pub fn take_ready_pipe() -> Option<File> {
    let fd = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    std::env::remove_var(READY_FD_ENV);
    let fd = fd?;
    // The fd must be open and ours to own: the parent set the variable to the write end
    // of a pipe it created for this child alone (inherited across exec, not CLOEXEC) and
    // closed its own copy; fcntl checks it is open before it is adopted.
    rustix::io::fcntl_getfd(borrow_for_check(fd)?).ok()?;
    // SAFETY: `fd` is open (checked above), and nothing else in this process owns it: it
    // was inherited from the parent for this purpose and the variable naming it is gone,
    // so this is the only OwnedFd ever made of it.
    Some(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A borrowed view of a raw fd number for the `fcntl` check, without claiming it.
fn borrow_for_check(fd: i32) -> Option<std::os::fd::BorrowedFd<'static>> {
    // SAFETY: the borrow is used only for one fcntl(F_GETFD) before the fd is adopted;
    // F_GETFD on a closed fd fails with EBADF and touches nothing else.
    (fd >= 0).then(|| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}

/// Makes `fd` survive exec in the child (pipes are created close-on-exec).
pub fn inherit(fd: &OwnedFd) -> std::io::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    Ok(())
}
