//! The overlay format of committed snapshots and upper directories, shared by `apply`,
//! `diff` and every backend. It is kernel overlayfs's own format, so a stack written by
//! overlayfs, fuse-overlayfs or kiln can be mounted by any of them:
//!
//! - a deleted entry is a **whiteout**: a character device with device number 0/0;
//! - a directory whose lower contents are hidden is **opaque**: it carries the xattr
//!   `user.overlay.opaque` = `y` (in a user namespace) or `trusted.overlay.opaque` = `y`
//!   (as real root); readers accept both.
//!
//! OCI layers use the AUFS-style names instead: `.wh.<name>` for a whiteout and
//! `.wh..wh..opq` inside a directory for opacity.

/// Prefix of an OCI whiteout entry name.
pub const OCI_WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker entry.
pub const OCI_OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Opaque xattr written inside a user namespace (overlayfs `userxattr`).
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";
/// Opaque xattr written by real root.
pub const OPAQUE_XATTR_TRUSTED: &str = "trusted.overlay.opaque";
/// A whiteout kiln writes when it may not create the 0/0 character device (an
/// unprivileged process outside a user namespace): an empty regular file carrying this
/// xattr = `y`. Kernel overlayfs (6.7+) reads the same form when the parent directory is
/// marked with [`OPAQUE_XATTR_USER`] = `x`; kiln's readers accept both forms.
pub const WHITEOUT_XATTR_USER: &str = "user.overlay.whiteout";
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
