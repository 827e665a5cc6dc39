//! Freeing space: `kiln prune` and what `kiln rmi` frees, and the sweep at build start.
//!
//! Rules (see [`inventory`](super::inventory) for what reaches what):
//! - A [`Collector`] holds the root's lease exclusively (the snapshot store's
//!   `gc.lock`, which every build and `kiln run` holds shared from start to end, and
//!   `kiln load`/`save` while they run): it waits for running builds to finish, and builds
//!   wait for it. So nothing a live build has committed, written or is about to tag is
//!   ever removed, however long that build has been running; no age heuristics needed.
//! - Nothing a tag reaches is removed. By default prune removes what nothing holds:
//!   blobs and snapshots no tag and no valid cache entry reaches, cache entries naming
//!   something missing, and temporaries. `--all` also removes the build cache (every entry,
//!   then what only entries held, and the cache-mount directories): never a tagged image.
//! - What stays keeps what it needs: a snapshot that is kept (too new for
//!   `--filter until=`, `--keep-storage` reached) keeps its ancestors, a kept entry keeps
//!   its snapshot and blob; an entry is removed before the snapshot or blob it names, so
//!   no entry ever points at something missing, even after a crash mid-way.
//! - `--keep-storage`: oldest first (modification time: when written or, for cache
//!   entries, last hit), until the root's size is at most the limit.
//! - A snapshot is removed by the snapshot store (renamed to `.tmp-remove-*`, then
//!   deleted); a cache mount is renamed to `cache/mounts/.tmp-remove-*` first too, so a
//!   crash never leaves a half-deleted directory under its real name.
//!
//! The sweep at build start ([`ImageStore::sweep_temporaries`]) runs without the exclusive
//! lease, so it goes by age: unfinished blob and `index.json` writes older than a minute
//! (a live write keeps its file's modification time fresh).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::inventory::{Holder, Inventory, InventoryError, Item, Kind, Reach, Target};
use super::usage::Usage;
use super::{ImageStore, ImageStoreError};
use crate::cache::{CacheError, StepCache};
use crate::snapshots::{remove_tree, ChainId, SnapshotStore, StoreError};

/// Why collecting failed.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    #[error(transparent)]
    Snapshots(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("removing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `kiln prune` removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Also the build cache: every entry, what only entries hold, cache mounts.
    pub all: bool,
    /// Stop once the root takes at most this many bytes.
    pub keep_storage: Option<u64>,
    /// Only what was written or last used longer ago than this.
    pub until: Option<Duration>,
}

/// One removed (or, planned, to be removed) item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub kind: Kind,
    pub name: String,
    pub size: u64,
}

/// The stores of one root with the exclusive lease held.
pub struct Collector {
    root: PathBuf,
    images: ImageStore,
    snapshots: SnapshotStore,
    cache: StepCache,
}

/// What the root holds, read while builds may run (takes the shared lease: waits for a
/// collection in progress).
pub fn usage(root: &Path) -> Result<Usage, PruneError> {
    let images = ImageStore::open(root)?;
    let snapshots = SnapshotStore::open(root)?;
    let cache = StepCache::open(root)?;
    let inventory = inventory(root, &images, &snapshots, &cache)?;
    Ok(Usage::of(inventory.items()?))
}

fn inventory<'a>(
    root: &Path,
    images: &'a ImageStore,
    snapshots: &'a SnapshotStore,
    cache: &'a StepCache,
) -> Result<Inventory<'a>, PruneError> {
    let parents = snapshots
        .committed()?
        .into_iter()
        .map(|s| (s.id, s.parent))
        .collect();
    Ok(Inventory {
        images,
        snapshots,
        cache,
        cache_mounts: root.join("cache").join("mounts"),
        parents,
    })
}

impl Collector {
    /// Opens the root's stores with the exclusive lease; `on_wait` is called once when
    /// other kiln processes use the root (then this waits for them).
    pub fn open(root: &Path, on_wait: &mut dyn FnMut()) -> Result<Collector, PruneError> {
        let images = ImageStore::open(root)?;
        let snapshots = SnapshotStore::open_exclusive(root, on_wait)?;
        let cache = StepCache::open(root)?;
        Ok(Collector {
            root: root.to_path_buf(),
            images,
            snapshots,
            cache,
        })
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    fn inventory(&self) -> Result<Inventory<'_>, PruneError> {
        inventory(&self.root, &self.images, &self.snapshots, &self.cache)
    }

    /// What the root holds now.
    pub fn usage(&self) -> Result<Usage, PruneError> {
        Ok(Usage::of(self.inventory()?.items()?))
    }

    /// What `prune` with `opts` would remove, in order, without removing anything.
    pub fn plan(&self, opts: &PruneOptions) -> Result<Vec<Removed>, PruneError> {
        let inv = self.inventory()?;
        let items = inv.items()?;
        let order = plan_prune(&inv, &items, opts, SystemTime::now());
        Ok(order.iter().map(|&i| removed(&items[i])).collect())
    }

    /// Removes what `opts` selects; returns what went, in order.
    pub fn prune(&self, opts: &PruneOptions) -> Result<Vec<Removed>, PruneError> {
        let inv = self.inventory()?;
        let items = inv.items()?;
        let order = plan_prune(&inv, &items, opts, SystemTime::now());
        let removed = self.remove(&items, &order)?;
        if opts.all && opts.keep_storage.is_none() && opts.until.is_none() {
            // The build cache's memo of context hashes goes with the whole cache.
            match std::fs::remove_file(self.root.join("cache").join("context-index")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::debug!("removing the context index: {e}")
                }
                _ => {}
            }
        }
        Ok(removed)
    }

    /// After the manifests `untagged` lost their tags: removes the blobs and snapshots
    /// they reached that nothing holds any more (no other tag, no valid cache entry, so a
    /// rebuild stays cached).
    pub fn release(&self, untagged: &[String]) -> Result<Vec<Removed>, PruneError> {
        let inv = self.inventory()?;
        let items = inv.items()?;
        let mut reach = Reach::default();
        for d in untagged {
            reach.add_image(&self.images, d);
        }
        let chains = inv.close(reach.chains.iter().cloned());
        let candidate = |i: &Item| {
            i.held == Holder::Nothing
                && match &i.target {
                    Target::Blob(d) => reach.meta.contains(d) || reach.layers.contains(d),
                    Target::Snapshot { id, .. } => chains.contains(id),
                    _ => false,
                }
        };
        let order = plan(&inv, &items, &candidate, None);
        self.remove(&items, &order)
    }

    fn remove(&self, items: &[Item], order: &[usize]) -> Result<Vec<Removed>, PruneError> {
        let mut out = Vec::new();
        for &i in order {
            let item = &items[i];
            match &item.target {
                Target::Blob(d) => self.images.remove_blob(d)?,
                Target::Snapshot { id, .. } => match self.snapshots.remove(id) {
                    Err(StoreError::NotFound(_)) => {}
                    r => r?,
                },
                Target::Entry(e) => self.cache.remove(e)?,
                Target::CacheMount(path) => remove_renamed(path)?,
                Target::Temporary(path) => remove_tree(path)?,
            }
            out.push(removed(item));
        }
        Ok(out)
    }
}

fn removed(item: &Item) -> Removed {
    Removed {
        kind: item.kind,
        name: item.name.clone(),
        size: item.size,
    }
}

/// Renames `path` to `.tmp-remove-<name>` next to it, then removes it.
fn remove_renamed(path: &Path) -> Result<(), PruneError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = path.with_file_name(format!(".tmp-remove-{name}"));
    match std::fs::rename(path, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PruneError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    Ok(remove_tree(&doomed)?)
}

/// The removal order of `kiln prune` with `opts`.
fn plan_prune(inv: &Inventory, items: &[Item], opts: &PruneOptions, now: SystemTime) -> Vec<usize> {
    let old_enough = |i: &Item| match opts.until {
        Some(age) => now.duration_since(i.modified).is_ok_and(|d| d >= age),
        None => true,
    };
    let candidate = |i: &Item| {
        let selected = match i.held {
            Holder::Nothing => true,
            Holder::Cache => opts.all,
            Holder::Tag | Holder::Live => false,
        };
        selected && old_enough(i)
    };
    plan(inv, items, &candidate, opts.keep_storage)
}

/// Which of `items` go and in what order: the candidates, less what a kept item needs,
/// each after what depends on it (children snapshots, entries naming it); with
/// `keep_storage`, oldest first until the root's size is at most that.
fn plan(
    inv: &Inventory,
    items: &[Item],
    candidate: &dyn Fn(&Item) -> bool,
    keep_storage: Option<u64>,
) -> Vec<usize> {
    let mut chosen: Vec<bool> = items.iter().map(candidate).collect();
    // What the items that stay need.
    let mut kept_chains = Vec::new();
    let mut kept_blobs = HashSet::new();
    for item in items
        .iter()
        .zip(&chosen)
        .filter(|(_, c)| !**c)
        .map(|(i, _)| i)
    {
        match &item.target {
            Target::Snapshot { id, .. } => kept_chains.push(id.clone()),
            Target::Entry(e) if inv.entry_valid(e) => {
                kept_chains.extend(e.chain.clone());
                kept_blobs.extend(e.layer_digest.clone());
            }
            _ => {}
        }
    }
    let kept_chains = inv.close(kept_chains);
    for (i, item) in items.iter().enumerate() {
        let needed = match &item.target {
            Target::Snapshot { id, .. } => kept_chains.contains(id),
            Target::Blob(d) => kept_blobs.contains(d),
            _ => false,
        };
        if needed {
            chosen[i] = false;
        }
    }
    // What must go first: children of a snapshot, entries naming a snapshot or blob.
    let mut first: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut snapshot_at: HashMap<&ChainId, usize> = HashMap::new();
    let mut blob_at: HashMap<&str, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        match &item.target {
            Target::Snapshot { id, .. } => {
                snapshot_at.insert(id, i);
            }
            Target::Blob(d) => {
                blob_at.insert(d, i);
            }
            _ => {}
        }
    }
    for (i, item) in items.iter().enumerate().filter(|(i, _)| chosen[*i]) {
        let named = match &item.target {
            Target::Snapshot {
                parent: Some(p), ..
            } => vec![snapshot_at.get(p)],
            Target::Entry(e) => vec![
                e.chain.as_ref().and_then(|c| snapshot_at.get(c)),
                e.layer_digest.as_deref().and_then(|d| blob_at.get(d)),
            ],
            _ => Vec::new(),
        };
        for &target in named.into_iter().flatten() {
            first.entry(target).or_default().push(i);
        }
    }
    let mut order: Vec<usize> = (0..items.len()).filter(|&i| chosen[i]).collect();
    if keep_storage.is_some() {
        order.sort_by_key(|&i| items[i].modified);
    }
    let mut size: u64 = items.iter().map(|i| i.size).sum();
    let mut done = vec![false; items.len()];
    let mut out = Vec::new();
    for i in order {
        if keep_storage.is_some_and(|keep| size <= keep) {
            break;
        }
        visit(i, &first, &chosen, &mut done, &mut out, &mut size, items);
    }
    out
}

fn visit(
    i: usize,
    first: &HashMap<usize, Vec<usize>>,
    chosen: &[bool],
    done: &mut [bool],
    out: &mut Vec<usize>,
    size: &mut u64,
    items: &[Item],
) {
    if done[i] || !chosen[i] {
        return;
    }
    done[i] = true;
    for &dep in first.get(&i).map(Vec::as_slice).unwrap_or_default() {
        visit(dep, first, chosen, done, out, size, items);
    }
    out.push(i);
    *size = size.saturating_sub(items[i].size);
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
