//! The copy backend: the lowers' merged view copied into the target directory, where the
//! step writes directly; its diff compares the tree with the lowers
//! ([`crate::diff::write_diff_against_lowers`]). Slow to mount for big trees, but it needs
//! nothing from the kernel: it works on any filesystem, in any container.
//!
//! [`materialize`] is also how other backends flatten lower stacks that are too deep.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags};

use super::{Backend, BackendError, BackendKind, MountGuard, ProbeError};
use crate::diff::{write_diff_against_lowers, DiffError, DiffOptions, DiffStats};
use crate::format;

/// Copies every lower into a fresh tree.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyBackend;

struct CopyMount {
    root: PathBuf,
    lowers: Vec<PathBuf>,
}

impl MountGuard for CopyMount {
    fn root(&self) -> &Path {
        &self.root
    }
    fn write_diff(&self, opts: &DiffOptions, out: &mut dyn Write) -> Result<DiffStats, DiffError> {
        write_diff_against_lowers(&self.root, &self.lowers, opts, out)
    }
}

impl Backend for CopyBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Copy
    }
    fn changes_in_upper(&self) -> bool {
        false
    }
    fn works_here(&self, _scratch: &Path) -> Result<(), ProbeError> {
        Ok(())
    }
    fn mount(
        &self,
        lowers: &[PathBuf],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> Result<Box<dyn MountGuard>, BackendError> {
        materialize(lowers, target).map_err(|source| BackendError::Io {
            backend: "copy",
            context: format!("copying the lower layers into {}", target.display()),
            source,
        })?;
        Ok(Box::new(CopyMount {
            root: target.to_path_buf(),
            lowers: lowers.to_vec(),
        }))
    }
}

/// Copies the merged view of `lowers` (top first, overlay format) into `target`.
pub fn materialize(lowers: &[PathBuf], target: &Path) -> io::Result<()> {
    fs::create_dir_all(target)?;
    let mut links = Links::new();
    for lower in lowers.iter().rev() {
        links.clear();
        merge_dir(lower, target, &mut links)?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// Applies one lower directory onto `dst` with overlay semantics.
/// (dev, ino) of a multiply-linked file copied already → where its copy is (its
/// directory, kept open, and its name).
type Links = HashMap<(u64, u64), (Rc<OwnedFd>, OsString)>;

/// Merges `src` into `dst`. Both are opened and their entries named through their fds
/// ([`crate::proc_fd`]): a tree may hold paths past `PATH_MAX` once its directory is
/// prefixed.
fn merge_dir(src: &Path, dst: &Path, links: &mut Links) -> io::Result<()> {
    let (_src_fd, src) = crate::proc_fd::open_dir(src)?;
    let (dst_fd, dst) = crate::proc_fd::open_dir(dst)?;
    let (src, dst, dst_fd) = (src.as_path(), dst.as_path(), Rc::new(dst_fd));
    let mut names: Vec<_> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let s = src.join(&name);
        let d = dst.join(&name);
        let md = fs::symlink_metadata(&s)?;
        if format::is_whiteout(&s, &md) {
            remove_any(&d)?;
            continue;
        }
        let existing = fs::symlink_metadata(&d).ok();
        if md.is_dir() {
            match existing {
                Some(e) if e.is_dir() => {
                    if format::is_opaque(&s) {
                        for child in fs::read_dir(&d)? {
                            remove_any(&child?.path())?;
                        }
                    }
                }
                Some(_) => {
                    remove_any(&d)?;
                    fs::create_dir(&d)?;
                }
                None => fs::create_dir(&d)?,
            }
            merge_dir(&s, &d, links)?;
            copy_metadata(&s, &d, &md)?;
            continue;
        }
        if existing.is_some() {
            remove_any(&d)?;
        }
        let ft = md.file_type();
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some((dir, first)) = links.get(&(md.dev(), md.ino())) {
                    rustix::fs::linkat(&**dir, first, &*dst_fd, &name, AtFlags::empty())?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), (dst_fd.clone(), name.clone()));
            }
            copy_file(&s, &d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else {
                continue; // sockets
            };
            match rustix::fs::mknodat(
                rustix::fs::CWD,
                &d,
                kind,
                rustix::fs::Mode::from_raw_mode(0o600),
                md.rdev(),
            ) {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        copy_metadata(&s, &d, &md)?;
    }
    Ok(())
}

/// Gives every directory below `upper` the owner, mode, times and xattrs it has at the
/// same place in `tree`, deepest first: after a layer of `tree`'s changes is replayed
/// into an empty upper directory, the parents apply had to create (fresh, with the
/// time of now) look as they do in the tree, as a copied-up directory would.
pub(crate) fn copy_dir_metadata(tree: &Path, upper: &Path) -> io::Result<()> {
    for e in fs::read_dir(upper)? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let (t, u) = (tree.join(e.file_name()), e.path());
        copy_dir_metadata(&t, &u)?;
        match fs::symlink_metadata(&t) {
            Ok(md) if md.is_dir() => copy_metadata(&t, &u, &md)?,
            _ => {}
        }
    }
    Ok(())
}

/// Copies file contents: a reflink when the filesystem can, else `copy_file_range`.
pub(crate) fn copy_file(src: &Path, dst: &Path) -> io::Result<()> {
    let from = File::open(src)?;
    let to = File::create(dst)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(());
    }
    let len = from.metadata()?.len();
    let mut copied = 0u64;
    while copied < len {
        let want = usize::try_from(len - copied)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(&from, None, &to, None, want) {
            Ok(0) => break,
            Ok(n) => copied += n as u64,
            Err(_) => {
                // Fall back to a plain copy (e.g. across filesystems on old kernels).
                let mut r = File::open(src)?;
                let mut w = File::create(dst)?;
                io::copy(&mut r, &mut w)?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Owner (when permitted), xattrs (not overlay's own), mode and times of `src` onto `dst`.
pub(crate) fn copy_metadata(src: &Path, dst: &Path, md: &fs::Metadata) -> io::Result<()> {
    let _ = rustix::fs::chownat(
        rustix::fs::CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    );
    if let Ok(xattrs) = crate::xattr::read_all(src, |n| !format::is_private_xattr(n)) {
        for (name, value) in xattrs {
            let _ = rustix::fs::lsetxattr(dst, name.as_slice(), &value, XattrFlags::empty());
        }
    }
    if !md.file_type().is_symlink() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let ts = |s: i64, ns: i64| Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let times = Timestamps {
        last_access: ts(md.atime(), md.atime_nsec()),
        last_modification: ts(md.mtime(), md.mtime_nsec()),
    };
    rustix::fs::utimensat(rustix::fs::CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
