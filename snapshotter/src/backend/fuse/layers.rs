//! The stack the FUSE overlay serves: one writable upper directory over read-only lowers
//! (top first), in the overlay format the store keeps: a whiteout is a 0/0 character
//! device (or a zero-size file with `user.overlay.whiteout`), an opaque directory carries
//! `user.overlay.opaque` or `trusted.overlay.opaque`.
//!
//! Layer index 0 is the upper directory, 1.. the lowers. Paths are relative to a layer's
//! root, `""` being the root itself, and resolved from the root's fd, held open
//! ([`Layers::at`], [`super::at`]); every lookup uses `lstat` (never follows the last
//! component) and only descends through directories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Bound;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rustix::fs::{FileType, Stat};

use super::at::{self, At, Listing};
use crate::format;

/// A merged directory as the stack shows it: the layers it is made of (top first) and,
/// for every visible name, the layer that holds it. Built once per directory from one
/// read of each layer, so later lookups in it cost one `lstat`; dropped when the
/// directory changes ([`Layers::forget_dir`], [`Layers::forget_tree`]) or when it is
/// among the least recently used of too many ([`VIEW_NAMES`]).
#[derive(Debug, Clone)]
pub(super) struct DirView {
    pub layers: Vec<usize>,
    /// Name → (layer, `lstat` when the entry is in a lower layer: lowers never change,
    /// so their stats are read once). Boxed: an upper entry's slot is 8 bytes, not the
    /// 144 of a `stat`.
    pub names: HashMap<OsString, (usize, Option<Box<Stat>>)>,
    /// Names the upper directory holds a whiteout for.
    pub upper_whiteouts: HashSet<OsString>,
}

/// The directories of the stack, each held open ([`super::at`]).
#[derive(Debug)]
pub(super) struct Layers {
    /// `[upper, lower 1 (top), …]`, as the mount was asked for.
    pub dirs: Vec<PathBuf>,
    /// The same directories, open: every path of a layer is resolved from these.
    roots: Vec<OwnedFd>,
    /// Scratch space on the upper's filesystem (copy-up temporaries), open.
    work: OwnedFd,
    /// The xattr that marks opaque directories written here.
    pub opaque_xattr: &'static str,
    /// Merged directories seen lately (at most about [`VIEW_NAMES`] names in all), in
    /// path order: a directory's views below it follow it, so dropping a tree costs its
    /// own views, not a pass over all (once per created or removed entry).
    views: RwLock<Views>,
    /// Ticks at every use of a view (the least recently used go first).
    clock: AtomicU64,
    /// Ticks at every change recorded in the views (under their write lock): a view read
    /// from the layers while a change was made may miss it, so it is not cached.
    changes: AtomicU64,
    /// Names in the cached views (a view counts its names and one for itself).
    cached_names: AtomicUsize,
    /// The count at which the next sweep is due: the names allowed, or a quarter of them
    /// more than a sweep left (views in use it may not drop: a directory bigger than the
    /// bound, the one just added and its parents), so sweeps stay rare either way.
    next_sweep: AtomicUsize,
    /// The most names the cached views hold ([`VIEW_NAMES`]; smaller in tests).
    view_names: usize,
    /// Whether `.wh.` names in lowers are whiteouts ([`super::OverlaySpec::aufs_whiteouts`]).
    pub aufs_whiteouts: bool,
}

/// How many names the cached views may hold before the least recently used are dropped
/// (to three quarters of it): about 60 MB for lower entries with their stats. A view is a
/// cache of what the layers hold, so a dropped one is read again when next needed; a
/// tree of a million files is served within a bounded memory.
pub(super) const VIEW_NAMES: usize = 1 << 18;

/// The cached views by directory.
type Views = BTreeMap<PathBuf, Cached>;

/// The names a cached view counts for: its entries and one for itself.
fn view_size(v: &DirView) -> usize {
    v.names.len() + 1
}

/// A cached view and the clock's value when it was last used.
#[derive(Debug)]
struct Cached {
    view: Arc<DirView>,
    used: AtomicU64,
}

pub(super) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

impl Layers {
    /// The stack `dirs` (`[upper, lower 1 (top), …]`) with copy-up scratch space `work`:
    /// opens every directory for the mount's life.
    pub fn open(
        dirs: Vec<PathBuf>,
        work: &Path,
        opaque_xattr: &'static str,
        aufs_whiteouts: bool,
    ) -> io::Result<Layers> {
        let roots = dirs
            .iter()
            .map(|d| at::open_root(d))
            .collect::<io::Result<_>>()?;
        Ok(Layers {
            dirs,
            roots,
            work: at::open_root(work)?,
            opaque_xattr,
            views: Default::default(),
            clock: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            cached_names: AtomicUsize::new(0),
            next_sweep: AtomicUsize::new(VIEW_NAMES),
            view_names: VIEW_NAMES,
            aufs_whiteouts,
        })
    }

    /// `rel` in layer `i`.
    pub fn at<'a>(&'a self, i: usize, rel: &'a Path) -> io::Result<At<'a>> {
        At::new(self.roots[i].as_fd(), rel)
    }

    /// `name` in the work directory.
    pub fn work_at<'a>(&'a self, name: &'a Path) -> io::Result<At<'a>> {
        At::new(self.work.as_fd(), name)
    }

    /// The root of the upper directory (for `statvfs`).
    pub fn upper_root(&self) -> BorrowedFd<'_> {
        self.roots[0].as_fd()
    }

    /// `lstat` of `rel` in layer `i`; "no such entry" (also through a non-directory) is
    /// `None`.
    pub fn lstat(&self, i: usize, rel: &Path) -> io::Result<Option<Stat>> {
        match self.at(i, rel) {
            Ok(a) => a.lstat(),
            Err(e) if at::is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The merged directory `rel` (cached).
    pub fn view(&self, rel: &Path) -> io::Result<Arc<DirView>> {
        if let Some(c) = self
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
        {
            c.used.store(self.tick(), Ordering::Relaxed);
            return Ok(c.view.clone());
        }
        let changes = self.changes.load(Ordering::Acquire);
        let v = Arc::new(self.read_view(rel)?);
        self.cache_view(rel, changes, &v);
        Ok(v)
    }

    /// The merged directory `rel`, read from the layers.
    fn read_view(&self, rel: &Path) -> io::Result<DirView> {
        // The layers' directories, open: one open tells a directory is there, and serves
        // the opacity check (`fgetxattr`) and the listing.
        let mut dirs: Vec<(usize, OwnedFd)> = Vec::new();
        match rel.parent() {
            None => {
                for i in 0..self.dirs.len() {
                    let Some(fd) = self.at(i, rel)?.open_dir()? else {
                        return Err(io::Error::from(rustix::io::Errno::NOTDIR));
                    };
                    let opaque = i > 0 && self.opaque_in(i, &fd);
                    dirs.push((i, fd));
                    if opaque {
                        break;
                    }
                }
            }
            Some(parent) => {
                let pv = self.view(parent)?;
                for &i in &pv.layers {
                    let p = match self.at(i, rel) {
                        Ok(p) => p,
                        Err(e) if at::is_absent(&e) => continue,
                        Err(e) => return Err(e),
                    };
                    match p.open_dir()? {
                        Some(fd) => {
                            let opaque = self.opaque_in(i, &fd);
                            dirs.push((i, fd));
                            if opaque {
                                break;
                            }
                        }
                        // Something else stands here: it hides the layers below.
                        None if p.lstat()?.is_some() => break,
                        None => {}
                    }
                }
            }
        }
        let layers: Vec<usize> = dirs.iter().map(|(i, _)| *i).collect();
        let mut names = HashMap::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        let mut upper_whiteouts: HashSet<OsString> = HashSet::new();
        for (i, fd) in dirs {
            let listing = Listing::read(fd)?;
            for (name, ft) in &listing.entries {
                // AUFS-style whiteouts in lower layers (`.wh.NAME`, `.wh..wh..opq`), as
                // layers unpacked by other tools hold them.
                if i > 0 && self.aufs_whiteouts {
                    if let Some(hid) = name
                        .as_bytes()
                        .strip_prefix(format::OCI_WHITEOUT_PREFIX.as_bytes())
                    {
                        if name.as_bytes() != format::OCI_OPAQUE_MARKER.as_bytes() {
                            hidden.insert(OsStr::from_bytes(hid).to_os_string());
                        }
                        continue;
                    }
                }
                if names.contains_key(name) || hidden.contains(name) {
                    continue;
                }
                let maybe_whiteout = ft.is_char_device_or_empty_file();
                // Lower entries: one lstat, kept. Upper entries: stat only what may be a
                // whiteout; they are stat'ed fresh when asked for.
                let (st, whiteout) = if i > 0 || maybe_whiteout {
                    let c = listing.child(name)?;
                    let st = c.lstat()?;
                    let whiteout = maybe_whiteout
                        && st.is_some_and(|st| format::is_whiteout(&c.xattr_path(), &st));
                    (st, whiteout)
                } else {
                    (None, false)
                };
                if whiteout {
                    if i == 0 {
                        upper_whiteouts.insert(name.clone());
                    }
                    hidden.insert(name.clone());
                } else {
                    names.insert(name.clone(), (i, st.filter(|_| i > 0).map(Box::new)));
                }
            }
        }
        Ok(DirView {
            layers,
            names,
            upper_whiteouts,
        })
    }

    /// Keeps `v`, read from the layers when the change count was `changes`, as the view
    /// of `rel`, unless a change was recorded since (the listing may predate it; the next
    /// use reads the directory again) or another thread cached one first.
    fn cache_view(&self, rel: &Path, changes: u64, v: &Arc<DirView>) {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        if self.changes.load(Ordering::Acquire) != changes || views.contains_key(rel) {
            return;
        }
        views.insert(
            rel.to_path_buf(),
            Cached {
                view: v.clone(),
                used: AtomicU64::new(self.tick()),
            },
        );
        let added = view_size(v);
        if self.cached_names.fetch_add(added, Ordering::Relaxed) + added
            > self.next_sweep.load(Ordering::Relaxed)
        {
            self.sweep(&mut views, rel);
        }
    }

    /// The views, locked for a change: the change count ticks, so views being read from
    /// the layers meanwhile are not cached.
    fn views_for_change(&self) -> std::sync::RwLockWriteGuard<'_, Views> {
        let views = self.views.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::AcqRel);
        views
    }

    /// Drops the cached view of `rel`, and with `tree` those of everything under it,
    /// keeping the count of names exact. Paths order by their components, so the views
    /// under `rel` are the ones right after it.
    fn drop_views(&self, views: &mut Views, rel: &Path, tree: bool) {
        let mut gone = views.remove(rel).map_or(0, |c| view_size(&c.view));
        if tree {
            let below: Vec<PathBuf> = views
                .range::<Path, _>((Bound::Excluded(rel), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(rel))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                gone += views.remove(&p).map_or(0, |c| view_size(&c.view));
            }
        }
        self.cached_names.fetch_sub(gone, Ordering::Relaxed);
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Drops the least recently used views (never `keep`'s, just added, nor its parents',
    /// in use by the walk that reached it) until the rest hold at most three quarters of
    /// the names allowed.
    fn sweep(&self, views: &mut Views, keep: &Path) {
        let size = |c: &Cached| view_size(&c.view);
        let mut total: usize = views.values().map(size).sum();
        let goal = self.view_names / 4 * 3;
        if total > goal {
            let mut by_age: Vec<(u64, PathBuf, usize)> = views
                .iter()
                .filter(|(p, _)| !keep.starts_with(p))
                .map(|(p, c)| (c.used.load(Ordering::Relaxed), p.clone(), size(c)))
                .collect();
            by_age.sort_unstable_by_key(|(used, _, _)| *used);
            for (_, p, n) in by_age {
                if total <= goal {
                    break;
                }
                views.remove(&p);
                total -= n;
            }
        }
        self.cached_names.store(total, Ordering::Relaxed);
        self.next_sweep
            .store(total.max(goal) + self.view_names / 4, Ordering::Relaxed);
    }

    /// Records in the cached view of `rel`'s parent (if any) that `rel` is now in layer
    /// `layer`, or gone (`None`), without re-reading the directory.
    pub fn note_entry(&self, rel: &Path, layer: Option<usize>) {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return;
        };
        let mut views = self.views_for_change();
        if let Some(c) = views.get_mut(parent) {
            let v = Arc::make_mut(&mut c.view);
            let before = v.names.len();
            match layer {
                Some(l) => {
                    v.upper_whiteouts.remove(name);
                    v.names.insert(name.to_os_string(), (l, None));
                }
                None => {
                    v.names.remove(name);
                }
            }
            self.count_names(before, v.names.len());
        }
    }

    /// Keeps the count of cached names exact when a view went from `before` to `after`
    /// names (added first, so the count never passes below zero).
    fn count_names(&self, before: usize, after: usize) {
        self.cached_names.fetch_add(after, Ordering::Relaxed);
        self.cached_names.fetch_sub(before, Ordering::Relaxed);
    }

    /// Records that directory `rel`, merged from lowers so far, now also has an (empty,
    /// not opaque) upper directory: its parent's view finds it in the upper, its own view
    /// reads the upper first. Nothing else changes, so no view is dropped (re-reading the
    /// parent at every copy-up of one of its directories cost a whole listing each time).
    pub fn note_upper_dir(&self, rel: &Path) {
        self.note_entry(rel, Some(0));
        let mut views = self.views_for_change();
        if let Some(c) = views.get_mut(rel) {
            if c.view.layers.first() != Some(&0) {
                Arc::make_mut(&mut c.view).layers.insert(0, 0);
            }
        }
    }

    /// Records in the cached view of `rel`'s parent (if any) that the upper directory now
    /// holds a whiteout at `rel`.
    pub fn note_whiteout(&self, rel: &Path) {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return;
        };
        let mut views = self.views_for_change();
        if let Some(c) = views.get_mut(parent) {
            let v = Arc::make_mut(&mut c.view);
            let before = v.names.len();
            v.names.remove(name);
            v.upper_whiteouts.insert(name.to_os_string());
            self.count_names(before, v.names.len());
        }
    }

    /// Whether the open directory `dir` of layer `i` is opaque: the overlay xattr, or in
    /// a lower layer an AUFS-style `.wh..wh..opq` file.
    fn opaque_in(&self, i: usize, dir: &OwnedFd) -> bool {
        format::is_opaque_fd(dir)
            || (i > 0
                && self.aufs_whiteouts
                && at::lstat_at(dir.as_fd(), Path::new(format::OCI_OPAQUE_MARKER))
                    .ok()
                    .flatten()
                    .is_some())
    }

    /// Whether directory `rel` is known to exist in the upper layer (from its cached view).
    pub fn upper_has_dir(&self, rel: &Path) -> bool {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
            .is_some_and(|c| c.view.layers.first() == Some(&0))
    }

    /// Whether the upper directory may hold a whiteout at `rel`: false only when the
    /// parent's cached view knows it does not.
    pub fn may_have_upper_whiteout(&self, rel: &Path) -> bool {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return true;
        };
        match self
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(parent)
        {
            Some(c) => c.view.upper_whiteouts.contains(name),
            None => true,
        }
    }

    /// Drops the cached view of directory `rel`.
    pub fn forget_dir(&self, rel: &Path) {
        let mut views = self.views_for_change();
        self.drop_views(&mut views, rel, false);
    }

    /// Drops the cached views of `rel` and everything under it (not its parent).
    pub fn forget_tree_below(&self, rel: &Path) {
        let mut views = self.views_for_change();
        self.drop_views(&mut views, rel, true);
    }

    /// Drops the cached views of `rel`, everything under it, and its parent.
    pub fn forget_tree(&self, rel: &Path) {
        let mut views = self.views_for_change();
        self.drop_views(&mut views, rel, true);
        if let Some(parent) = rel.parent() {
            self.drop_views(&mut views, parent, false);
        }
    }

    /// The layers in which directory `rel` is part of the merged view, top first: the
    /// list ends at the first layer where it is opaque, or where something else (a
    /// whiteout, a file) stands at its name or at one of its parents'.
    pub fn dir_layers(&self, rel: &Path) -> io::Result<Vec<usize>> {
        Ok(self.view(rel)?.layers.clone())
    }

    /// The visible entry at `rel`: its layer and `lstat`.
    pub fn find(&self, rel: &Path) -> io::Result<Option<(usize, Stat)>> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(self.lstat(0, rel)?.map(|st| (0, st)));
        };
        let Ok(pv) = self.view(parent) else {
            return Ok(None);
        };
        let Some((layer, cached)) = pv.names.get(name) else {
            return Ok(None);
        };
        let layer = *layer;
        if let Some(st) = cached {
            return Ok(Some((layer, **st)));
        }
        Ok(self.lstat(layer, rel)?.map(|st| (layer, st)))
    }

    /// Whether a lower layer has an entry at `rel` that the merged view would show were
    /// the upper directory empty there (so removing `rel` needs a whiteout).
    pub fn exists_below(&self, rel: &Path) -> io::Result<bool> {
        let Some(parent) = rel.parent() else {
            return Ok(true);
        };
        for i in self.dir_layers(parent)?.into_iter().filter(|i| *i > 0) {
            if let Some(st) = self.lstat(i, rel)? {
                return Ok(!format::is_whiteout(&self.at(i, rel)?.xattr_path(), &st));
            }
            if let (Some(name), true) = (rel.file_name(), self.aufs_whiteouts) {
                let mut wh = std::ffi::OsString::from(format::OCI_WHITEOUT_PREFIX);
                wh.push(name);
                if self.lstat(i, &child(parent, &wh))?.is_some() {
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }

    /// The merged entries of directory `rel`: name, layer, `lstat`; sorted by name.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<(OsString, usize, Stat)>> {
        let v = self.view(rel)?;
        let mut out = Vec::with_capacity(v.names.len());
        for (name, (i, cached)) in &v.names {
            let st = match cached {
                Some(st) => Some(**st),
                None => self.lstat(*i, &child(rel, name))?,
            };
            if let Some(st) = st {
                out.push((name.clone(), *i, st));
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(out)
    }

    /// Whether the merged directory `rel` has no entries.
    pub fn is_empty_dir(&self, rel: &Path) -> io::Result<bool> {
        Ok(self.view(rel)?.names.is_empty())
    }
}

trait MaybeWhiteout {
    fn is_char_device_or_empty_file(&self) -> bool;
}

impl MaybeWhiteout for FileType {
    /// Whiteouts are character devices, or (with the xattr) regular files.
    fn is_char_device_or_empty_file(&self) -> bool {
        matches!(self, FileType::CharacterDevice | FileType::RegularFile)
    }
}

/// `parent/name` as a relative path (`name` alone under the root).
pub(super) fn child(parent: &Path, name: &OsStr) -> PathBuf {
    if parent.as_os_str().is_empty() {
        PathBuf::from(name)
    } else {
        parent.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::CWD;

    /// `layers(root, 2)` whose views may hold `names` names.
    fn bounded(root: &Path, names: usize) -> Layers {
        let mut l = layers(root, 2);
        l.view_names = names;
        l.next_sweep = AtomicUsize::new(names);
        l
    }

    fn layers(root: &Path, n: usize) -> Layers {
        let dirs: Vec<PathBuf> = (0..n).map(|i| root.join(format!("l{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(root.join("work")).unwrap();
        Layers::open(dirs, &root.join("work"), format::OPAQUE_XATTR_USER, true).unwrap()
    }

    #[test]
    fn the_least_recently_used_views_go_and_come_back_the_same() {
        let t = tempfile::tempdir().unwrap();
        let l = bounded(t.path(), 40);
        let dirs: Vec<String> = (0..20).map(|d| format!("d{d:02}")).collect();
        for d in &dirs {
            for f in 0..5 {
                std::fs::create_dir_all(l.dirs[1].join(d)).unwrap();
                std::fs::write(l.dirs[1].join(d).join(format!("f{f}")), "x").unwrap();
            }
        }
        let names = |l: &Layers, d: &str| -> Vec<OsString> {
            l.list(Path::new(d))
                .unwrap()
                .into_iter()
                .map(|e| e.0)
                .collect()
        };
        let first: Vec<_> = dirs.iter().map(|d| names(&l, d)).collect();
        let cached = |l: &Layers| l.views.read().unwrap().len();
        // 21 views of 6 names each could not all stay; the newest did.
        assert!(cached(&l) < dirs.len(), "{} views cached", cached(&l));
        assert!(l.cached_names.load(Ordering::Relaxed) <= 40);
        assert!(l.views.read().unwrap().contains_key(Path::new("d19")));
        // A view used lately outlives older ones.
        for d in &dirs[..10] {
            names(&l, d);
        }
        assert!(l.views.read().unwrap().contains_key(Path::new("d09")));
        // What was dropped reads back the same.
        let again: Vec<_> = dirs.iter().map(|d| names(&l, d)).collect();
        assert_eq!(first, again);
        assert_eq!(first[0].len(), 5);
    }

    #[test]
    fn a_view_read_while_the_directory_changes_is_not_kept() {
        let t = tempfile::tempdir().unwrap();
        let l = layers(t.path(), 2);
        std::fs::create_dir_all(l.dirs[0].join("d")).unwrap();
        std::fs::write(l.dirs[1].join("old"), "x").unwrap();
        let d = Path::new("d");
        // Another thread reads `d` from the layers …
        let changes = l.changes.load(Ordering::Acquire);
        let stale = Arc::new(l.read_view(d).unwrap());
        // … while a file is created in it and recorded (no view of `d` cached yet).
        std::fs::write(l.dirs[0].join("d/new"), "x").unwrap();
        l.note_entry(Path::new("d/new"), Some(0));
        l.cache_view(d, changes, &stale);
        assert!(
            !l.views.read().unwrap().contains_key(d),
            "a stale view was kept"
        );
        assert!(l.find(Path::new("d/new")).unwrap().is_some());
        // Without a change in between, the view is kept.
        let changes = l.changes.load(Ordering::Acquire);
        let fresh = Arc::new(l.read_view(Path::new("")).unwrap());
        l.cache_view(Path::new(""), changes, &fresh);
        assert!(l.views.read().unwrap().contains_key(Path::new("")));
    }

    #[test]
    fn forgetting_a_tree_drops_its_views_and_none_beside_it() {
        let t = tempfile::tempdir().unwrap();
        let l = layers(t.path(), 2);
        let dirs = [
            "a", "a/b", "a/b/c", "a/b/c/d", "a/b0", "a/b-1", "a/b.x", "a/bb", "a/bb/c",
        ];
        for d in dirs {
            std::fs::create_dir_all(l.dirs[1].join(d)).unwrap();
        }
        let cached = |l: &Layers| -> Vec<String> {
            let v = l.views.read().unwrap();
            v.keys().map(|p| p.display().to_string()).collect()
        };
        for d in dirs {
            l.list(Path::new(d)).unwrap();
        }
        assert_eq!(cached(&l).len(), dirs.len() + 1);
        l.forget_tree_below(Path::new("a/b"));
        assert_eq!(
            cached(&l),
            ["", "a", "a/b-1", "a/b.x", "a/b0", "a/bb", "a/bb/c"]
        );
        l.forget_tree(Path::new("a/bb"));
        assert_eq!(cached(&l), ["", "a/b-1", "a/b.x", "a/b0"]);
    }

    #[test]
    fn the_count_of_cached_names_follows_changes_and_forgets() {
        let t = tempfile::tempdir().unwrap();
        let l = layers(t.path(), 2);
        for d in ["a", "a/b", "c"] {
            std::fs::create_dir_all(l.dirs[1].join(d)).unwrap();
            std::fs::write(l.dirs[1].join(d).join("f"), "x").unwrap();
        }
        let exact = |l: &Layers| -> usize {
            l.views
                .read()
                .unwrap()
                .values()
                .map(|c| view_size(&c.view))
                .sum()
        };
        for d in ["a", "a/b", "c"] {
            l.list(Path::new(d)).unwrap();
        }
        assert_eq!(l.cached_names.load(Ordering::Relaxed), exact(&l));
        l.note_entry(Path::new("c/g"), Some(0));
        l.note_whiteout(Path::new("c/f"));
        assert_eq!(l.cached_names.load(Ordering::Relaxed), exact(&l));
        l.forget_tree(Path::new("a/b"));
        assert_eq!(l.cached_names.load(Ordering::Relaxed), exact(&l));
        l.forget_tree_below(Path::new("c"));
        l.forget_dir(Path::new(""));
        assert_eq!(l.cached_names.load(Ordering::Relaxed), exact(&l));
        assert_eq!(
            exact(&l),
            0,
            "{:?}",
            l.views.read().unwrap().keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_directory_bigger_than_the_bound_stays_while_its_subdirectories_are_walked() {
        let t = tempfile::tempdir().unwrap();
        let l = bounded(t.path(), 40);
        let big = l.dirs[1].join("big");
        for f in 0..50 {
            std::fs::create_dir_all(&big).unwrap();
            std::fs::write(big.join(format!("f{f}")), "x").unwrap();
        }
        for d in 0..10 {
            std::fs::create_dir_all(big.join(format!("s{d}"))).unwrap();
            std::fs::write(big.join(format!("s{d}/f")), "x").unwrap();
        }
        assert_eq!(l.list(Path::new("big")).unwrap().len(), 60);
        for d in 0..10 {
            let sub = PathBuf::from(format!("big/s{d}"));
            assert_eq!(l.list(&sub).unwrap().len(), 1);
            // The parent, over the bound alone, is in use: kept.
            assert!(l.views.read().unwrap().contains_key(Path::new("big")));
        }
        // And no sweep at every view added: the next one is due a quarter further on.
        assert!(l.next_sweep.load(Ordering::Relaxed) > 61);
    }

    #[test]
    fn aufs_whiteouts_in_lowers_hide_entries() {
        let t = tempfile::tempdir().unwrap();
        let l = layers(t.path(), 3);
        // l1 (top lower) whites out `gone` and makes `dir` opaque, AUFS style.
        std::fs::write(l.dirs[2].join("gone"), "x").unwrap();
        std::fs::write(l.dirs[2].join("kept"), "x").unwrap();
        std::fs::create_dir_all(l.dirs[2].join("dir")).unwrap();
        std::fs::write(l.dirs[2].join("dir/old"), "x").unwrap();
        std::fs::write(l.dirs[1].join(".wh.gone"), "").unwrap();
        std::fs::create_dir_all(l.dirs[1].join("dir")).unwrap();
        std::fs::write(l.dirs[1].join("dir/.wh..wh..opq"), "").unwrap();
        std::fs::write(l.dirs[1].join("dir/new"), "x").unwrap();
        let names: Vec<_> = l
            .list(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["dir", "kept"]);
        let inner: Vec<_> = l
            .list(Path::new("dir"))
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(inner, ["new"]);
        assert!(l.find(Path::new("gone")).unwrap().is_none());
        assert!(!l.exists_below(Path::new("gone")).unwrap());
        assert!(l.exists_below(Path::new("kept")).unwrap());
    }

    /// Every visible path below `rel` of the FUSE overlay's merged view.
    fn fuse_paths(l: &Layers, rel: &Path, out: &mut Vec<String>) {
        for (name, _, st) in l.list(rel).unwrap() {
            let c = child(rel, &name);
            out.push(c.display().to_string());
            if file_type(&st) == FileType::Directory {
                fuse_paths(l, &c, out);
            }
        }
    }

    /// Every visible path below `rel` of the diff's merged view of the lowers.
    fn diff_paths(v: &crate::diff::lowers::LowerView<'_>, rel: &[u8], out: &mut Vec<String>) {
        for name in v.children(rel) {
            let mut c = rel.to_vec();
            if !c.is_empty() {
                c.push(b'/');
            }
            c.extend_from_slice(&name);
            out.push(String::from_utf8_lossy(&c).into_owned());
            if v.lookup(&c).is_some_and(|(_, md)| md.is_dir()) {
                diff_paths(v, &c, out);
            }
        }
    }

    /// Every path below `dir` of a plain tree (the copy backend's merged copy).
    fn tree_paths(dir: &Path, rel: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir.join(rel)).unwrap() {
            let e = e.unwrap();
            let c = child(rel, &e.file_name());
            out.push(c.display().to_string());
            if e.file_type().unwrap().is_dir() {
                tree_paths(dir, &c, out);
            }
        }
    }

    /// One stack with every whiteout and opaque marker the overlay format knows reads the
    /// same through the FUSE overlay, the diff's view of lowers and the copy backend.
    #[test]
    fn every_reader_sees_the_same_markers() {
        let t = tempfile::tempdir().unwrap();
        let l = layers(t.path(), 3);
        let (top, bottom) = (&l.dirs[1], &l.dirs[2]);
        let set = |p: &Path, name: &str, value: &[u8]| {
            rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).is_ok()
        };
        std::fs::write(bottom.join("kept"), "k").unwrap();
        let mut want = vec!["kept".to_string()];
        for (dir, xattr, value, opaque) in [
            ("o-user", format::OPAQUE_XATTR_USER, &b"y"[..], true),
            ("o-trusted", format::OPAQUE_XATTR_TRUSTED, b"y", true),
            ("o-fuse", format::OPAQUE_XATTR_FUSE_OVERLAYFS, b"y", true),
            (
                "o-x",
                format::OPAQUE_XATTR_USER,
                format::XWHITEOUT_PARENT_VALUE,
                false,
            ),
        ] {
            std::fs::create_dir_all(bottom.join(dir)).unwrap();
            std::fs::write(bottom.join(dir).join("old"), "o").unwrap();
            std::fs::create_dir_all(top.join(dir)).unwrap();
            std::fs::write(top.join(dir).join("new"), "n").unwrap();
            want.extend([dir.to_string(), format!("{dir}/new")]);
            // trusted.* needs real root: unprivileged, that directory merges plainly.
            if !(set(&top.join(dir), xattr, value) && opaque) {
                want.push(format!("{dir}/old"));
            }
        }
        for (name, xattr) in [
            ("gone-user", Some(format::WHITEOUT_XATTR_USER)),
            ("gone-trusted", Some(format::WHITEOUT_XATTR_TRUSTED)),
            ("gone-device", None),
        ] {
            std::fs::write(bottom.join(name), "g").unwrap();
            let p = top.join(name);
            let hidden = match xattr {
                Some(x) => {
                    std::fs::write(&p, "").unwrap();
                    set(&p, x, b"y")
                }
                None => rustix::fs::mknodat(
                    CWD,
                    &p,
                    FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .is_ok(),
            };
            if !hidden {
                // An empty file without the marker is an ordinary file above the old one.
                let _ = std::fs::remove_file(&p);
                std::fs::write(&p, "").unwrap();
                want.push(name.to_string());
            }
        }
        want.sort();

        let mut fuse = Vec::new();
        fuse_paths(&l, Path::new(""), &mut fuse);
        fuse.sort();
        let lowers = vec![top.clone(), bottom.clone()];
        let view = crate::diff::lowers::LowerView { lowers: &lowers };
        let mut diff = Vec::new();
        diff_paths(&view, b"", &mut diff);
        diff.sort();
        let copy_dir = t.path().join("copy");
        crate::backend::copy::materialize(&lowers, &copy_dir).unwrap();
        let mut copy = Vec::new();
        tree_paths(&copy_dir, Path::new(""), &mut copy);
        copy.sort();
        assert_eq!(fuse, want, "FUSE overlay");
        assert_eq!(diff, want, "diff's view of the lowers");
        assert_eq!(copy, want, "copy backend");
    }
}
