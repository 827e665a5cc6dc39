//! A path near `PATH_MAX` inside the mount: a directory chain whose path relative to the
//! mount root is at least 4,000 bytes and whose absolute path (mount point + it) is past
//! `PATH_MAX` (4096). The kernel accepts it (a caller names it relative to the mount, or
//! from directory fds), so a backend must too: a file made there is written, read,
//! stat'ed, renamed and unlinked through the mount, reaches the upper directory and the
//! layer. Every step here walks from directory fds: the absolute paths are too long for
//! any system call.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use std::path::PathBuf;

use kiln_snapshotter::apply::{apply_layer, ApplyOptions, ApplyTarget};
use kiln_snapshotter::backend::copy::materialize;
use kiln_snapshotter::backend::{Backend, BackendKind};
use kiln_snapshotter::diff::DiffOptions;
use kiln_snapshotter::format;
use rustix::fs::{AtFlags, Mode, OFlags};

use super::{make_lowers, tree};
use rustix::io::Errno;

/// `PATH_MAX`: the longest path one system call takes, its NUL included.
const PATH_MAX: usize = 4096;
/// The deep file's names: short, so its path relative to the mount stays below `PATH_MAX`.
const FILE: &str = "f";
const MOVED: &str = "g";
const GONE: &str = "h";
const LINK: &str = "s";
const LINK_MOVED: &str = "t";
const APPENDED: &[u8] = b"appended\n";
const CONTENT: &[u8] = b"deep file\n";

/// The chain's components below a directory at `root`: their path is as long as possible
/// while the deep file's path relative to `root` stays below `PATH_MAX`, so `root` + it is
/// past `PATH_MAX` for any `root` but `/`.
pub fn chain(root: &Path) -> Vec<String> {
    let len = PATH_MAX - 1 - 1 - FILE.len() - 1;
    assert!(
        root.as_os_str().len() + 1 + len + 1 + FILE.len() >= PATH_MAX,
        "{} is too short a mount point for the case",
        root.display()
    );
    let full = len / 201;
    let mut comps = vec![200; full];
    match len - full * 201 {
        0 => comps[0] += 1,
        last => comps.push(last),
    }
    let names: Vec<String> = comps
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i:02}{}", "d".repeat(n - 2)))
        .collect();
    debug_assert_eq!(names.join("/").len(), len);
    assert!(len >= 4000);
    names
}

fn e(what: &str) -> impl FnOnce(Errno) -> String + '_ {
    move |err| format!("{what}: {err}")
}

fn open_dir(at: impl AsFd, name: &str) -> Result<OwnedFd, String> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(e(name))
}

/// Opens the chain's last directory below `root`, making the chain first when `make`.
fn walk(root: &Path, names: &[String], make: bool) -> Result<OwnedFd, String> {
    let mut dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(e("the root"))?;
    for (i, n) in names.iter().enumerate() {
        if make {
            rustix::fs::mkdirat(&dir, n.as_str(), Mode::from_raw_mode(0o755))
                .map_err(e(&format!("mkdir of component {i}")))?;
        }
        dir = open_dir(&dir, n)?;
    }
    Ok(dir)
}

fn read(dir: impl AsFd, name: &str) -> Result<Vec<u8>, String> {
    let f = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(e(name))?;
    let mut buf = vec![0u8; 256];
    let n = rustix::io::read(&f, &mut buf[..]).map_err(e(name))?;
    buf.truncate(n);
    Ok(buf)
}

/// What the case does through the mount at `mnt`.
fn change(mnt: &Path, names: &[String]) -> Result<(), String> {
    let dir = walk(mnt, names, true)?;
    let f = rustix::fs::openat(
        &dir,
        FILE,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(e("creating the deep file"))?;
    rustix::io::write(&f, CONTENT).map_err(e("writing the deep file"))?;
    drop(f);
    if read(&dir, FILE)? != CONTENT {
        return Err("the deep file reads back different".into());
    }
    let st = rustix::fs::statat(&dir, FILE, AtFlags::SYMLINK_NOFOLLOW).map_err(e("stat"))?;
    if st.st_size as usize != CONTENT.len() {
        return Err(format!("the deep file has size {}", st.st_size));
    }
    rustix::fs::renameat(&dir, FILE, &dir, MOVED).map_err(e("rename"))?;
    rustix::fs::symlinkat(MOVED, &dir, LINK).map_err(e("symlink"))?;
    let g = rustix::fs::openat(
        &dir,
        GONE,
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(e("creating the file to unlink"))?;
    drop(g);
    rustix::fs::unlinkat(&dir, GONE, AtFlags::empty()).map_err(e("unlink"))?;
    Ok(())
}

/// What the tree at `root` (the mount, the upper directory, the layer applied) must hold.
fn holds(root: &Path, names: &[String], what: &str) -> Result<(), String> {
    let in_it = |m: String| format!("{what}: {m}");
    let dir = walk(root, names, false).map_err(in_it)?;
    if read(&dir, MOVED).map_err(in_it)? != CONTENT {
        return Err(in_it("the moved file's content differs".into()));
    }
    for gone in [FILE, GONE] {
        match rustix::fs::statat(&dir, gone, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {}
            other => return Err(in_it(format!("{gone} is still there: {other:?}"))),
        }
    }
    let target = rustix::fs::readlinkat(&dir, LINK, Vec::new()).map_err(e("readlink"));
    match target {
        Ok(t) if t.as_bytes() == MOVED.as_bytes() => Ok(()),
        other => Err(in_it(format!("the symlink reads {other:?}"))),
    }
}

/// The case on one backend: `upper` is checked when the backend keeps one (`Some`).
pub fn run(
    mnt: &Path,
    upper: Option<&Path>,
    diff_and_apply: Box<dyn FnOnce() -> Result<std::path::PathBuf, String> + '_>,
) -> Result<(), String> {
    let names = chain(mnt);
    change(mnt, &names).map_err(|m| format!("through the mount: {m}"))?;
    holds(mnt, &names, "the mount")?;
    if let Some(u) = upper {
        holds(u, &names, "the upper directory")?;
    }
    let replay = diff_and_apply()?;
    holds(&replay, &names, "the layer applied")
}

/// The second step: the tree the first left is now a lower (`mnt` mounts it). Its deep
/// file is appended to (a copy-up), its symlink renamed: through the mount, in the upper
/// directory (`Some` when the backend keeps one) and in the layer applied.
pub fn run_on_lower(
    mnt: &Path,
    upper: Option<&Path>,
    diff_and_apply: Box<dyn FnOnce() -> Result<std::path::PathBuf, String> + '_>,
) -> Result<(), String> {
    let names = chain(mnt);
    let in_mount = |m: String| format!("through the mount, over the deep lower: {m}");
    let dir = walk(mnt, &names, false).map_err(in_mount)?;
    let f = rustix::fs::openat(
        &dir,
        MOVED,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(e("opening the lower's deep file for writing"))
    .map_err(in_mount)?;
    rustix::io::write(&f, APPENDED)
        .map_err(e("appending"))
        .map_err(in_mount)?;
    drop(f);
    rustix::fs::renameat(&dir, LINK, &dir, LINK_MOVED)
        .map_err(e("renaming the lower's symlink"))
        .map_err(in_mount)?;
    let holds_appended = |root: &Path, what: &str| -> Result<(), String> {
        let in_it = |m: String| format!("{what} (second step): {m}");
        let dir = walk(root, &names, false).map_err(in_it)?;
        let want = [CONTENT, APPENDED].concat();
        if read(&dir, MOVED).map_err(in_it)? != want {
            return Err(in_it("the appended file's content differs".into()));
        }
        match rustix::fs::readlinkat(&dir, LINK_MOVED, Vec::new()) {
            Ok(t) if t.as_bytes() == MOVED.as_bytes() => {}
            other => return Err(in_it(format!("the renamed symlink reads {other:?}"))),
        }
        // The upper directory holds a whiteout where the lower's entry went.
        let whiteout_ok = upper == Some(root);
        match rustix::fs::statat(&dir, LINK, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Ok(st) if whiteout_ok && format::is_whiteout(Path::new(""), &st) => Ok(()),
            other => Err(in_it(format!("{LINK} is still there: {other:?}"))),
        }
    };
    holds_appended(mnt, "the mount")?;
    if let Some(u) = upper {
        holds_appended(u, "the upper directory")?;
    }
    let replay = diff_and_apply()?;
    holds_appended(&replay, "the layer applied")
}

/// The case on `backend`: through the mount, in the upper
/// directory (not the copy backend's: it has none), and in the layer applied on the lowers.
pub fn run_case(backend: &dyn Backend, scratch: &Path) -> Result<(), String> {
    let lowers = make_lowers(&scratch.join("lowers"));
    let first = deep_paths_step(backend, &lowers, &scratch.join("1"), run)?;
    // The tree the first step left is the second step's lower.
    deep_paths_step(backend, &[first], &scratch.join("2"), run_on_lower)?;
    Ok(())
}

type DeepStep = fn(
    &Path,
    Option<&Path>,
    Box<dyn FnOnce() -> Result<PathBuf, String> + '_>,
) -> Result<(), String>;

/// One step of the deep-path case on `lowers`: mounts them in `scratch`, runs `step`
/// with the mount, the upper directory (not the copy backend's: it has none) and what
/// diffs the mount and applies the layer on the lowers; returns that tree.
fn deep_paths_step(
    backend: &dyn Backend,
    lowers: &[PathBuf],
    scratch: &Path,
    step: DeepStep,
) -> Result<PathBuf, String> {
    let (guard, upper) = super::mount_in(backend, lowers, scratch)?;
    let has_upper = backend.kind() != BackendKind::Copy;
    let replay = scratch.join("replay");
    step(
        guard.root(),
        has_upper.then_some(upper.as_path()),
        Box::new(|| {
            let mut layer = Vec::new();
            guard
                .write_diff(&DiffOptions::default(), &mut layer)
                .map_err(|e| format!("the diff: {e}"))?;
            materialize(lowers, &replay).map_err(|e| format!("copying the lowers: {e}"))?;
            let opts = ApplyOptions {
                target: ApplyTarget::Merged,
                ..ApplyOptions::default()
            };
            apply_layer(layer.as_slice(), &replay, &opts)
                .map_err(|e| format!("applying the layer: {e}"))?;
            // The layer, applied on the lowers, gives the mounted view, deep entries too.
            let (view, got) = (tree(guard.root()), tree(&replay));
            if !view.keys().any(|k| k.len() > 4000) {
                return Err("the mount's description misses the deep entries".into());
            }
            if let Some((k, v)) = view.iter().find(|(k, v)| got.get(*k) != Some(*v)) {
                return Err(format!(
                    "layer round trip differs at {}: view {v:?}, layer gives {:?}",
                    String::from_utf8_lossy(k),
                    got.get(k)
                ));
            }
            if got.len() != view.len() {
                return Err("the layer applied has entries the mount has not".into());
            }
            Ok(replay.clone())
        }),
    )?;
    Ok(replay)
}
