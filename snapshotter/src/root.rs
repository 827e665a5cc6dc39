//! [`Root`]: a directory that paths are resolved inside of, never outside, through
//! `openat2(2)` relative to the directory's fd; what layer apply writes through, and what
//! COPY destinations and RUN mount targets are resolved with.
//!
//! Two ways to treat a path that tries to leave ([`Containment`]):
//! - [`Containment::InRoot`] (`RESOLVE_IN_ROOT`): the directory is `/`, as for a process
//!   chrooted there: `..` stops at it and absolute symlinks start from it. This is how a
//!   path inside an image's filesystem means what it means in the container.
//! - [`Containment::Beneath`] (`RESOLVE_BENEATH`): a `..` above the directory or an
//!   absolute symlink is refused with [`RootError::Escapes`]. This is for writing
//!   untrusted layers, where such an entry is an attack, not a path.
//! - [`Containment::Archive`]: absolute symlinks start from the directory (as in
//!   `InRoot`), a `..` above it is refused (as in `Beneath`). This is how BuildKit
//!   unpacks an ADD archive (go-archive's `Unpack` in an `os.Root`, falling back to
//!   chroot-like resolution when the escape was an absolute symlink): a link that the
//!   archive or the image made to `/usr/lib` means the tree's `/usr/lib`, and only a path
//!   that would land outside the tree is refused. Resolution is `RESOLVE_BENEATH` first;
//!   a refused path is walked component by component with those rules, and its final
//!   component opened beneath the directory it resolved to.
//!
//! Magic links (`/proc/self/fd/…`) are never followed. [`Root::resolve`] gives a path for
//! callers that need one (to hand to another process, or to `mount(2)`); it walks the
//! components itself, reading symlinks with `readlinkat`, instead of reading an fd's
//! path back from `/proc`. A path stays valid only while nobody swaps a component for a
//! symlink: prefer the fds when the tree is not yours alone.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

/// Symlinks followed in one resolution before it is given up as a loop (the kernel's
/// own limit).
const MAX_SYMLINKS: usize = 40;

/// What happens to a path that tries to leave the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// The root is `/` for the path: `..` stops at it, absolute symlinks start from it.
    InRoot,
    /// Leaving is an error ([`RootError::Escapes`]).
    Beneath,
    /// Absolute symlinks start from the root; a `..` above it is an error.
    Archive,
}

impl Containment {
    fn flags(self) -> ResolveFlags {
        match self {
            Containment::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            Containment::Beneath | Containment::Archive => {
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
            }
        }
    }

    /// Whether a `..` above the root is an error (else it stays at the root).
    fn refuses_climbing(self) -> bool {
        self != Containment::InRoot
    }

    /// Whether an absolute symlink is an error (else it starts from the root).
    fn refuses_absolute_links(self) -> bool {
        self == Containment::Beneath
    }
}

/// Why a path could not be resolved or opened inside the root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{rel}: resolves outside {root}")]
    Escapes { root: PathBuf, rel: PathBuf },
    #[error("{rel} in {root}: a path component is not a directory")]
    NotDirectory { root: PathBuf, rel: PathBuf },
    #[error("{rel} in {root}: too many levels of symbolic links")]
    SymlinkLoop { root: PathBuf, rel: PathBuf },
    #[error("{rel} in {root}: {context}: {source}")]
    Io {
        root: PathBuf,
        rel: PathBuf,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RootError {
    /// The raw OS error behind an I/O failure (`ENOENT` for a missing path).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            RootError::Open { source, .. } | RootError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// An open directory that paths are resolved inside of.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    containment: Containment,
}

/// One resolved component: its name and, while the path exists, its `O_PATH` fd.
struct Step {
    name: OsString,
    fd: Option<OwnedFd>,
}

impl Root {
    /// Opens `path` as a root with [`Containment::InRoot`] (container semantics).
    pub fn open(path: &Path) -> Result<Root, RootError> {
        Root::open_with(path, Containment::InRoot)
    }

    /// Opens `path` as a root where leaving is refused ([`Containment::Beneath`]).
    pub fn open_beneath(path: &Path) -> Result<Root, RootError> {
        Root::open_with(path, Containment::Beneath)
    }

    /// Opens `path` as a root with `containment`.
    pub fn open_with(path: &Path, containment: Containment) -> Result<Root, RootError> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            containment,
        })
    }

    /// The root's own path, as opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How paths that try to leave are treated.
    pub fn containment(&self) -> Containment {
        self.containment
    }

    /// Opens `rel` (`""`, `.` or `/` being the root itself) with `flags` (`O_CLOEXEC` is
    /// added) and `mode` for a file `O_CREAT` makes. A final symlink is followed unless
    /// `flags` has `O_NOFOLLOW`; either way, inside the root.
    pub fn open_file(&self, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, RootError> {
        let rel = relative(rel);
        let target: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let opened = openat2(
            &self.fd,
            target,
            flags | OFlags::CLOEXEC,
            mode,
            self.containment.flags(),
        )
        .map_err(|e| self.error(rel, "opening", e));
        match opened {
            Err(RootError::Escapes { .. }) if self.containment == Containment::Archive => {
                self.open_through_absolute_links(rel, flags, mode)
            }
            other => other,
        }
    }

    /// [`Containment::Archive`]'s second try: `rel` walked with its rules (absolute
    /// symlinks from the root, no climbing out; the final component too unless `flags`
    /// has `O_NOFOLLOW`), then its last component opened beneath the directory it is in.
    fn open_through_absolute_links(
        &self,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, RootError> {
        let (steps, name) = if flags.contains(OFlags::NOFOLLOW) {
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                return Err(self.error(rel, "opening", Errno::XDEV));
            };
            (self.walk(parent, None)?, name.to_os_string())
        } else {
            let mut steps = self.walk(rel, None)?;
            match steps.pop() {
                Some(last) => (steps, last.name),
                // The root itself.
                None => return self.open_file(Path::new(""), flags, mode),
            }
        };
        let parent: BorrowedFd<'_> = match steps.last() {
            None => self.fd.as_fd(),
            Some(Step { fd: Some(fd), .. }) => fd.as_fd(),
            Some(Step { fd: None, .. }) => return Err(self.error(rel, "opening", Errno::NOENT)),
        };
        openat2(
            parent,
            name.as_os_str(),
            flags | OFlags::CLOEXEC,
            mode,
            self.containment.flags(),
        )
        .map_err(|e| self.error(rel, "opening", e))
    }

    /// An `O_PATH` handle of directory `rel`: for `*at` calls below it (it cannot be read;
    /// open with [`Root::open_file`] and `O_RDONLY | O_DIRECTORY` to list it).
    pub fn open_dir(&self, rel: &Path) -> Result<OwnedFd, RootError> {
        self.open_file(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// Where `rel` is, as a path below [`Root::path`] with every symlink resolved (inside
    /// the root). Components that do not exist (yet) are kept as given, after the part
    /// that exists: the answer for a file about to be created.
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, RootError> {
        let steps = self.walk(rel, None)?;
        let mut out = self.path.clone();
        for s in steps {
            out.push(s.name);
        }
        Ok(out)
    }

    /// Makes directory `rel` and every missing parent (`mode`, and `owner` when given),
    /// following symlinks inside the root; returns an `O_PATH` handle of it.
    pub fn create_dir_all(
        &self,
        rel: &Path,
        mode: Mode,
        owner: Option<(Uid, Gid)>,
    ) -> Result<OwnedFd, RootError> {
        // Usually it is there already: one call.
        match self.open_dir(rel) {
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
            other => return other,
        }
        let steps = self.walk(rel, Some((mode, owner)))?;
        match steps.into_iter().last() {
            Some(Step { fd: Some(fd), .. }) => Ok(fd),
            Some(Step { fd: None, .. }) => Err(self.error(rel, "creating", Errno::NOENT)),
            None => self.open_dir(Path::new("")),
        }
    }

    fn error(&self, rel: &Path, context: &'static str, e: Errno) -> RootError {
        let (root, rel) = (self.path.clone(), rel.to_path_buf());
        match e {
            Errno::XDEV => RootError::Escapes { root, rel },
            Errno::NOTDIR => RootError::NotDirectory { root, rel },
            Errno::LOOP => match self.containment {
                // BENEATH answers ELOOP for magic links and absolute symlinks alike.
                Containment::Beneath | Containment::Archive => RootError::Escapes { root, rel },
                Containment::InRoot => RootError::SymlinkLoop { root, rel },
            },
            e => RootError::Io {
                root,
                rel,
                context,
                source: e.into(),
            },
        }
    }

    /// Resolves `rel` component by component: `..` pops (at the root: stays, or is an
    /// escape when beneath), a symlink's target is read and walked in its place. With
    /// `create`, missing components are made as directories; without, they and what
    /// follows are kept as names only.
    fn walk(
        &self,
        rel: &Path,
        create: Option<(Mode, Option<(Uid, Gid)>)>,
    ) -> Result<Vec<Step>, RootError> {
        let mut todo: VecDeque<OsString> = components(rel).collect();
        let mut done: Vec<Step> = Vec::new();
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if done.pop().is_none() && self.containment.refuses_climbing() {
                    return Err(self.error(rel, "resolving", Errno::XDEV));
                }
                continue;
            }
            let parent: BorrowedFd<'_> = match done.last() {
                None => self.fd.as_fd(),
                Some(Step { fd: Some(fd), .. }) => fd.as_fd(),
                Some(Step { fd: None, .. }) => {
                    done.push(Step { name, fd: None });
                    continue;
                }
            };
            let opened = rustix::fs::openat(
                parent,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            let fd = match opened {
                Ok(fd) => fd,
                Err(Errno::NOENT) => match create {
                    Some((mode, owner)) => {
                        match rustix::fs::mkdirat(parent, name.as_os_str(), mode) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => return Err(self.error(rel, "creating a directory", e)),
                        }
                        if let Some((uid, gid)) = owner {
                            rustix::fs::chownat(
                                parent,
                                name.as_os_str(),
                                Some(uid),
                                Some(gid),
                                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                            )
                            .map_err(|e| self.error(rel, "setting a directory's owner", e))?;
                        }
                        // Walk it again: it is a directory now (or a racing symlink,
                        // which is then followed inside the root like any other).
                        todo.push_front(name);
                        continue;
                    }
                    None => {
                        done.push(Step { name, fd: None });
                        continue;
                    }
                },
                Err(e) => return Err(self.error(rel, "resolving", e)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| self.error(rel, "resolving", e))?;
            match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                rustix::fs::FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(self.error(rel, "resolving", Errno::LOOP));
                    }
                    let target = rustix::fs::readlinkat(parent, name.as_os_str(), Vec::new())
                        .map_err(|e| self.error(rel, "reading a symlink", e))?;
                    let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                    if target.is_absolute() {
                        if self.containment.refuses_absolute_links() {
                            return Err(self.error(rel, "resolving", Errno::XDEV));
                        }
                        done.clear();
                    }
                    for c in components(&target).collect::<Vec<_>>().into_iter().rev() {
                        todo.push_front(c);
                    }
                }
                rustix::fs::FileType::Directory => done.push(Step { name, fd: Some(fd) }),
                // Anything else ends the path, or the path is wrong.
                _ if todo.is_empty() => done.push(Step { name, fd: Some(fd) }),
                _ => return Err(self.error(rel, "resolving", Errno::NOTDIR)),
            }
        }
        Ok(done)
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `rel` without a leading `/` (paths inside a root are relative to it).
fn relative(rel: &Path) -> &Path {
    let bytes = rel.as_os_str().as_bytes();
    let start = bytes.iter().take_while(|b| **b == b'/').count();
    Path::new(OsStr::from_bytes(&bytes[start..]))
}

/// The names of `rel` to walk: normal components and `..`; `/` and `.` dropped.
fn components(rel: &Path) -> impl Iterator<Item = OsString> + '_ {
    rel.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests;
