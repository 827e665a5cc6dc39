//! Apply: an OCI layer (a tar stream, plain, gzip or zstd — told apart by their magic
//! bytes) written into a directory.
//!
//! Two targets share the code ([`ApplyTarget`]):
//! - **overlay**: a fresh directory that becomes one committed snapshot in overlay format;
//!   `.wh.<name>` becomes a whiteout (a 0/0 character device, or the xattr form of
//!   [`crate::format::WHITEOUT_XATTR_USER`] when device nodes may not be made) and
//!   `.wh..wh..opq` marks the directory opaque;
//! - **merged**: a directory that already holds the lower layers' merged view (the copy
//!   backend, exports); whiteouts delete, an opaque marker empties the directory of what
//!   the lower layers put there.
//!
//! Nothing is ever written outside the directory: every parent path is resolved beneath
//! it (`resolve`), `..` components and hard-link targets that leave it are refused with
//! an error naming the entry, and final components are created without following
//! symlinks. Ownership goes through the id mapping; what an unprivileged process may not
//! do (device nodes, foreign owners, `trusted.*` xattrs) is skipped with one warning per
//! kind and layer instead of failing the build.

mod resolve;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::Timespec;
use rustix::fs::{
    chmodat, chownat, linkat, lsetxattr, mknodat, openat, statat, symlinkat, unlinkat, utimensat,
    AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags,
};
use rustix::fs::{Gid, Uid};
use rustix::io::Errno;

use crate::format;
use crate::idmap::IdMap;
use crate::root::{Containment, Root, RootError};
use resolve::{components, resolve_dir};

/// Where a layer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTarget {
    /// A fresh snapshot directory in overlay format.
    Overlay,
    /// A directory holding the merged lower layers.
    Merged,
    /// A plain directory an archive is unpacked into (ADD of a local archive): `.wh.`
    /// names are ordinary files there, never deletions, as in BuildKit.
    Plain,
}

/// How to apply a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub target: ApplyTarget,
    /// Container uid → host uid.
    pub uid_map: IdMap,
    /// Container gid → host gid.
    pub gid_map: IdMap,
    /// The xattr that marks opaque directories in overlay mode.
    pub opaque_xattr: &'static str,
    /// Every entry owned by these (container) ids instead of the archive's
    /// (`ADD --chown`).
    pub owner: Option<(u32, u32)>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            target: ApplyTarget::Overlay,
            uid_map: IdMap::identity(),
            gid_map: IdMap::identity(),
            opaque_xattr: if crate::idmap::is_real_root() {
                format::OPAQUE_XATTR_TRUSTED
            } else {
                format::OPAQUE_XATTR_USER
            },
            owner: None,
        }
    }
}

/// What applying did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// One line per kind of thing that was skipped or not kept (for the caller to show
    /// the user; the library prints nothing).
    pub warnings: Vec<String>,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
    #[error("layer entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("layer entry {entry:?}: {context}: {source}")]
    Entry {
        entry: String,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("opening {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The compression of a layer stream, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Looks at the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A reader of the uncompressed tar inside a (possibly compressed) layer stream.
pub fn decompressed<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buf = BufReader::with_capacity(256 * 1024, reader);
    let head = buf.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        Compression::None => Box::new(buf),
    })
}

/// Applies the layer read from `reader` into `dest` (which must exist).
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    // A user's archive (ADD) resolves absolute symlinks inside the tree, as BuildKit
    // unpacks it; a layer's entries may not go through one.
    let containment = match opts.target {
        ApplyTarget::Plain => Containment::Archive,
        _ => Containment::Beneath,
    };
    let root = Root::open_with(dest, containment).map_err(|e| ApplyError::Root {
        path: dest.to_path_buf(),
        source: root_io(e),
    })?;
    let mut applier = Applier {
        root,
        opts,
        stats: ApplyStats::default(),
        warned: HashSet::new(),
        written: HashSet::new(),
        dir_times: Vec::new(),
    };
    let tar = decompressed(reader).map_err(ApplyError::Read)?;
    let mut archive = tar::Archive::new(tar);
    // Raw entries: PAX and GNU long-name headers are read here, with a PAX parser that
    // goes by record lengths (the tar crate's splits values at newlines).
    let mut pending = Extended::default();
    for entry in archive.entries().map_err(ApplyError::Read)?.raw(true) {
        let mut entry = entry.map_err(ApplyError::Read)?;
        match entry.header().entry_type() {
            tar::EntryType::XHeader => {
                let data = read_extended(&mut entry)?;
                pending.add_pax(&data);
            }
            tar::EntryType::XGlobalHeader => {}
            tar::EntryType::GNULongName => {
                pending.path = Some(trim_nul(read_extended(&mut entry)?));
            }
            tar::EntryType::GNULongLink => {
                pending.link = Some(trim_nul(read_extended(&mut entry)?));
            }
            _ => {
                applier.stats.entries += 1;
                let ext = std::mem::take(&mut pending);
                applier.entry(&mut entry, ext)?;
            }
        }
    }
    // Directory times last, deepest first, so writing their contents does not move them.
    let mut dirs = std::mem::take(&mut applier.dir_times);
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.iter().filter(|b| **b == b'/').count()));
    for (path, mtime) in dirs {
        let comps = components(&path).unwrap_or_default();
        if let Some((name, parent)) = comps.split_last() {
            if let Ok(fd) = resolve_dir(&applier.root, parent, false) {
                let _ = set_mtime(&fd, name, mtime);
            }
        }
    }
    Ok(applier.stats)
}

/// An entry's place: its parent directory fd, its last component, its full name.
#[derive(Clone, Copy)]
struct Placed<'a> {
    parent: &'a OwnedFd,
    base: &'a [u8],
    name: &'a [u8],
}

/// What PAX and GNU headers said about the next entry.
#[derive(Default)]
struct Extended {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// PAX `uid` / `gid` (ids too large for the header's octal fields).
    uid: Option<u32>,
    gid: Option<u32>,
    /// PAX `size`, as written (checked against the header's: see [`Applier::entry`]).
    size: Option<Vec<u8>>,
}

impl Extended {
    /// Parses PAX records: `<len> <key>=<value>\n`, `len` counting the whole record.
    fn add_pax(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(sp) = data.iter().position(|b| *b == b' ') else {
                break;
            };
            let Some(len) = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                break;
            };
            if len <= sp + 1 || len > data.len() {
                break;
            }
            let record = &data[sp + 1..len];
            let record = record.strip_suffix(b"\n").unwrap_or(record);
            if let Some(eq) = record.iter().position(|b| *b == b'=') {
                let (k, v) = (&record[..eq], &record[eq + 1..]);
                match k {
                    b"path" => self.path = Some(v.to_vec()),
                    b"linkpath" => self.link = Some(v.to_vec()),
                    b"size" => self.size = Some(v.to_vec()),
                    b"uid" => self.uid = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()),
                    b"gid" => self.gid = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()),
                    _ => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            self.xattrs.push((name.to_vec(), v.to_vec()));
                        }
                    }
                }
            }
            data = &data[len..];
        }
    }
}

/// The most a PAX or GNU long-name header may hold (Go's archive/tar has the same
/// limit): they are read into memory, and a layer could declare gigabytes.
pub const MAX_EXTENDED_HEADER: u64 = 1 << 20;

/// The data of a PAX or GNU long-name header, refused beyond [`MAX_EXTENDED_HEADER`]
/// before anything is read.
fn read_extended<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, ApplyError> {
    let declared = entry.header().entry_size().unwrap_or(u64::MAX);
    if declared > MAX_EXTENDED_HEADER {
        return Err(ApplyError::Unsafe {
            entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            reason: format!(
                "an extended (PAX or GNU long name) header of {declared} bytes, more than the \
                 {MAX_EXTENDED_HEADER} allowed"
            ),
        });
    }
    let mut data = Vec::new();
    entry
        .take(MAX_EXTENDED_HEADER)
        .read_to_end(&mut data)
        .map_err(ApplyError::Read)?;
    Ok(data)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

struct Applier<'a> {
    root: Root,
    opts: &'a ApplyOptions,
    stats: ApplyStats,
    warned: HashSet<&'static str>,
    /// Paths this layer wrote (for opaque markers in merged mode).
    written: HashSet<Vec<u8>>,
    dir_times: Vec<(Vec<u8>, u64)>,
}

/// The I/O error inside a root failure (the others are named by the caller).
fn root_io(e: RootError) -> io::Error {
    match e {
        RootError::Open { source, .. } | RootError::Io { source, .. } => source,
        other => io::Error::other(other),
    }
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Turns a syscall failure on entry `name` into an [`ApplyError::Entry`].
fn entry_error(name: &[u8], context: &'static str) -> impl FnOnce(Errno) -> ApplyError {
    let entry = String::from_utf8_lossy(name).into_owned();
    move |e| ApplyError::Entry {
        entry,
        context,
        source: io_err(e),
    }
}

fn set_mtime(dir: impl AsFd, name: &[u8], mtime: u64) -> Result<(), Errno> {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    utimensat(
        dir,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

impl Applier<'_> {
    fn warn_once(&mut self, kind: &'static str, message: String) {
        if self.warned.insert(kind) {
            tracing::debug!("{message}");
            self.stats.warnings.push(message);
        }
    }

    fn unsafe_entry(name: &[u8], reason: &str) -> ApplyError {
        ApplyError::Unsafe {
            entry: String::from_utf8_lossy(name).into_owned(),
            reason: reason.to_string(),
        }
    }

    fn parent(&self, name: &[u8], comps: &[&[u8]]) -> Result<OwnedFd, ApplyError> {
        resolve_dir(&self.root, comps, true).map_err(|e| match e {
            RootError::Escapes { .. } => Self::unsafe_entry(
                name,
                "its parent directory resolves outside the snapshot (through a symlink)",
            ),
            RootError::NotDirectory { .. } => {
                Self::unsafe_entry(name, "a parent path component is not a directory")
            }
            RootError::SymlinkLoop { .. } => {
                Self::unsafe_entry(name, "its parent directory is a symlink loop")
            }
            e @ (RootError::Open { .. } | RootError::Io { .. }) => ApplyError::Entry {
                entry: String::from_utf8_lossy(name).into_owned(),
                context: "resolving its parent directory",
                source: root_io(e),
            },
        })
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        ext: Extended,
    ) -> Result<(), ApplyError> {
        let raw_name = ext
            .path
            .clone()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let link_name = ext.link.clone().unwrap_or_else(|| {
            entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default()
        });
        let name = raw_name.as_slice();
        let err = |context: &'static str| entry_error(name, context);
        let comps = components(name)
            .map_err(|()| Self::unsafe_entry(name, "the name has a `..` component"))?;
        let Some((&base, parent_comps)) = comps.split_last() else {
            return Ok(()); // the layer root itself
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        // The entry's data was framed by the header's size (raw entries); a PAX size that
        // says otherwise (files over 8 GiB, or an archive built to read differently in
        // different tools) is refused rather than misread.
        if let Some(pax) = &ext.size {
            let declared = std::str::from_utf8(pax)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match declared {
                None => {
                    return Err(Self::unsafe_entry(
                        name,
                        &format!(
                            "its PAX size {:?} is not a size",
                            String::from_utf8_lossy(pax)
                        ),
                    ))
                }
                Some(n) if header.entry_size().ok() != Some(n) => {
                    return Err(Self::unsafe_entry(
                        name,
                        &format!(
                            "its PAX size ({n}) differs from its header's ({}); not supported",
                            header.entry_size().unwrap_or(0)
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let parent = self.parent(name, parent_comps)?;

        // Whiteouts and opaque markers (in layers; a user's archive has plain files).
        if self.opts.target != ApplyTarget::Plain {
            if base == format::OCI_OPAQUE_MARKER.as_bytes() {
                return self.opaque(&parent, parent_comps, name);
            }
            if let Some(hidden) = base.strip_prefix(format::OCI_WHITEOUT_PREFIX.as_bytes()) {
                return self.whiteout(&parent, hidden, name);
            }
        }

        let rel: Vec<u8> = comps.join(&b'/');
        // Replace what is there unless both are directories.
        if let Ok(st) = statat(&parent, base, AtFlags::SYMLINK_NOFOLLOW) {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if !(is_dir && kind == tar::EntryType::Directory) {
                remove_all(&parent, base).map_err(err("replacing the existing entry"))?;
            }
        }
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = create_new_file(&parent, base).map_err(err("creating the file"))?;
                let mut file = File::from(fd);
                let n = io::copy(entry, &mut file).map_err(|source| ApplyError::Entry {
                    entry: String::from_utf8_lossy(name).into_owned(),
                    context: "writing the file",
                    source,
                })?;
                self.stats.bytes += n;
            }
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&parent, base, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(err("creating the directory")(e)),
                }
                if let Ok(m) = header.mtime() {
                    self.dir_times.push((rel.clone(), m));
                }
            }
            tar::EntryType::Symlink => {
                let target = link_name.clone();
                symlinkat(target.as_slice(), &parent, base).map_err(err("creating the symlink"))?;
            }
            tar::EntryType::Link => {
                let target = link_name.clone();
                let tcomps = components(&target).map_err(|()| {
                    Self::unsafe_entry(name, "the hard link target has a `..` component")
                })?;
                let Some((&tbase, tparent)) = tcomps.split_last() else {
                    return Err(Self::unsafe_entry(
                        name,
                        "the hard link target is the layer root",
                    ));
                };
                let tdir = resolve_dir(&self.root, tparent, false).map_err(|e| match e {
                    RootError::Escapes { .. } => Self::unsafe_entry(
                        name,
                        "the hard link target resolves outside the snapshot",
                    ),
                    _ => Self::unsafe_entry(
                        name,
                        "the hard link target does not exist in the snapshot",
                    ),
                })?;
                linkat(&tdir, tbase, &parent, base, AtFlags::empty())
                    .map_err(err("creating the hard link"))?;
                self.written.insert(rel);
                return Ok(()); // a link shares its target's metadata
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ft, what) = match kind {
                    tar::EntryType::Char => (FileType::CharacterDevice, "character device"),
                    tar::EntryType::Block => (FileType::BlockDevice, "block device"),
                    _ => (FileType::Fifo, "fifo"),
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                match mknodat(&parent, base, ft, Mode::from_raw_mode(mode), dev) {
                    Ok(()) => {}
                    Err(Errno::PERM | Errno::ACCESS) if ft != FileType::Fifo => {
                        self.warn_once(
                            "device",
                            format!(
                                "device nodes skipped: not permitted here (first: {} {:?})",
                                what,
                                String::from_utf8_lossy(name)
                            ),
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(err("creating the special file")(e)),
                }
            }
            other => {
                self.warn_once(
                    "type",
                    format!(
                        "entries of unsupported tar type {:?} skipped (first: {:?})",
                        other,
                        String::from_utf8_lossy(name)
                    ),
                );
                return Ok(());
            }
        }
        self.written.insert(rel);
        let at = Placed {
            parent: &parent,
            base,
            name,
        };
        self.metadata(entry, &ext, &at, kind, mode)
    }

    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        ext: &Extended,
        at: &Placed<'_>,
        kind: tar::EntryType,
        mode: u32,
    ) -> Result<(), ApplyError> {
        let Placed { parent, base, name } = *at;
        let header = entry.header();
        let (cuid, cgid) = self.opts.owner.unwrap_or((
            ext.uid.unwrap_or_else(|| header.uid().unwrap_or(0) as u32),
            ext.gid.unwrap_or_else(|| header.gid().unwrap_or(0) as u32),
        ));
        match (self.opts.uid_map.to_host(cuid), self.opts.gid_map.to_host(cgid)) {
            (Some(uid), Some(gid)) => {
                // SAFETY of ids: both come from the mapping, so they are valid host ids.
                let r = chownat(
                    parent,
                    base,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
                if let Err(e) = r {
                    if matches!(e, Errno::PERM | Errno::INVAL) {
                        self.warn_once(
                            "chown",
                            format!(
                                "ownership not kept: not permitted to chown to {uid}:{gid} here (first: {:?})",
                                String::from_utf8_lossy(name)
                            ),
                        );
                    } else {
                        return Err(ApplyError::Entry {
                            entry: String::from_utf8_lossy(name).into_owned(),
                            context: "setting ownership",
                            source: io_err(e),
                        });
                    }
                }
            }
            _ => self.warn_once(
                "unmapped",
                format!(
                    "ownership not kept: container ids {cuid}:{cgid} are outside this build's id mapping (first: {:?})",
                    String::from_utf8_lossy(name)
                ),
            ),
        }
        let mtime = header.mtime().unwrap_or(0);
        // xattrs (PAX SCHILY.xattr.*), through the parent's fd so no path is re-resolved.
        {
            for (k, v) in &ext.xattrs {
                if format::is_private_xattr(k) {
                    continue;
                }
                let full = crate::proc_fd::of(parent)
                    .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(base));
                if let Err(e) = lsetxattr(&full, k.as_slice(), v, XattrFlags::empty()) {
                    self.warn_once(
                        "xattr",
                        format!(
                            "extended attribute {} not kept: {} (first: {:?})",
                            String::from_utf8_lossy(k),
                            e,
                            String::from_utf8_lossy(name)
                        ),
                    );
                }
            }
        }
        if kind != tar::EntryType::Symlink {
            chmodat(parent, base, Mode::from_raw_mode(mode), AtFlags::empty()).map_err(|e| {
                ApplyError::Entry {
                    entry: String::from_utf8_lossy(name).into_owned(),
                    context: "setting the mode",
                    source: io_err(e),
                }
            })?;
        }
        if kind != tar::EntryType::Directory {
            let _ = set_mtime(parent, base, mtime);
        }
        Ok(())
    }

    fn whiteout(&mut self, parent: &OwnedFd, hidden: &[u8], name: &[u8]) -> Result<(), ApplyError> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
            return Err(Self::unsafe_entry(name, "a whiteout must name one entry"));
        }
        let e = |context: &'static str| entry_error(name, context);
        match remove_all(parent, hidden) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(err) => return Err(e("removing the whited-out entry")(err)),
        }
        if self.opts.target == ApplyTarget::Merged {
            return Ok(());
        }
        match mknodat(parent, hidden, FileType::CharacterDevice, Mode::empty(), 0) {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::ACCESS) => {
                let fd =
                    create_new_file(parent, hidden).map_err(e("creating the whiteout file"))?;
                rustix::fs::fsetxattr(&fd, format::WHITEOUT_XATTR_USER, b"y", XattrFlags::empty())
                    .map_err(e("marking the whiteout file"))?;
                let dir = reopen_dir(parent).map_err(e("opening the parent"))?;
                let marked = crate::xattr::get_fd(&dir, format::OPAQUE_XATTR_USER.as_bytes())
                    .ok()
                    .flatten();
                if marked.is_none() {
                    rustix::fs::fsetxattr(
                        &dir,
                        format::OPAQUE_XATTR_USER,
                        format::XWHITEOUT_PARENT_VALUE,
                        XattrFlags::empty(),
                    )
                    .map_err(e("marking the parent of a whiteout file"))?;
                }
                Ok(())
            }
            Err(err) => Err(e("creating the whiteout")(err)),
        }
    }

    fn opaque(
        &mut self,
        parent: &OwnedFd,
        dir_comps: &[&[u8]],
        name: &[u8],
    ) -> Result<(), ApplyError> {
        let e = |context: &'static str| entry_error(name, context);
        let dir = reopen_dir(parent).map_err(e("opening the directory"))?;
        match self.opts.target {
            ApplyTarget::Overlay => {
                rustix::fs::fsetxattr(&dir, self.opts.opaque_xattr, b"y", XattrFlags::empty())
                    .map_err(e("marking the directory opaque"))
            }
            ApplyTarget::Plain => Ok(()),
            ApplyTarget::Merged => {
                // Remove what lower layers put here, keep what this layer wrote.
                let prefix = dir_comps.join(&b'/');
                let names = list_dir(&dir).map_err(e("listing the directory"))?;
                for child in names {
                    let mut rel = prefix.clone();
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(&child);
                    if !self.written.contains(&rel) {
                        remove_all(&dir, &child).map_err(e("emptying the opaque directory"))?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Creates `name` in `dir` as a new, empty, private file; never follows a symlink and
/// never reuses an existing entry.
fn create_new_file(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// Reopens an `O_PATH` directory fd as a readable one (for xattrs and listing).
fn reopen_dir(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn list_dir(dir: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut out = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` and, for a directory, everything below it, without following
/// symlinks.
pub(crate) fn remove_all(dir: impl AsFd, name: &[u8]) -> Result<(), Errno> {
    let st = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return unlinkat(&dir, name, AtFlags::empty());
    }
    let sub = openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(&sub)? {
        remove_all(&sub, &child)?;
    }
    unlinkat(&dir, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests;
