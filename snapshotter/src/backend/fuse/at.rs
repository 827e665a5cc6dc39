//! Where an entry of a layer is, for the system calls: a directory fd and a path below it
//! ([`At`]), never one absolute path.
//!
//! Every layer's root directory (and the work directory) is opened once, when the mount
//! is made, and kept for its life; every lookup, stat, open, listing and change of the
//! FUSE overlay is a `*at` call relative to one of them. Two reasons:
//! - a path inside the mount may be as long as the kernel allows a path *there*: up to
//!   `PATH_MAX` (4096, its NUL included) less the mount point when named from `/`, and
//!   longer when named from a directory fd or a working directory below the mount (the
//!   kernel has no limit on depth). Prefixed with a layer directory, it would exceed
//!   `PATH_MAX` and fail with `ENAMETOOLONG` where kernel overlayfs succeeds;
//! - the kernel walks only the path below the layer, not the layer directory's own.
//!
//! A path below a root of at most [`LONGEST`] bytes is used as it is: that is every path
//! named from `/` below a mount point of 64 bytes or more, pjdfstest's `enametoolong`
//! cases among them. A longer one (named from a directory deeper in the mount, or from
//! `/` below a shorter mount point) is resolved one stretch at a time: the directory that
//! ends its first [`LONGEST`] bytes is opened (`O_PATH`) and the rest is relative to
//! that, so no depth is too deep; only such paths pay the extra `openat`. The battery's
//! deep-path case (4,092 bytes below the root) goes that way.
//!
//! The cost: a mount holds one fd per layer for its life (a 200-layer stack, 201 fds).
//!
//! Extended attributes have no `*at` calls before Linux 6.13: they are read and written
//! through `/proc/self/fd/N/rest` with the `l*xattr` calls ([`At::xattr_path`],
//! [`crate::proc_fd`]), which names the same entry (a symlink itself, not its target)
//! with a path that stays short; [`LONGEST`] leaves room for the prefix.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

/// The longest path below a directory fd that is used as it is.
const LONGEST: usize = crate::proc_fd::LONGEST_BELOW;

/// Opens directory `dir` (the root of a layer, or the work directory) for the mount's life.
pub(super) fn open_root(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("opening {}: {e}", dir.display()),
        )
    })
}

/// A directory fd: a root kept open, or one opened on the way to a long path.
enum Base<'a> {
    Root(BorrowedFd<'a>),
    Deep(OwnedFd),
}

/// An entry as the `*at` calls name it: a directory fd and a path below it of at most
/// [`LONGEST`] bytes (`.` for the directory itself).
pub(super) struct At<'a> {
    base: Base<'a>,
    rest: Cow<'a, Path>,
}

impl<'a> At<'a> {
    /// `rel` (relative, `""` for `root` itself) below directory `root`.
    pub fn new(root: BorrowedFd<'a>, rel: &'a Path) -> io::Result<At<'a>> {
        if rel.as_os_str().is_empty() {
            return Ok(At {
                base: Base::Root(root),
                rest: Cow::Borrowed(Path::new(".")),
            });
        }
        if rel.as_os_str().len() <= LONGEST {
            return Ok(At {
                base: Base::Root(root),
                rest: Cow::Borrowed(rel),
            });
        }
        let mut base = Base::Root(root);
        let mut rest = rel.as_os_str().as_bytes();
        while rest.len() > LONGEST {
            // Names are at most 255 bytes, so the first LONGEST bytes hold a slash.
            let cut = rest[..=LONGEST]
                .iter()
                .rposition(|b| *b == b'/')
                .ok_or_else(|| io::Error::from(rustix::io::Errno::NAMETOOLONG))?;
            let dir = rustix::fs::openat(
                base.fd(),
                OsStr::from_bytes(&rest[..cut]),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            base = Base::Deep(dir);
            rest = &rest[cut + 1..];
        }
        Ok(At {
            base,
            rest: Cow::Owned(PathBuf::from(OsStr::from_bytes(rest))),
        })
    }

    /// The directory fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.base.fd()
    }

    /// The path below [`Self::fd`].
    pub fn rest(&self) -> &Path {
        &self.rest
    }

    /// A path naming the entry for calls that have no `*at` form (the `l*xattr` calls),
    /// through the fd's `/proc/self/fd` link: short, whatever the depth.
    pub fn xattr_path(&self) -> PathBuf {
        crate::proc_fd::of(&self.fd()).join(&*self.rest)
    }

    /// `lstat`, reading "no such entry" (also through a non-directory) as `None`.
    pub fn lstat(&self) -> io::Result<Option<Stat>> {
        lstat_at(self.fd(), self.rest())
    }
}

impl Base<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Base::Root(fd) => *fd,
            Base::Deep(fd) => fd.as_fd(),
        }
    }
}

/// `lstat` of `rest` below `dir`, reading "no such entry" (also through a non-directory)
/// as `None`.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, rest: &Path) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, rest, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// "No such entry" from resolving a long path's directories, as `lstat` reads it.
pub(super) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR)
    )
}

/// A directory's entries, read once, and the open directory they are relative to.
pub(super) struct Listing {
    dir: rustix::fs::Dir,
    /// Name and type of every entry but `.` and `..`, in the directory's order.
    pub entries: Vec<(OsString, FileType)>,
}

impl Listing {
    /// The entries of open directory `dir` (as [`At::open_dir`] gives it).
    pub fn read(dir: OwnedFd) -> io::Result<Listing> {
        let mut dir = rustix::fs::Dir::new(dir)?;
        let mut entries = Vec::new();
        while let Some(e) = dir.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            entries.push((OsStr::from_bytes(name).to_os_string(), e.file_type()));
        }
        // Filesystems that give no type in the listing: asked one by one.
        let dfd = dir.fd()?;
        for (name, ft) in entries.iter_mut() {
            if *ft == FileType::Unknown {
                if let Some(st) = lstat_at(dfd, Path::new(name))? {
                    *ft = FileType::from_raw_mode(st.st_mode);
                }
            }
        }
        Ok(Listing { dir, entries })
    }

    /// Entry `name` of the directory.
    pub fn child<'a>(&'a self, name: &'a OsStr) -> io::Result<At<'a>> {
        let fd = self.dir.fd()?;
        At::new(fd, Path::new(name))
    }
}

impl At<'_> {
    /// Opens the directory here for reading (never following a symlink); `None` when
    /// no directory is here (nothing, or something else: ask [`Self::lstat`]).
    pub fn open_dir(&self) -> io::Result<Option<OwnedFd>> {
        match rustix::fs::openat(
            self.fd(),
            self.rest(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The entries of the directory here (never following a symlink); `None` when there
    /// is none.
    pub fn list(&self) -> io::Result<Option<Listing>> {
        self.open_dir()?.map(Listing::read).transpose()
    }
}
