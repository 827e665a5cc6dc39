//! The overlay format of committed snapshots and upper directories, shared by `apply`,
//! `diff` and every backend. It is kernel overlayfs's own format, so a stack written by
//! overlayfs, fuse-overlayfs or kiln can be mounted by any of them:
//!
//! - a deleted entry is a **whiteout**: a character device with device number 0/0;
//! - a directory whose lower contents are hidden is **opaque**: it carries the xattr
//!   `user.overlay.opaque` = `y` (in a user namespace) or `trusted.overlay.opaque` = `y`
//!   (as real root); readers accept both, and fuse-overlayfs's `user.fuseoverlayfs.opaque`.
//!
//! [`is_whiteout`] and [`is_opaque`] are the one reader of these markers: the FUSE
//! overlay, the diff and the copy backend all ask them, so a stack reads the same through
//! every backend.
//!
//! OCI layers use the AUFS-style names instead: `.wh.<name>` for a whiteout and
//! `.wh..wh..opq` inside a directory for opacity.

use std::path::Path;

/// Prefix of an OCI whiteout entry name.
pub const OCI_WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker entry.
pub const OCI_OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Opaque xattr written inside a user namespace (overlayfs `userxattr`).
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";
/// Opaque xattr written by real root.
pub const OPAQUE_XATTR_TRUSTED: &str = "trusted.overlay.opaque";
/// Opaque xattr fuse-overlayfs writes when it may not write the overlay ones.
pub const OPAQUE_XATTR_FUSE_OVERLAYFS: &str = "user.fuseoverlayfs.opaque";
/// Every xattr that marks a directory opaque (with value `y`), as readers accept them.
pub const OPAQUE_XATTRS: &[&str] = &[
    OPAQUE_XATTR_USER,
    OPAQUE_XATTR_TRUSTED,
    OPAQUE_XATTR_FUSE_OVERLAYFS,
];
/// A whiteout kiln writes when it may not create the 0/0 character device (an
/// unprivileged process outside a user namespace): an empty regular file carrying this
/// xattr = `y`. Kernel overlayfs (6.7+) reads the same form when the parent directory is
/// marked with [`OPAQUE_XATTR_USER`] = `x`; kiln's readers accept both forms.
pub const WHITEOUT_XATTR_USER: &str = "user.overlay.whiteout";
/// The same xattr whiteout as written by real root.
pub const WHITEOUT_XATTR_TRUSTED: &str = "trusted.overlay.whiteout";
/// Every xattr that makes an empty regular file a whiteout, as readers accept them.
pub const WHITEOUT_XATTRS: &[&str] = &[WHITEOUT_XATTR_USER, WHITEOUT_XATTR_TRUSTED];
/// Opaque-xattr value marking a directory that holds xattr whiteouts (not opaque itself).
pub const XWHITEOUT_PARENT_VALUE: &[u8] = b"x";

/// Every xattr name overlayfs and kiln use for bookkeeping; never copied into layers.
pub const PRIVATE_XATTR_PREFIXES: &[&str] = &[
    "user.overlay.",
    "trusted.overlay.",
    "user.kiln.",
    "user.fuseoverlayfs.",
];

/// True when `name` is an xattr kiln must hide from layers and RUN steps.
pub fn is_private_xattr(name: &[u8]) -> bool {
    PRIVATE_XATTR_PREFIXES
        .iter()
        .any(|p| name.starts_with(p.as_bytes()))
}

/// True when an xattr value marks a directory opaque (`y`, as overlayfs writes it).
pub fn is_opaque_value(value: &[u8]) -> bool {
    value == b"y"
}

/// What [`is_whiteout`] needs to know of an entry's `lstat`: implemented for both
/// `std::fs::Metadata` and `rustix::fs::Stat`, so every reader asks the same question.
pub trait EntryStat {
    /// A character device with device number 0/0.
    fn is_zero_char_device(&self) -> bool;
    /// A regular file of size 0 (the xattr form of a whiteout).
    fn is_empty_regular_file(&self) -> bool;
}

impl EntryStat for std::fs::Metadata {
    fn is_zero_char_device(&self) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        self.file_type().is_char_device() && self.rdev() == 0
    }
    fn is_empty_regular_file(&self) -> bool {
        self.file_type().is_file() && self.len() == 0
    }
}

impl EntryStat for rustix::fs::Stat {
    fn is_zero_char_device(&self) -> bool {
        rustix::fs::FileType::from_raw_mode(self.st_mode) == rustix::fs::FileType::CharacterDevice
            && self.st_rdev == 0
    }
    fn is_empty_regular_file(&self) -> bool {
        rustix::fs::FileType::from_raw_mode(self.st_mode) == rustix::fs::FileType::RegularFile
            && self.st_size == 0
    }
}

/// Whether the entry at `path` (whose `lstat` is `st`) is a whiteout: a 0/0 character
/// device, or an empty regular file carrying one of [`WHITEOUT_XATTRS`].
pub fn is_whiteout(path: &Path, st: &impl EntryStat) -> bool {
    st.is_zero_char_device()
        || (st.is_empty_regular_file()
            && WHITEOUT_XATTRS
                .iter()
                .any(|x| matches!(crate::xattr::get(path, x.as_bytes()), Ok(Some(_)))))
}

/// Whether directory `path` is opaque: one of [`OPAQUE_XATTRS`] is `y`.
pub fn is_opaque(path: &Path) -> bool {
    opaque_by(|x| crate::xattr::get(path, x))
}

/// Whether the open directory `dir` is opaque, as [`is_opaque`] reads it.
pub fn is_opaque_fd(dir: impl std::os::fd::AsFd) -> bool {
    let dir = dir.as_fd();
    opaque_by(|x| crate::xattr::get_fd(dir, x))
}

/// Whether one of [`OPAQUE_XATTRS`], read with `get`, is `y`.
fn opaque_by(get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rustix::io::Errno>) -> bool {
    OPAQUE_XATTRS
        .iter()
        .any(|x| get(x.as_bytes()).is_ok_and(|v| v.is_some_and(|v| is_opaque_value(&v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_xattrs_are_recognised() {
        assert!(is_private_xattr(b"user.overlay.opaque"));
        assert!(is_private_xattr(b"trusted.overlay.redirect"));
        assert!(!is_private_xattr(b"user.mime_type"));
        assert!(!is_private_xattr(b"security.capability"));
    }
}
