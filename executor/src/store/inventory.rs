//! Everything in a kiln root, each item with what keeps it (reachability).
//!
//! - From the tags of `index.json`: each manifest (an index is followed to its manifests),
//!   its config and layer blobs, the snapshot chain its layers form
//!   (`ChainId::new(parent, layer digest)` over the layer list, as images are imported and
//!   built) and every ancestor of those snapshots (their `parent` files).
//! - From the build cache: an entry is *valid* while the snapshot and the blob it names
//!   exist; a valid entry keeps its snapshot (with ancestors) and its blob. An entry that
//!   names something missing keeps nothing and is garbage itself.
//! - Cache-mount directories belong to the build cache; unfinished writes (temporaries)
//!   belong to nobody.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::SystemTime;

use oci_spec::image::{ImageIndex, ImageManifest};

use super::usage::{disk_usage, SeenInodes};
use super::{ImageStore, ImageStoreError, REF_NAME};
use crate::cache::entries::StoredEntry;
use crate::cache::StepCache;
use crate::snapshots::{ChainId, SnapshotStore};

/// The kinds `kiln du` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Manifest and config blobs.
    Images,
    /// Layer blobs.
    Layers,
    Snapshots,
    /// Build-cache entry files.
    BuildCache,
    CacheMounts,
    /// Unfinished writes and removals, active snapshots.
    Temporaries,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Images,
        Kind::Layers,
        Kind::Snapshots,
        Kind::BuildCache,
        Kind::CacheMounts,
        Kind::Temporaries,
    ];

    /// The name `kiln du` prints (the table's TYPE column).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Images => "Images",
            Kind::Layers => "Layers",
            Kind::Snapshots => "Snapshots",
            Kind::BuildCache => "Build cache",
            Kind::CacheMounts => "Cache mounts",
            Kind::Temporaries => "Temporaries",
        }
    }

    /// The name in JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Layers => "layers",
            Kind::Snapshots => "snapshots",
            Kind::BuildCache => "build_cache",
            Kind::CacheMounts => "cache_mounts",
            Kind::Temporaries => "temporaries",
        }
    }
}

/// What keeps an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// A tag reaches it.
    Tag,
    /// Only the build cache (a valid entry, or it is a valid entry or a cache mount).
    Cache,
    /// A running build's active snapshot: never removed here (the snapshot store sweeps
    /// them once their owner is gone).
    Live,
    /// Nothing: garbage.
    Nothing,
}

impl Holder {
    pub fn label(self) -> &'static str {
        match self {
            Holder::Tag => "tag",
            Holder::Cache => "cache",
            Holder::Live => "build",
            Holder::Nothing => "none",
        }
    }
}

/// What an item is on disk, to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Blob(String),
    Snapshot {
        id: ChainId,
        parent: Option<ChainId>,
    },
    Entry(StoredEntry),
    CacheMount(PathBuf),
    Temporary(PathBuf),
}

/// One thing in the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: Kind,
    /// A digest, chain id, key or path: what `--verbose` and prune print.
    pub name: String,
    pub target: Target,
    pub size: u64,
    /// Written or last used.
    pub modified: SystemTime,
    pub held: Holder,
}

/// What one image reaches.
#[derive(Debug, Default)]
pub struct Reach {
    /// Manifest and config blobs.
    pub meta: HashSet<String>,
    pub layers: HashSet<String>,
    /// The chains its layers form (ancestors are added by [`Inventory::close`]).
    pub chains: HashSet<ChainId>,
}

impl Reach {
    /// Adds what the manifest (or index) `digest` reaches; missing or unreadable blobs
    /// reach nothing further.
    pub fn add_image(&mut self, images: &ImageStore, digest: &str) {
        if !self.meta.insert(digest.to_string()) {
            return;
        }
        let Ok(bytes) = images.read_blob(digest) else {
            return;
        };
        if let Ok(m) = ImageManifest::from_reader(&bytes[..]) {
            self.meta.insert(m.config().digest().to_string());
            let mut chain: Option<ChainId> = None;
            for l in m.layers() {
                let d = l.digest().to_string();
                let id = ChainId::new(chain.as_ref(), &d);
                self.chains.insert(id.clone());
                self.layers.insert(d);
                chain = Some(id);
            }
        } else if let Ok(index) = ImageIndex::from_reader(&bytes[..]) {
            for m in index.manifests() {
                self.add_image(images, m.digest().as_ref());
            }
        }
    }
}

/// The tags of `index.json`: (name, manifest digest).
pub fn tags(images: &ImageStore) -> Result<Vec<(String, String)>, ImageStoreError> {
    Ok(images
        .index()?
        .manifests()
        .iter()
        .map(|d| {
            let name = d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
                .unwrap_or_default();
            (name, d.digest().to_string())
        })
        .collect())
}

/// The stores of one root, read together.
pub struct Inventory<'a> {
    pub images: &'a ImageStore,
    pub snapshots: &'a SnapshotStore,
    pub cache: &'a StepCache,
    pub cache_mounts: PathBuf,
    /// Snapshot id → parent.
    pub parents: HashMap<ChainId, Option<ChainId>>,
}

/// Why reading the root failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    #[error(transparent)]
    Snapshots(#[from] crate::snapshots::StoreError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Inventory<'_> {
    /// `chains` with all their ancestors that exist.
    pub fn close(&self, chains: impl IntoIterator<Item = ChainId>) -> HashSet<ChainId> {
        let mut out = HashSet::new();
        for c in chains {
            let mut cur = Some(c);
            while let Some(id) = cur {
                if !self.parents.contains_key(&id) || !out.insert(id.clone()) {
                    break;
                }
                cur = self.parents.get(&id).cloned().flatten();
            }
        }
        out
    }

    /// Whether a cache entry's snapshot and blob exist.
    pub fn entry_valid(&self, e: &StoredEntry) -> bool {
        e.readable
            && e.chain
                .as_ref()
                .is_none_or(|c| self.parents.contains_key(c))
            && e.layer_digest
                .as_ref()
                .is_none_or(|d| self.images.blob_path(d).is_file())
    }

    /// What the tags reach.
    pub fn tagged(&self) -> Result<Reach, InventoryError> {
        let mut reach = Reach::default();
        for (_, digest) in tags(self.images)? {
            reach.add_image(self.images, &digest);
        }
        Ok(reach)
    }

    /// Every item of the root, measured, with what holds it.
    pub fn items(&self) -> Result<Vec<Item>, InventoryError> {
        let tagged = self.tagged()?;
        let tag_chains = self.close(tagged.chains.iter().cloned());
        let entries = self.cache.entries()?;
        let mut cache_chains = Vec::new();
        let mut cache_blobs = HashSet::new();
        for e in entries.iter().filter(|e| self.entry_valid(e)) {
            cache_chains.extend(e.chain.clone());
            cache_blobs.extend(e.layer_digest.clone());
        }
        let cache_chains = self.close(cache_chains);
        let hold = |by_tag: bool, by_cache: bool| match (by_tag, by_cache) {
            (true, _) => Holder::Tag,
            (false, true) => Holder::Cache,
            _ => Holder::Nothing,
        };

        let mut seen = SeenInodes::default();
        let mut items = Vec::new();
        for b in self.images.blob_files()? {
            let size = disk_usage(&b.path, &mut seen);
            let Some(digest) = b.digest else {
                items.push(temporary(b.path, size, b.modified));
                continue;
            };
            let kind = if tagged.meta.contains(&digest) {
                Kind::Images
            } else if tagged.layers.contains(&digest) || cache_blobs.contains(&digest) {
                Kind::Layers
            } else if looks_like_json(&b.path) {
                Kind::Images
            } else {
                Kind::Layers
            };
            let by_tag = tagged.meta.contains(&digest) || tagged.layers.contains(&digest);
            items.push(Item {
                kind,
                name: digest.clone(),
                held: hold(by_tag, cache_blobs.contains(&digest)),
                target: Target::Blob(digest),
                size,
                modified: b.modified,
            });
        }
        for s in self.snapshots.committed()? {
            items.push(Item {
                kind: Kind::Snapshots,
                name: s.id.to_string(),
                size: disk_usage(&s.dir, &mut seen),
                modified: s.modified,
                held: hold(tag_chains.contains(&s.id), cache_chains.contains(&s.id)),
                target: Target::Snapshot {
                    id: s.id,
                    parent: s.parent,
                },
            });
        }
        for dir in self.snapshots.scratch_dirs()? {
            let size = disk_usage(&dir, &mut seen);
            let active = dir
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "work");
            let mut item = temporary(dir, size, SystemTime::now());
            if active {
                item.held = Holder::Live;
            }
            items.push(item);
        }
        for e in entries {
            let name = e
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            items.push(Item {
                kind: Kind::BuildCache,
                name,
                size: disk_usage(&e.path, &mut seen),
                modified: e.modified,
                held: hold(false, self.entry_valid(&e)),
                target: Target::Entry(e),
            });
        }
        for path in self.cache.temporaries()? {
            let size = disk_usage(&path, &mut seen);
            items.push(temporary(path, size, SystemTime::now()));
        }
        for path in self.images.root_temporaries()? {
            let size = disk_usage(&path, &mut seen);
            items.push(temporary(path, size, SystemTime::now()));
        }
        self.cache_mount_items(&mut items, &mut seen)?;
        Ok(items)
    }

    fn cache_mount_items(
        &self,
        items: &mut Vec<Item>,
        seen: &mut SeenInodes,
    ) -> Result<(), InventoryError> {
        let dir = &self.cache_mounts;
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(InventoryError::Io {
                    path: dir.clone(),
                    source,
                })
            }
        };
        for e in entries {
            let e = e.map_err(|source| InventoryError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            let size = disk_usage(&e.path(), seen);
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(".tmp-") {
                items.push(temporary(e.path(), size, modified));
                continue;
            }
            items.push(Item {
                kind: Kind::CacheMounts,
                name,
                size,
                modified,
                held: Holder::Cache,
                target: Target::CacheMount(e.path()),
            });
        }
        Ok(())
    }
}

fn temporary(path: PathBuf, size: u64, modified: SystemTime) -> Item {
    let modified = std::fs::symlink_metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or(modified);
    Item {
        kind: Kind::Temporaries,
        name: path.display().to_string(),
        size,
        modified,
        held: Holder::Nothing,
        target: Target::Temporary(path),
    }
}

/// Whether a blob no tag names looks like a manifest or config (JSON) rather than a layer.
fn looks_like_json(path: &std::path::Path) -> bool {
    let mut first = [0u8; 1];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut first))
        .is_ok()
        && first[0] == b'{'
}
