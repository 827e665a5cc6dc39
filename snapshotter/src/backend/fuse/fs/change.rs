//! A setattr's changes (mode, owner, size, times), applied to an upper entry, or to an
//! open upper fd when the kernel names one (also after an unlink); and the set-ID bits a
//! write or a truncation clears.

use std::os::fd::OwnedFd;

use fuser::{Errno, Request, TimeOrNow};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timestamps};

use super::attr::*;
use crate::backend::fuse::at::At;

/// What a setattr asks for.
pub(super) struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

impl Change {
    fn times(&self) -> Option<Timestamps> {
        (self.atime.is_some() || self.mtime.is_some()).then(|| Timestamps {
            last_access: timespec(self.atime),
            last_modification: timespec(self.mtime),
        })
    }

    /// Applies the change to `up` (an entry of the upper directory).
    pub fn apply_at(&self, req: &Request, up: &At<'_>) -> Result<Stat, Errno> {
        let (dir, rest) = (up.fd(), up.rest());
        if let Some(m) = self.mode {
            rustix::fs::chmodat(dir, rest, Mode::from_raw_mode(m & 0o7777), AtFlags::empty())
                .map_err(rerr)?;
        }
        if self.uid.is_some() || self.gid.is_some() {
            rustix::fs::chownat(
                dir,
                rest,
                self.uid.map(rustix::fs::Uid::from_raw),
                self.gid.map(rustix::fs::Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(rerr)?;
        }
        if let Some(s) = self.size {
            let f = rustix::fs::openat(
                dir,
                rest,
                OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(rerr)?;
            rustix::fs::ftruncate(&f, s).map_err(rerr)?;
            if req.uid() != 0 {
                let st = rustix::fs::statat(dir, rest, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
                if let Some(m) = without_suidgid(&st) {
                    rustix::fs::chmodat(dir, rest, m, AtFlags::empty()).map_err(rerr)?;
                }
            }
        }
        if let Some(ts) = self.times() {
            rustix::fs::utimensat(dir, rest, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
        }
        up.lstat().map_err(errno)?.ok_or(Errno::ENOENT)
    }

    /// Applies the change to `fd`, an open file of the upper directory.
    pub fn apply_fd(&self, req: &Request, fd: &OwnedFd) -> Result<Stat, Errno> {
        if let Some(m) = self.mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(m & 0o7777)).map_err(rerr)?;
        }
        if self.uid.is_some() || self.gid.is_some() {
            rustix::fs::fchown(
                fd,
                self.uid.map(rustix::fs::Uid::from_raw),
                self.gid.map(rustix::fs::Gid::from_raw),
            )
            .map_err(rerr)?;
        }
        if let Some(s) = self.size {
            rustix::fs::ftruncate(fd, s).map_err(rerr)?;
            kill_suidgid(req, fd)?;
        }
        if let Some(ts) = self.times() {
            rustix::fs::futimens(fd, &ts).map_err(rerr)?;
        }
        rustix::fs::fstat(fd).map_err(rerr)
    }
}

/// What the kernel leaves to the filesystem under `FUSE_HANDLE_KILLPRIV_V2`: a write or a
/// truncation by a caller without `CAP_FSETID` clears set-user-ID, and set-group-ID when
/// the group may execute (the daemon's own write keeps them: it has the capability).
/// The caller's capability is not in the request: uid 0 (root of the build's namespace)
/// stands for it, as the kernel's check in that namespace would grant it.
/// Returns whether it cleared any.
pub(in crate::backend::fuse) fn kill_suidgid(req: &Request, fd: &OwnedFd) -> Result<bool, Errno> {
    if req.uid() == 0 {
        return Ok(false);
    }
    let st = rustix::fs::fstat(fd).map_err(rerr)?;
    match without_suidgid(&st) {
        Some(m) => rustix::fs::fchmod(fd, m).map(|()| true).map_err(rerr),
        None => Ok(false),
    }
}

/// The mode of `st` without the set-ID bits a write clears, if that changes it.
fn without_suidgid(st: &Stat) -> Option<Mode> {
    let mut kill = 0o4000;
    if st.st_mode & 0o010 != 0 {
        kill |= 0o2000;
    }
    (st.st_mode & kill != 0 && FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
        .then(|| Mode::from_raw_mode(st.st_mode & 0o7777 & !kill))
}
