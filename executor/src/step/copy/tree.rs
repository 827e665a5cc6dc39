//! COPY and ADD (local sources): files from the context or another stage's filesystem into
//! the stage's mounted root, with BuildKit's rules:
//! - sources are relative to their root and never leave it; wildcards match per path
//!   component (`pattern`), and a wildcard matching nothing copies nothing;
//! - a directory source copies its contents; a file goes to `dest` or, when `dest` ends
//!   in `/` or is an existing directory, into it; several sources need a `dest/`;
//! - `dest` is relative to WORKDIR; missing parents are created (0755);
//! - `--parents` keeps each match's path below the source's first `/./` pivot (its whole
//!   path without one), with only the parent directories a match needs;
//! - ownership: `--chown` for everything copied and created, else 0:0 for context files
//!   and the source's owner for files from a stage; modes and mtimes are kept; `--chmod`
//!   replaces modes;
//! - the destination is written beneath the stage root (`openat2(RESOLVE_IN_ROOT)`): a
//!   symlink in the image resolves inside it, never to the host.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

use crate::context::pattern::{clean, has_wildcard, match_path};
use crate::dockerfile::chmod::Chmod;

/// Why a COPY failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0:?}: not found")]
    NotFound(String),
    #[error("When using COPY with more than one source file, the destination must be a directory and end with a /")]
    DestNotDir,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("unpacking {}: {source}", archive.display())]
    Unpack {
        archive: PathBuf,
        #[source]
        source: Box<kiln_snapshotter::apply::ApplyError>,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let context = context.into();
    move |source| CopyError::Io { context, source }
}

fn errno(context: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> CopyError {
    let context = context.into();
    move |e| CopyError::Io {
        context,
        source: e.into(),
    }
}

/// A file made from a heredoc (`COPY <<EOF /dest`).
#[derive(Debug, Clone)]
pub struct InlineSource {
    pub name: String,
    pub data: Vec<u8>,
}

/// One COPY/ADD.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Patterns relative to `src_root`.
    pub sources: Vec<String>,
    pub inline: Vec<InlineSource>,
    pub dest: String,
    pub src_root: PathBuf,
    /// Context sources belong to root unless `chown` says otherwise.
    pub from_context: bool,
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
    pub workdir: String,
    pub excludes: Vec<String>,
    pub parents: bool,
    /// The context's `.dockerignore` (applied when `from_context`).
    pub ignore: Option<std::sync::Arc<crate::context::ignore::IgnoreRules>>,
}

impl CopyRequest {
    fn ignored(&self, ctx_rel: &str) -> bool {
        self.from_context && self.ignore.as_ref().is_some_and(|r| r.excluded(ctx_rel))
    }

    /// Whether an ignored directory must still be walked (a `!` rule may re-include).
    fn walk_ignored_dirs(&self) -> bool {
        self.ignore.as_ref().is_some_and(|r| r.has_exceptions())
    }
}

/// Owner and mode of the directories a copy creates (missing parents included): the
/// `--chown` owner (root without), and a numeric `--chmod` mode (0755 without), as
/// BuildKit makes them; directories that exist are never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDirs {
    pub owner: (u32, u32),
    pub mode: u32,
}

impl NewDirs {
    /// Root-owned 0755 directories.
    pub const DEFAULT: NewDirs = NewDirs {
        owner: (0, 0),
        mode: 0o755,
    };

    fn of(req: &CopyRequest) -> NewDirs {
        NewDirs {
            owner: req.chown.unwrap_or((0, 0)),
            mode: match req.chmod {
                Some(Chmod::Octal(m)) => m,
                _ => 0o755,
            },
        }
    }
}

/// The stage's root, opened once; every write resolves beneath it.
struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    fn open(path: &Path) -> Result<RootDir, CopyError> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno(format!("opening {}", path.display())))?;
        Ok(RootDir { fd })
    }

    fn resolve(&self, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Creates `rel` and its parents as directories (`made`'s mode and owner), following
    /// symlinks inside the root as the container would (a link to a missing directory gets
    /// that directory made, inside the root); returns it opened.
    fn mkdir_all(&self, rel: &str, made: NewDirs) -> Result<OwnedFd, CopyError> {
        let owner = made.owner;
        let mut pending: std::collections::VecDeque<String> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                done.pop();
                continue;
            }
            let parent = self
                .resolve(&done.join("/"), OFlags::DIRECTORY | OFlags::RDONLY)
                .map_err(errno(format!("opening /{}", done.join("/"))))?;
            let shown = format!(
                "/{}",
                [done.join("/"), part.clone()]
                    .join("/")
                    .trim_start_matches('/')
            );
            match rustix::fs::statat(&parent, part.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match rustix::fs::FileType::from_raw_mode(st.st_mode) {
                    rustix::fs::FileType::Directory => done.push(part),
                    rustix::fs::FileType::Symlink => {
                        hops += 1;
                        if hops > 40 {
                            return Err(errno(format!("resolving {shown}"))(
                                rustix::io::Errno::LOOP,
                            ));
                        }
                        let target = rustix::fs::readlinkat(&parent, part.as_str(), Vec::new())
                            .map_err(errno(format!("reading link {shown}")))?;
                        let target = target.to_string_lossy().into_owned();
                        if target.starts_with('/') {
                            done.clear();
                        }
                        for p in target
                            .split('/')
                            .filter(|p| !p.is_empty() && *p != ".")
                            .rev()
                        {
                            pending.push_front(p.to_string());
                        }
                    }
                    _ => {
                        return Err(errno(format!("{shown} is not a directory"))(
                            rustix::io::Errno::NOTDIR,
                        ))
                    }
                },
                Err(rustix::io::Errno::NOENT) => {
                    rustix::fs::mkdirat(&parent, part.as_str(), Mode::from_raw_mode(0o700))
                        .map_err(errno(format!("creating {shown}")))?;
                    // The mode exactly (mkdir's is masked by the umask).
                    rustix::fs::chmodat(
                        &parent,
                        part.as_str(),
                        Mode::from_raw_mode(made.mode),
                        AtFlags::empty(),
                    )
                    .map_err(errno(format!("chmod {shown}")))?;
                    let _ = rustix::fs::chownat(
                        &parent,
                        part.as_str(),
                        Some(rustix::fs::Uid::from_raw(owner.0)),
                        Some(rustix::fs::Gid::from_raw(owner.1)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    );
                    done.push(part);
                }
                Err(e) => return Err(errno(format!("looking up {shown}"))(e)),
            }
        }
        self.resolve(&done.join("/"), OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(errno(format!("opening /{}", done.join("/"))))
    }

    fn is_dir(&self, rel: &str) -> bool {
        self.resolve(rel, OFlags::DIRECTORY | OFlags::PATH).is_ok()
    }
}

/// Matches of one source pattern: relative paths in `root`.
pub(crate) fn expand_source(
    root: &Path,
    pattern: &str,
    req: &CopyRequest,
) -> Result<Vec<String>, CopyError> {
    let pat = clean(pattern);
    if !has_wildcard(&pat) {
        let p = crate::mounts::resolve_beneath(root, &pat)
            .map_err(|_| CopyError::NotFound(format!("/{pat}")))?;
        let Ok(md) = fs::metadata(&p) else {
            return Err(CopyError::NotFound(format!("/{pat}")));
        };
        if req.ignored(&pat) && !(md.is_dir() && req.walk_ignored_dirs()) {
            return Err(CopyError::NotFound(format!("/{pat}")));
        }
        return Ok(vec![pat]);
    }
    let mut out = Vec::new();
    let depth_limited = !pat.contains("**");
    let depth = pat.split('/').count();
    walk(root, "", &mut |rel, md| {
        let ignored = req.ignored(rel);
        if match_path(&pat, rel) && !ignored {
            out.push(rel.to_string());
        }
        (!ignored || (md.is_dir() && req.walk_ignored_dirs()))
            && (!depth_limited || rel.split('/').count() < depth)
    })?;
    out.sort();
    Ok(out)
}

/// Walks `root/rel` depth first, calling `f(rel_path, metadata)`; `f` returns whether to
/// descend into a directory.
fn walk(
    root: &Path,
    rel: &str,
    f: &mut dyn FnMut(&str, &fs::Metadata) -> bool,
) -> Result<(), CopyError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err(format!("reading {}", dir.display())))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = e.metadata().map_err(io_err(format!("reading {child}")))?;
        if f(&child, &md) && md.is_dir() {
            walk(root, &child, f)?;
        }
    }
    Ok(())
}

/// Runs `req` into the stage root `root`; the device nodes it could not make, by their
/// destination path.
pub fn copy_into(root: &Path, req: &CopyRequest) -> Result<Vec<String>, CopyError> {
    let dest_root = RootDir::open(root)?;
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.clone()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let dest_is_dir_syntax = req.dest.ends_with('/') || req.dest.ends_with("/.") || req.dest == ".";
    let dest = clean(&dest_abs);
    if req.parents {
        let mut skipped = Vec::new();
        for s in &req.sources {
            copy_with_parents(&dest_root, s, &dest, req, &mut skipped)?;
        }
        if req.inline.is_empty() {
            return Ok(skipped);
        }
    }
    let mut matches: Vec<String> = Vec::new();
    for s in req.sources.iter().filter(|_| !req.parents) {
        matches.extend(expand_source(&req.src_root, s, req)?);
    }
    let count = matches.len() + req.inline.len();
    let mut skipped = Vec::new();
    if count == 0 {
        return Ok(skipped);
    }
    let dest_is_dir = dest_is_dir_syntax || dest.is_empty() || dest_root.is_dir(&dest);
    if count > 1 && !dest_is_dir {
        return Err(CopyError::DestNotDir);
    }
    let new_dirs = NewDirs::of(req);
    for rel in &matches {
        let src = crate::mounts::resolve_beneath(&req.src_root, rel)
            .map_err(|_| CopyError::NotFound(format!("/{rel}")))?;
        let md = fs::metadata(&src).map_err(io_err(format!("reading /{rel}")))?;
        let base = rel.rsplit('/').next().unwrap_or(rel);
        if md.is_dir() {
            let target = if req.parents {
                format!("{dest}/{rel}")
            } else {
                dest.clone()
            };
            let t = clean(&target);
            // The destination directory keeps its own metadata when it exists (BuildKit
            // copies the source's only onto a directory it creates).
            let existed = dest_root.is_dir(&t);
            let fd = dest_root.mkdir_all(&t, new_dirs)?;
            if !existed {
                apply_meta(&fd, None, &md, req)?;
            }
            copy_tree(&dest_root, &src, &t, req, rel, "", &mut skipped)?;
        } else {
            let target = if req.parents {
                format!("{dest}/{rel}")
            } else if dest_is_dir {
                format!("{dest}/{base}")
            } else {
                dest.clone()
            };
            copy_entry(
                &dest_root,
                &src,
                &clean(&target),
                &md,
                req,
                new_dirs,
                &mut skipped,
            )?;
        }
    }
    for f in &req.inline {
        let target = if dest_is_dir {
            format!("{dest}/{}", f.name)
        } else {
            dest.clone()
        };
        let target = clean(&target);
        let (parent, name) = split(&target);
        let pfd = dest_root.mkdir_all(parent, new_dirs)?;
        let _ = rustix::fs::unlinkat(&pfd, name, AtFlags::empty());
        let fd = rustix::fs::openat(
            &pfd,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(errno(format!("creating /{target}")))?;
        let mut file = fs::File::from(fd);
        io::Write::write_all(&mut file, &f.data).map_err(io_err(format!("writing /{target}")))?;
        let (uid, gid) = req.chown.unwrap_or((0, 0));
        rustix::fs::fchown(
            &file,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(errno(format!("chown /{target}")))?;
        let mode = req.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false));
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(errno(format!("chmod /{target}")))?;
    }
    Ok(skipped)
}

/// `COPY --parents SOURCE DEST`, as BuildKit lowers it: SOURCE splits at its first `/./`
/// into the directory to copy from (`/` without a pivot; it may hold wildcards) and a
/// pattern below it; every path the pattern matches there (a directory with all it
/// holds) lands at `DEST/<its path below the pivot>`, with the parent directories the
/// match needs and no others. A source without wildcards must exist; with them, no match
/// copies nothing (DEST is still made).
fn copy_with_parents(
    dest_root: &RootDir,
    source: &str,
    dest: &str,
    req: &CopyRequest,
    skipped: &mut Vec<String>,
) -> Result<(), CopyError> {
    let (pivot, pattern) = match source.split_once("/./") {
        Some((dir, pattern)) => (clean(dir), clean(pattern)),
        None => (String::new(), clean(source)),
    };
    let new_dirs = NewDirs::of(req);
    dest_root.mkdir_all(dest, new_dirs)?;
    let dirs = if has_wildcard(&pivot) {
        expand_source(&req.src_root, &pivot, req)?
    } else {
        if !has_wildcard(&pattern) {
            let required = clean(&format!("{pivot}/{pattern}"));
            expand_source(&req.src_root, &required, req)?;
        }
        vec![pivot]
    };
    for dir in dirs {
        let Ok(base) = crate::mounts::resolve_beneath(&req.src_root, &dir) else {
            continue;
        };
        if !fs::metadata(&base).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let ctx_rel = |rel: &str| clean(&format!("{dir}/{rel}"));
        // What the pattern matches below `base`: directories are copied whole, so the
        // walk does not go into one that matched.
        let mut matched: Vec<(String, fs::Metadata)> = Vec::new();
        if pattern.is_empty() {
            let md = fs::metadata(&base).map_err(io_err(format!("reading /{dir}")))?;
            matched.push((String::new(), md));
        } else {
            let depth_limited = !pattern.contains("**");
            let depth = pattern.split('/').count();
            walk(&base, "", &mut |rel, md| {
                let ignored = req.ignored(&ctx_rel(rel));
                if excluded(req, rel) {
                    return false;
                }
                if match_path(&pattern, rel) && !ignored {
                    matched.push((rel.to_string(), md.clone()));
                    return false;
                }
                (!ignored || (md.is_dir() && req.walk_ignored_dirs()))
                    && (!depth_limited || rel.split('/').count() < depth)
            })?;
        }
        for (rel, md) in matched {
            // The match's parent directories, made as the source has them.
            let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
            for i in 1..parts.len() {
                let parent = parts[..i].join("/");
                let t = clean(&format!("{dest}/{parent}"));
                if !dest_root.is_dir(&t) {
                    let src_md = fs::metadata(base.join(&parent))
                        .map_err(io_err(format!("reading /{}", ctx_rel(&parent))))?;
                    let fd = dest_root.mkdir_all(&t, new_dirs)?;
                    apply_meta(&fd, None, &src_md, req)?;
                }
            }
            let target = clean(&format!("{dest}/{rel}"));
            let src = base.join(&rel);
            if md.is_dir() {
                let existed = dest_root.is_dir(&target);
                let fd = dest_root.mkdir_all(&target, new_dirs)?;
                if !existed {
                    apply_meta(&fd, None, &md, req)?;
                }
                copy_tree(dest_root, &src, &target, req, &ctx_rel(&rel), &rel, skipped)?;
            } else {
                copy_entry(dest_root, &src, &target, &md, req, new_dirs, skipped)?;
            }
        }
    }
    Ok(())
}

/// The compression of a local archive ADD unpacks, by magic bytes; `None`: not an archive.
pub fn archive_kind(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 262];
    let mut f = fs::File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let n = io::Read::read(&mut f, &mut head).ok()?;
    let h = &head[..n];
    if h.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if h.starts_with(b"BZh") {
        Some("bzip2")
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if n >= 262 && &h[257..262] == b"ustar" {
        Some("tar")
    } else {
        None
    }
}

/// ADD of a local archive: unpacks `archive` into directory `dest` (absolute in the
/// root, WORKDIR-relative otherwise), beneath it whatever the entries say. The
/// snapshotter's apply writes them, with `dest` as the root of the unpack (as BuildKit's
/// chrooted untar): an absolute symlink, the archive's or the image's, starts from it;
/// only what would land outside it is refused.
pub fn extract_into(
    root: &Path,
    archive: &Path,
    dest: &str,
    workdir: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), CopyError> {
    let dest_abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    let made = NewDirs {
        owner: owner.unwrap_or((0, 0)),
        mode: 0o755,
    };
    let dir = RootDir::open(root)?.mkdir_all(&clean(&dest_abs), made)?;
    let at = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    let f = fs::File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let reader: Box<dyn io::Read> = match archive_kind(archive) {
        Some("bzip2") => Box::new(bzip2::read::BzDecoder::new(io::BufReader::new(f))),
        Some("xz") => Box::new(xz2::read::XzDecoder::new(io::BufReader::new(f))),
        _ => Box::new(io::BufReader::new(f)),
    };
    // A user's archive, not a layer: `.wh.` names are plain files; `--chown` owns every
    // entry.
    let opts = kiln_snapshotter::apply::ApplyOptions {
        target: kiln_snapshotter::apply::ApplyTarget::Plain,
        owner,
        ..Default::default()
    };
    kiln_snapshotter::apply::apply_layer(reader, &at, &opts).map_err(|source| {
        CopyError::Unpack {
            archive: archive.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    Ok(())
}

/// Creates directory `path` (absolute in the root) and its parents, owned by `owner`.
pub fn make_dir(root: &Path, path: &str, owner: (u32, u32)) -> Result<(), CopyError> {
    RootDir::open(root)?
        .mkdir_all(
            &clean(path),
            NewDirs {
                owner,
                ..NewDirs::DEFAULT
            },
        )
        .map(drop)
}

fn split(target: &str) -> (&str, &str) {
    match target.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", target),
    }
}

fn excluded(req: &CopyRequest, rel_in_source: &str) -> bool {
    req.excludes.iter().any(|p| match_path(p, rel_in_source))
}

/// Copies directory `src_dir` (at `src_rel` in the context, for `.dockerignore`) to
/// `dest`; `--exclude` patterns match paths below `exclude_base/` (the source directory
/// itself when empty, its path below the pivot for `--parents`).
#[allow(clippy::too_many_arguments)]
fn copy_tree(
    dest_root: &RootDir,
    src_dir: &Path,
    dest: &str,
    req: &CopyRequest,
    src_rel: &str,
    exclude_base: &str,
    skipped: &mut Vec<String>,
) -> Result<(), CopyError> {
    let new_dirs = NewDirs::of(req);
    let mut result = Ok(());
    walk(src_dir, "", &mut |rel, md| {
        let excluded = if exclude_base.is_empty() {
            excluded(req, rel)
        } else {
            excluded(req, &format!("{exclude_base}/{rel}"))
        };
        if result.is_err() || excluded {
            return false;
        }
        let ctx_rel = if src_rel.is_empty() {
            rel.to_string()
        } else {
            format!("{src_rel}/{rel}")
        };
        if req.ignored(&ctx_rel) {
            return md.is_dir() && req.walk_ignored_dirs();
        }
        let target = clean(&format!("{dest}/{rel}"));
        let r = if md.is_dir() {
            dest_root
                .mkdir_all(&target, new_dirs)
                .and_then(|fd| apply_meta(&fd, None, md, req))
        } else {
            copy_entry(
                dest_root,
                &src_dir.join(rel),
                &target,
                md,
                req,
                new_dirs,
                skipped,
            )
        };
        if let Err(e) = r {
            result = Err(e);
            return false;
        }
        true
    })?;
    result
}

/// Copies one non-directory entry to `target` (relative to the root); a device node kiln
/// may not make is added to `skipped`.
fn copy_entry(
    dest_root: &RootDir,
    src: &Path,
    target: &str,
    md: &fs::Metadata,
    req: &CopyRequest,
    new_dirs: NewDirs,
    skipped: &mut Vec<String>,
) -> Result<(), CopyError> {
    let (parent, name) = split(target);
    let pfd = dest_root.mkdir_all(parent, new_dirs)?;
    if name.is_empty() {
        return Ok(());
    }
    match rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::Directory =>
        {
            // A file onto a directory: BuildKit replaces it only when empty.
            rustix::fs::unlinkat(&pfd, name, AtFlags::REMOVEDIR)
                .map_err(errno(format!("replacing directory /{target}")))?;
        }
        Ok(_) => {
            rustix::fs::unlinkat(&pfd, name, AtFlags::empty())
                .map_err(errno(format!("replacing /{target}")))?;
        }
        Err(_) => {}
    }
    let ft = md.file_type();
    if ft.is_symlink() {
        let link = fs::read_link(src).map_err(io_err(format!("reading link {}", src.display())))?;
        rustix::fs::symlinkat(&link, &pfd, name).map_err(errno(format!("creating /{target}")))?;
        let (uid, gid) = owner_of(md, req);
        let _ = rustix::fs::chownat(
            &pfd,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        return Ok(());
    }
    if !ft.is_file() {
        return copy_special(&pfd, name, target, md, req, skipped);
    }
    let mut input = fs::File::open(src).map_err(io_err(format!("opening {}", src.display())))?;
    let fd = rustix::fs::openat(
        &pfd,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno(format!("creating /{target}")))?;
    let mut out = fs::File::from(fd);
    io::copy(&mut input, &mut out).map_err(io_err(format!("copying to /{target}")))?;
    apply_meta(&out.as_fd(), Some(target), md, req)
}

/// FIFOs, sockets and device nodes are made anew with the source's type, mode and
/// device number, as BuildKit copies them (never opened, so a FIFO cannot hang the copy).
/// A device node kiln may not create (no CAP_MKNOD) is left out with a warning.
fn copy_special(
    pfd: &OwnedFd,
    name: &str,
    target: &str,
    md: &fs::Metadata,
    req: &CopyRequest,
    skipped: &mut Vec<String>,
) -> Result<(), CopyError> {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    let kind = if ft.is_fifo() {
        rustix::fs::FileType::Fifo
    } else if ft.is_socket() {
        rustix::fs::FileType::Socket
    } else if ft.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else {
        rustix::fs::FileType::BlockDevice
    };
    let old = md.permissions().mode() & 0o7777;
    let mode = req.chmod.as_ref().map_or(old, |c| c.apply(old, false));
    match rustix::fs::mknodat(pfd, name, kind, Mode::from_raw_mode(mode), md.rdev()) {
        Ok(()) => {}
        Err(rustix::io::Errno::PERM)
            if matches!(
                kind,
                rustix::fs::FileType::CharacterDevice | rustix::fs::FileType::BlockDevice
            ) =>
        {
            skipped.push(format!("/{target}"));
            return Ok(());
        }
        Err(e) => return Err(errno(format!("creating /{target}"))(e)),
    }
    let (uid, gid) = owner_of(md, req);
    rustix::fs::chownat(
        pfd,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno(format!("setting the owner of /{target}")))?;
    rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
        .map_err(errno(format!("chmod /{target}")))?;
    let t = Timespec {
        tv_sec: md.mtime(),
        tv_nsec: md.mtime_nsec() as _,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(pfd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno(format!("setting times of /{target}")))?;
    Ok(())
}

fn owner_of(md: &fs::Metadata, req: &CopyRequest) -> (u32, u32) {
    match req.chown {
        Some(o) => o,
        None if req.from_context => (0, 0),
        None => (md.uid(), md.gid()),
    }
}

fn apply_meta(
    fd: &impl AsFd,
    what: Option<&str>,
    md: &fs::Metadata,
    req: &CopyRequest,
) -> Result<(), CopyError> {
    let what = what.unwrap_or("a directory");
    let (uid, gid) = owner_of(md, req);
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| {
        let hint = if e == rustix::io::Errno::INVAL {
            " (the id does not exist in kiln's user namespace: ids other than 0 need subordinate ids in /etc/subuid and /etc/subgid; see kiln doctor)"
        } else {
            ""
        };
        errno(format!("setting the owner of {what} to {uid}:{gid}{hint}"))(e)
    })?;
    let old = md.permissions().mode() & 0o7777;
    let mode = match &req.chmod {
        Some(c) => c.apply(old, md.is_dir()),
        None => old,
    };
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(errno(format!("chmod {what}")))?;
    let t = Timespec {
        tv_sec: md.mtime(),
        tv_nsec: md.mtime_nsec() as _,
    };
    rustix::fs::futimens(
        fd,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(errno(format!("setting times of {what}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(src: &Path, sources: &[&str], dest: &str) -> CopyRequest {
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        CopyRequest {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            inline: Vec::new(),
            dest: dest.into(),
            src_root: src.to_path_buf(),
            from_context: true,
            chown: Some(me),
            chmod: None,
            workdir: "/".into(),
            excludes: Vec::new(),
            parents: false,
            ignore: None,
        }
    }

    #[test]
    fn files_dirs_and_wildcards_land_where_docker_puts_them() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a.txt"), "a").unwrap();
        fs::write(src.path().join("b.txt"), "b").unwrap();
        fs::create_dir_all(src.path().join("dir/sub")).unwrap();
        fs::write(src.path().join("dir/sub/c"), "c").unwrap();
        copy_into(dst.path(), &req(src.path(), &["a.txt"], "/renamed")).unwrap();
        assert_eq!(fs::read_to_string(dst.path().join("renamed")).unwrap(), "a");
        copy_into(dst.path(), &req(src.path(), &["*.txt"], "/many/")).unwrap();
        assert!(dst.path().join("many/b.txt").exists());
        copy_into(dst.path(), &req(src.path(), &["dir"], "/d")).unwrap();
        assert_eq!(fs::read_to_string(dst.path().join("d/sub/c")).unwrap(), "c");
        assert!(matches!(
            copy_into(dst.path(), &req(src.path(), &["*.txt"], "/file")),
            Err(CopyError::DestNotDir)
        ));
        assert!(matches!(
            copy_into(dst.path(), &req(src.path(), &["missing"], "/x")),
            Err(CopyError::NotFound(_))
        ));
        copy_into(dst.path(), &req(src.path(), &["nomatch*"], "/x")).unwrap();
    }

    #[test]
    fn destination_symlinks_resolve_inside_the_root() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(src.path().join("f"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dst.path().join("link")).unwrap();
        copy_into(dst.path(), &req(src.path(), &["f"], "/link/")).unwrap();
        assert!(!outside.path().join("f").exists(), "wrote outside the root");
        let inside = dst
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("f");
        assert!(inside.exists());
    }
}
