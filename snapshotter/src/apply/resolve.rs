//! Where a layer entry goes: its name split into components, and its parent directory
//! opened beneath the snapshot root through [`crate::root::Root`] (`RESOLVE_BENEATH`), so
//! that nothing a tar says can make kiln write outside it: `..` that would climb out,
//! absolute symlinks and symlinks whose targets leave the root are refused
//! ([`RootError::Escapes`]). Final components are then created or changed with `*at`
//! calls relative to the resolved parent's fd, never following a final symlink.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::Mode;

use crate::root::{Root, RootError};

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

/// Opens directory `comps` beneath `root` (an `O_PATH` handle); with `create`, missing
/// directories are made (mode 0755, owned by the caller).
pub(crate) fn resolve_dir(
    root: &Root,
    comps: &[&[u8]],
    create: bool,
) -> Result<OwnedFd, RootError> {
    let joined = comps.join(&b'/');
    let rel = Path::new(OsStr::from_bytes(&joined));
    if create {
        root.create_dir_all(rel, Mode::from_raw_mode(0o755), None)
    } else {
        root.open_dir(rel)
    }
}
