//! Support for the snapshotter's test battery (and the FUSE backend's, later): a textual
//! description of a directory tree, so two trees (a mounted view and the result of
//! applying its layer, say) can be compared entry by entry.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::format;
use crate::format::{is_opaque, is_whiteout};

/// What a description includes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Describe {
    /// Report whiteouts and opaque directories (trees in overlay format).
    pub overlay_format: bool,
    /// Include directory modification times.
    pub dir_times: bool,
}

/// Relative path → `kind details mode uid gid mtime xattrs` for every entry below `root`.
/// Files are described by content hash and, when hard-linked, link count; times in
/// seconds; symlink and whiteout times are left out (no tool keeps them alike).
pub fn describe_tree(root: &Path, how: Describe) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    walk(root, b"", how, &mut out);
    out
}

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> =
        crate::xattr::read_all(p, |n| !format::is_private_xattr(n))
            .unwrap_or_default()
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v))
            .collect();
    out.sort();
    out
}

/// Describes the entries of `dir`, named through its fd ([`crate::proc_fd`]): a tree
/// past `PATH_MAX` deep is described whole.
fn walk(dir: &Path, rel: &[u8], how: Describe, out: &mut BTreeMap<Vec<u8>, String>) {
    let Ok((_fd, dir)) = crate::proc_fd::open_dir(dir) else {
        return;
    };
    let dir = dir.as_path();
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(n.as_bytes());
        let ft = md.file_type();
        let whiteout = how.overlay_format && is_whiteout(&p, &md);
        let what = if whiteout {
            "whiteout".to_string()
        } else if ft.is_dir() {
            if how.overlay_format {
                format!("dir opaque={}", is_opaque(&p))
            } else {
                "dir".to_string()
            }
        } else if ft.is_file() {
            let mut h = blake3::Hasher::new();
            let hash = fs::File::open(&p)
                .ok()
                .and_then(|f| {
                    h.update_reader(f)
                        .ok()
                        .map(|h| h.finalize().to_hex().to_string())
                })
                .unwrap_or_else(|| "unreadable".into());
            let link = if md.nlink() > 1 {
                format!(" nlink={}", md.nlink())
            } else {
                String::new()
            };
            format!("file {hash}{link}")
        } else if ft.is_symlink() {
            format!(
                "symlink {}",
                fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            format!("dev {}", md.rdev())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        let mtime = if ft.is_symlink() || whiteout || (ft.is_dir() && !how.dir_times) {
            0
        } else {
            md.mtime()
        };
        out.insert(
            r.clone(),
            format!(
                "{what} mode={mode:o} uid={} gid={} mtime={mtime} xattrs={:?}",
                md.uid(),
                md.gid(),
                xattrs(&p)
            ),
        );
        if ft.is_dir() && !whiteout {
            walk(&p, &r, how, out);
        }
    }
}
