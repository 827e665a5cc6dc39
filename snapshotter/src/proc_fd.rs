//! Short paths for the entries of open directories: `/proc/self/fd/N/name` names `name`
//! in the directory open as fd `N`, whatever that directory's own path, so no path is
//! ever longer than what lies below a directory kept open. The one home of that rule for
//! code that needs a path: calls with no `*at` form (the `l*xattr` calls, before Linux
//! 6.13) and walks written with `std::fs`.
//!
//! A tree may hold paths past `PATH_MAX` (4096 bytes, the NUL included) once its own
//! directory is prefixed: a path near `PATH_MAX` inside a mount, which the kernel allows,
//! lands in an upper directory deeper than the mount point. A path reached from the
//! `/proc` link stays short; [`ShortPath`] re-bases a growing one on its directory's link
//! before it gets too long. The link names the entry itself (`l*` calls do not follow a
//! final symlink), and needs `/proc` mounted, as kiln does anyway.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// `PATH_MAX`, the NUL included.
pub(crate) const PATH_MAX: usize = 4096;

/// The longest path below an open directory used as it is: the `/proc/self/fd/N/`
/// prefix (at most 25 bytes) + it + NUL still fit in [`PATH_MAX`].
pub(crate) const LONGEST_BELOW: usize = PATH_MAX - 64;

/// `/proc/self/fd/N` for the open directory `dir`.
pub(crate) fn of(dir: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// Opens directory `path` (for reading) and gives its `/proc/self/fd` path: the fd must
/// outlive every use of the path.
pub(crate) fn open_dir(path: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let named = of(&fd);
    Ok((fd, named))
}

/// A path grown one name at a time that stays short enough for one system call: past
/// [`LONGEST_BELOW`] bytes, the directory reached so far is opened (`O_PATH`) and the path
/// goes on from its `/proc/self/fd` link. The fds live as long as the path.
pub(crate) struct ShortPath {
    path: PathBuf,
    _dirs: Vec<OwnedFd>,
}

impl ShortPath {
    pub fn new(start: &Path) -> ShortPath {
        ShortPath {
            path: start.to_path_buf(),
            _dirs: Vec::new(),
        }
    }

    /// Appends `name` (one component).
    pub fn push(&mut self, name: &OsStr) -> io::Result<()> {
        if self.path.as_os_str().len() + 1 + name.len() > LONGEST_BELOW {
            let dir = rustix::fs::open(
                &self.path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.path = of(&dir);
            self._dirs.push(dir);
        }
        self.path.push(name);
        Ok(())
    }
}

impl AsRef<Path> for ShortPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for ShortPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}
