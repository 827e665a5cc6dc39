//! Diff: an upper directory in overlay format → an OCI layer tar stream.
//!
//! Only the upper directory is walked, so the cost follows what the step changed, not the
//! size of the layers below. Children are visited in byte order of their names (a
//! directory before its contents), so one tree always gives the same bytes. Conversions:
//! - a whiteout (a 0/0 character device, or an empty file with
//!   [`format::WHITEOUT_XATTR_USER`]) becomes an empty `.wh.<name>` file, dated 0 (or
//!   `source_date_epoch`) whatever the deletion's time;
//! - an opaque directory (`user.`/`trusted.overlay.opaque` = `y`) becomes the directory
//!   entry followed by `<dir>/.wh..wh..opq`;
//! - host ids are mapped back to container ids (ids outside the mapping become 65534,
//!   the kernel's overflow id, as they appear inside the namespace);
//! - files hard-linked within the upper become one file and tar hard links to it;
//! - extended attributes other than overlay's and kiln's own go into PAX records;
//! - with `source_date_epoch`, every mtime later than it is clamped to it.
//!
//! Sockets are skipped (tar cannot hold them, and BuildKit skips them too).

pub(crate) mod lowers;
mod tar_writer;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::format;
use crate::idmap::IdMap;
use tar_writer::{EntryMeta, TarWriter};

/// How to write a diff.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    /// Clamp mtimes to this (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<u64>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            uid_map: IdMap::identity(),
            gid_map: IdMap::identity(),
            source_date_epoch: None,
        }
    }
}

/// What a diff wrote. No entries means an empty diff: no layer is made for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Why a diff could not be written.
#[derive(Debug, thiserror::Error)]
#[error("diffing {path}: {source}")]
pub struct DiffError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The overflow id the kernel shows for ids outside a user namespace's mapping.
const OVERFLOW_ID: u64 = 65534;

/// Writes the OCI tar of `upper` to `out`.
pub fn write_diff<W: Write>(
    upper: &Path,
    opts: &DiffOptions,
    out: W,
) -> Result<DiffStats, DiffError> {
    run(upper, None, None, opts, out)
}

/// Writes the OCI tar of an overlay `upper` whose lowers are `lowers` (top first): as
/// [`write_diff`], but a directory that was only copied up (same owner, mode, times and
/// xattrs as in the lowers, not opaque) is not written itself, as containerd's and
/// BuildKit's differs leave it out; what changed inside it is.
pub fn write_upper_diff<W: Write>(
    upper: &Path,
    lowers: &[PathBuf],
    opts: &DiffOptions,
    out: W,
) -> Result<DiffStats, DiffError> {
    run(upper, None, Some(lowers::LowerView { lowers }), opts, out)
}

/// Writes the OCI tar of what differs between the full tree `merged` and the merged view
/// of `lowers` (top first): the copy backend's diff. Changed and new entries are written
/// whole; entries of the lowers missing from `merged` become whiteouts.
pub fn write_diff_against_lowers<W: Write>(
    merged: &Path,
    lowers: &[PathBuf],
    opts: &DiffOptions,
    out: W,
) -> Result<DiffStats, DiffError> {
    run(merged, Some(lowers::LowerView { lowers }), None, opts, out)
}

fn run<W: Write>(
    root: &Path,
    base: Option<lowers::LowerView<'_>>,
    upper_lowers: Option<lowers::LowerView<'_>>,
    opts: &DiffOptions,
    out: W,
) -> Result<DiffStats, DiffError> {
    let mut d = Differ {
        root,
        opts,
        tar: TarWriter::new(out),
        stats: DiffStats::default(),
        links: HashMap::new(),
        base,
        upper_lowers,
    };
    d.dir(root, Vec::new())?;
    d.tar.finish().map_err(|source| DiffError {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(d.stats)
}

struct Differ<'a, W: Write> {
    /// The tree walked (for messages: every entry is reached from its directory's fd).
    root: &'a Path,
    /// The lowers to compare against (copy backend); `None` for an overlay upper.
    base: Option<lowers::LowerView<'a>>,
    /// An overlay upper's lowers, to leave out directories that were only copied up.
    upper_lowers: Option<lowers::LowerView<'a>>,
    opts: &'a DiffOptions,
    tar: TarWriter<W>,
    stats: DiffStats,
    /// (dev, ino) of multiply-linked files already written → their entry path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

/// The xattrs of `path` that belong in a layer, sorted by name.
fn layer_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = crate::xattr::read_all(path, |n| !format::is_private_xattr(n))?;
    out.sort();
    Ok(out)
}

impl<W: Write> Differ<'_, W> {
    fn mtime(&self, md: &Metadata) -> u64 {
        let m = md.mtime().max(0) as u64;
        match self.opts.source_date_epoch {
            Some(e) => m.min(e),
            None => m,
        }
    }

    fn emit(
        &mut self,
        path: &Path,
        meta: EntryMeta<'_>,
        data: &mut dyn io::Read,
    ) -> Result<(), DiffError> {
        self.tar.append(&meta, data).map_err(|source| DiffError {
            path: path.to_path_buf(),
            source,
        })?;
        self.stats.entries += 1;
        self.stats.bytes += meta.size;
        Ok(())
    }

    /// `rel` (relative, as the tar names it) below the root, for messages.
    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.root.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Writes the entries of directory `dir` (`rel` in the tar, `""` or ending in `/`).
    ///
    /// `dir` is opened and its entries named `/proc/self/fd/N/name`: every path stays
    /// short whatever the depth, so an entry whose path is past `PATH_MAX` once the
    /// upper directory is prefixed (a path near it inside the mount) is diffed like any
    /// other.
    fn dir(&mut self, dir: &Path, rel: Vec<u8>) -> Result<(), DiffError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DiffError { path, source }
        };
        let shown_dir = self.shown(&rel);
        let (_dir_fd, dir) = crate::proc_fd::open_dir(dir).map_err(err(&shown_dir))?;
        let dir = &dir;
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .map_err(err(&shown_dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(err(&shown_dir))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        // Entries of the lowers that are gone from the tree (copy backend) become
        // whiteouts, written in name order among the others, where an overlay upper
        // directory has its whiteouts: both backends give the same bytes.
        let mut gone: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        if let Some(base) = &self.base {
            let present: std::collections::BTreeSet<Vec<u8>> =
                names.iter().map(|n| n.as_bytes().to_vec()).collect();
            gone = base
                .children(&rel)
                .into_iter()
                .filter(|n| !present.contains(n))
                .collect();
            names.extend(gone.iter().map(|g| OsString::from_vec(g.clone())));
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        }
        for name in names {
            if gone.contains(name.as_bytes()) {
                let mut wh = rel.clone();
                wh.extend_from_slice(format::OCI_WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name.as_bytes());
                let mtime = self.opts.source_date_epoch.unwrap_or(0);
                self.emit(
                    &shown_dir,
                    plain_entry(&wh, tar::EntryType::Regular, mtime),
                    &mut io::empty(),
                )?;
                continue;
            }
            let path = dir.join(&name);
            let mut child = rel.clone();
            child.extend_from_slice(name.as_bytes());
            let shown = self.shown(&child);
            let md = fs::symlink_metadata(&path).map_err(err(&shown))?;
            let mtime = self.mtime(&md);
            if let Some(base) = &self.base {
                let lower = base.lookup(&child);
                let unchanged = lower
                    .as_ref()
                    .is_some_and(|(lp, lmd)| lowers::same_entry(&path, &md, lp, lmd));
                if md.is_dir() {
                    if unchanged || lower.as_ref().is_some_and(|(_, l)| l.is_dir() && unchanged) {
                        let mut dir_path = child.clone();
                        dir_path.push(b'/');
                        self.dir(&path, dir_path)?;
                        continue;
                    }
                } else if unchanged {
                    continue;
                }
            }
            if let (Some(ul), true) = (&self.upper_lowers, md.is_dir()) {
                let copied_up = !format::is_opaque(&path)
                    && ul.lookup(&child).is_some_and(|(lp, lmd)| {
                        lmd.is_dir() && lowers::same_entry(&path, &md, &lp, &lmd)
                    });
                if copied_up {
                    let mut dir_path = child.clone();
                    dir_path.push(b'/');
                    self.dir(&path, dir_path)?;
                    continue;
                }
            }
            if format::is_whiteout(&path, &md) {
                let mut wh = rel.clone();
                wh.extend_from_slice(format::OCI_WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(name.as_bytes());
                // Not the time of the deletion: a whiteout's time says nothing, and the
                // copy backend's diff (which has no whiteout to read it from) writes the
                // same, so every backend gives the same layer.
                let mtime = self.opts.source_date_epoch.unwrap_or(0);
                self.emit(
                    &shown,
                    plain_entry(&wh, tar::EntryType::Regular, mtime),
                    &mut io::empty(),
                )?;
                continue;
            }
            let uid = self
                .opts
                .uid_map
                .to_container(md.uid())
                .map_or(OVERFLOW_ID, u64::from);
            let gid = self
                .opts
                .gid_map
                .to_container(md.gid())
                .map_or(OVERFLOW_ID, u64::from);
            let xattrs = layer_xattrs(&path).map_err(err(&shown))?;
            let mode = md.mode() & 0o7777;
            let ft = md.file_type();
            let mut meta = EntryMeta {
                path: &child,
                kind: tar::EntryType::Regular,
                mode,
                uid,
                gid,
                mtime,
                size: 0,
                link: &[],
                dev: (0, 0),
                xattrs: &xattrs,
            };
            if ft.is_dir() {
                let mut dir_path = child.clone();
                dir_path.push(b'/');
                meta.path = &dir_path;
                meta.kind = tar::EntryType::Directory;
                self.emit(&shown, meta, &mut io::empty())?;
                if format::is_opaque(&path) {
                    let mut opq = dir_path.clone();
                    opq.extend_from_slice(format::OCI_OPAQUE_MARKER.as_bytes());
                    self.emit(
                        &shown,
                        plain_entry(&opq, tar::EntryType::Regular, mtime),
                        &mut io::empty(),
                    )?;
                }
                self.dir(&path, dir_path)?;
            } else if ft.is_file() {
                if md.nlink() > 1 {
                    let key = (md.dev(), md.ino());
                    if let Some(first) = self.links.get(&key).cloned() {
                        meta.kind = tar::EntryType::Link;
                        meta.link = &first;
                        meta.xattrs = &[];
                        self.emit(&shown, meta, &mut io::empty())?;
                        continue;
                    }
                    self.links.insert(key, child.clone());
                }
                meta.size = md.len();
                let mut f = File::open(&path).map_err(err(&shown))?;
                self.emit(&shown, meta, &mut f)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(err(&shown))?;
                meta.kind = tar::EntryType::Symlink;
                meta.link = target.as_os_str().as_bytes();
                let target_bytes = meta.link.to_vec();
                meta.link = &target_bytes;
                self.emit(&shown, meta, &mut io::empty())?;
            } else if ft.is_char_device() || ft.is_block_device() {
                meta.kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                meta.dev = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
                self.emit(&shown, meta, &mut io::empty())?;
            } else if ft.is_fifo() {
                meta.kind = tar::EntryType::Fifo;
                self.emit(&shown, meta, &mut io::empty())?;
            } else {
                tracing::debug!(path = %shown.display(), "socket skipped in layer");
            }
        }
        Ok(())
    }
}

fn plain_entry(path: &[u8], kind: tar::EntryType, mtime: u64) -> EntryMeta<'_> {
    EntryMeta {
        path,
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime,
        size: 0,
        link: &[],
        dev: (0, 0),
        xattrs: &[],
    }
}

#[cfg(test)]
mod tests;
