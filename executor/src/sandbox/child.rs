//! The sandbox's only `unsafe` code: what runs in a forked child between `fork` and
//! `exec` (`Command::pre_exec` hooks), and the raw calls that are sound only while the
//! process has a single thread (`unshare`) or owns a descriptor it was handed by number.
//!
//! Every hook here obeys the same rules, because after `fork` only async-signal-safe work
//! is allowed: it captures by value everything it needs, formatted before the fork; it
//! makes system calls only; it allocates nothing and takes no locks. The forked child has
//! one thread (fork copies only the caller's), so per-thread calls (`unshare`, `setuid`…)
//! change the whole process.

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Gid, Signal, Uid};
use rustix::thread::UnshareFlags;

/// What a child does to enter its namespaces, formatted before the fork.
pub(super) struct Plan {
    flags: UnshareFlags,
    /// `Some((uid_map line, gid_map line))` when a user namespace is made.
    maps: Option<(Vec<u8>, Vec<u8>)>,
}

impl Plan {
    /// Unshares `flags`; with `caller = Some((uid, gid))` also a user namespace mapping
    /// `0 → caller` (setgroups denied).
    pub(super) fn new(mut flags: UnshareFlags, caller: Option<(u32, u32)>) -> Plan {
        if caller.is_some() {
            flags |= UnshareFlags::NEWUSER;
        }
        Plan {
            flags,
            maps: caller.map(|(u, g)| {
                (
                    format!("0 {u} 1\n").into_bytes(),
                    format!("0 {g} 1\n").into_bytes(),
                )
            }),
        }
    }

    fn write(path: &str, data: &[u8]) -> io::Result<()> {
        let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::io::write(&fd, data)?;
        Ok(())
    }

    /// Runs in the forked child: only system calls on data owned by `self`.
    fn run(&self) -> io::Result<()> {
        // Die with kiln: a killed build leaves no step running.
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        // SAFETY: the forked child is single-threaded, so no other thread shares the fd
        // table or the namespaces being replaced.
        unsafe { rustix::thread::unshare_unsafe(self.flags) }?;
        if let Some((uid_map, gid_map)) = &self.maps {
            Self::write("/proc/self/setgroups", b"deny")?;
            Self::write("/proc/self/uid_map", uid_map)?;
            Self::write("/proc/self/gid_map", gid_map)?;
        }
        if self.flags.contains(UnshareFlags::NEWNS) {
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )?;
        }
        Ok(())
    }
}

/// Makes `cmd`'s child carry out `plan` before it executes.
pub(super) fn enter(cmd: &mut Command, plan: Plan) {
    // SAFETY: `Plan::run` is async-signal-safe: it makes only system calls on buffers the
    // plan owns (formatted before the fork), allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || plan.run());
    }
}

/// Makes `cmd`'s child unshare only a user namespace (the parent maps it) and keep the
/// sync pipe's read end `sync_fd` open across exec.
pub(super) fn unshare_user_keeping(cmd: &mut Command, sync_fd: RawFd) {
    // SAFETY: between fork and exec the child only makes system calls (prctl, unshare,
    // fcntl) on values captured by copy; it allocates nothing. The child is
    // single-threaded after fork, so nobody shares what is unshared; `sync_fd` is open in
    // the child because the parent keeps the pipe until the child is spawned.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER)?;
            // The read end must survive exec; it was opened close-on-exec.
            let fd = BorrowedFd::borrow_raw(sync_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
}

/// Makes the process `cmd` starts receive SIGKILL when its parent dies.
pub(super) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is a single async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            Ok(())
        });
    }
}

/// Makes `cmd`'s child switch to `groups`, then `gid`, then `uid` before it executes.
pub(super) fn switch_ids(cmd: &mut Command, groups: Vec<u32>, gid: u32, uid: u32) {
    let groups: Vec<Gid> = groups.into_iter().map(Gid::from_raw).collect();
    // SAFETY: between fork and exec only three system calls on data prepared before the
    // fork; the child has one thread, so the per-thread calls change the whole process.
    unsafe {
        cmd.pre_exec(move || {
            rustix::thread::set_thread_groups(&groups)?;
            rustix::thread::set_thread_gid(Gid::from_raw(gid))?;
            rustix::thread::set_thread_uid(Uid::from_raw(uid))?;
            Ok(())
        });
    }
}

/// Unshares `flags` in this process. Call only first thing in `main`, while the process
/// has a single thread (the callers are the re-executed helpers' entry points).
pub(super) fn unshare_while_single_threaded(flags: UnshareFlags) -> io::Result<()> {
    // SAFETY: the caller runs before any thread is started, so no other thread shares the
    // fd table or the namespaces being replaced.
    unsafe { rustix::thread::unshare_unsafe(flags) }?;
    Ok(())
}

/// Takes ownership of descriptor `fd`, inherited from the parent by number.
///
/// The caller must be the only user of `fd`: the parent passed it to this process for
/// this purpose alone, and nothing else here has opened or wrapped it.
pub(super) fn adopt_inherited_fd(fd: RawFd) -> File {
    // SAFETY: by this function's contract `fd` is owned by nobody else in this process,
    // so the `OwnedFd` is its only owner and closes it once. (If the number is not open,
    // the first read fails with EBADF.)
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}
