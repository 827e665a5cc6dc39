//! Resolving paths of a layer entry beneath the snapshot root, so that nothing a tar says
//! can make kiln write outside it.
//!
//! Every lookup goes through `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`
//! relative to the root directory fd: `..` that would climb out, absolute symlinks and
//! symlinks whose targets leave the root make the kernel refuse with `EXDEV`, which
//! becomes [`ResolveError::Escapes`]. Final components are then created or changed with
//! `*at` calls relative to the resolved parent's fd, never following a final symlink.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{mkdirat, openat2, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a path could not be resolved beneath the root.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// Resolution would leave the root (a `..` or a symlink pointing out).
    Escapes,
    /// A component is not a directory.
    NotDirectory,
    Io(Errno),
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// Splits an entry name into normal components: leading `/` and `./` are dropped (tar
/// names are relative to the layer root), `.` and empty components are ignored, and
/// `..` anywhere is refused.
pub(crate) fn components(name: &[u8]) -> Result<Vec<&[u8]>, ()> {
    let mut out = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(()),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn open_dir(root: impl AsFd, path: &[u8]) -> Result<OwnedFd, ResolveError> {
    let path = if path.is_empty() { &b"."[..] } else { path };
    openat2(
        root,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(|e| match e {
        Errno::XDEV | Errno::LOOP => ResolveError::Escapes,
        Errno::NOTDIR => ResolveError::NotDirectory,
        e => ResolveError::Io(e),
    })
}

/// Opens directory `comps` beneath `root`; with `create`, missing directories are made
/// (mode 0755, owned by the caller).
pub(crate) fn resolve_dir(
    root: impl AsFd + Copy,
    comps: &[&[u8]],
    create: bool,
) -> Result<OwnedFd, ResolveError> {
    let full = comps.join(&b'/');
    match open_dir(root, &full) {
        Err(ResolveError::Io(Errno::NOENT)) if create => {}
        other => return other,
    }
    let mut fd = open_dir(root, b"")?;
    for i in 0..comps.len() {
        let prefix = comps[..=i].join(&b'/');
        fd = match open_dir(root, &prefix) {
            Ok(fd) => fd,
            Err(ResolveError::Io(Errno::NOENT)) => {
                match mkdirat(&fd, comps[i], Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(ResolveError::Io(e)),
                }
                open_dir(root, &prefix)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(fd)
}
