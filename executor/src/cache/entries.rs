//! Cache entries on disk: `<root>/cache/steps/<key>.json`, each naming the committed
//! snapshot and the layer a step made. Entries are written to a temporary file and
//! renamed into place, so a reader sees a whole entry or none; an entry whose snapshot or
//! blob is gone (removed by hand, a crash before commit) is a miss, never an error.
//! A hit sets the entry's modification time, so it tells when the entry was last used
//! (`kiln prune --filter until=` and `--keep-storage` go by it).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{RemoteBlobs, StepKey};
use crate::image::state::LayerRef;
use crate::snapshots::{ChainId, Snapshotter};
use crate::store::ImageStore;

/// Why the cache could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding a cache entry: {0}")]
    Encode(#[from] serde_json::Error),
    /// A layer an imported cache names could not be fetched.
    #[error("fetching a cached layer: {0}")]
    Fetch(#[from] crate::registry::RegistryError),
    /// A cached step's snapshot is gone and its layers do not make it again.
    #[error("snapshot {0} is missing and its cached layers do not make it")]
    Unmade(String),
}

/// What a cached step made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedStep {
    /// The snapshot chain after the step (`None`: still empty).
    pub chain: Option<ChainId>,
    /// The layer it added, if any.
    pub layer: Option<LayerRef>,
    /// Every layer of the chain, bottom first, when they add up to `chain`: what
    /// rebuilds the snapshot in a root that lacks it (an imported cache).
    pub layers: Vec<LayerRef>,
}

/// An entry as stored (and as a cache export carries it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub chain: Option<String>,
    pub layer: Option<EntryLayer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<EntryLayer>,
}

/// A layer as an entry names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

impl From<&LayerRef> for EntryLayer {
    fn from(l: &LayerRef) -> EntryLayer {
        EntryLayer {
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
        }
    }
}

impl From<EntryLayer> for LayerRef {
    fn from(l: EntryLayer) -> LayerRef {
        LayerRef {
            digest: l.digest,
            diff_id: l.diff_id,
            size: l.size,
            media_type: l.media_type,
        }
    }
}

/// The chain `layers` make, bottom first (`None`: no layer).
fn chain_of<'a>(digests: impl IntoIterator<Item = &'a str>) -> Option<ChainId> {
    digests
        .into_iter()
        .fold(None, |parent, d| Some(ChainId::new(parent.as_ref(), d)))
}

/// An entry file as the collector sees it: what it names, whether it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub path: PathBuf,
    /// The snapshot chain it names.
    pub chain: Option<ChainId>,
    /// The layer blob it names (`sha256:…`).
    pub layer_digest: Option<String>,
    /// `false`: the file does not decode (it names nothing usable).
    pub readable: bool,
    /// When it was written or last hit.
    pub modified: std::time::SystemTime,
}

/// The step cache of one kiln root.
#[derive(Debug, Clone)]
pub struct StepCache {
    dir: PathBuf,
}

impl StepCache {
    pub fn open(root: &Path) -> Result<StepCache, CacheError> {
        let dir = root.join("cache").join("steps");
        std::fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        let cache = StepCache { dir };
        cache.sweep()?;
        Ok(cache)
    }

    /// Removes entry writes a killed process left (`.tmp-*` older than a minute; a live
    /// write is renamed into place at once).
    fn sweep(&self) -> Result<(), CacheError> {
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for path in self.temporaries()? {
            let old = std::fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if !old {
                continue;
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CacheError::Io { path, source: e })
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn path(&self, key: &StepKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The step's result, if it was cached and what it names exists or can be made: its
    /// snapshot is committed, or its chain's layers are all stored or fetchable
    /// (`remote`) — the snapshot is then made from them when a step needs it
    /// ([`rebuild`]); its layer is stored or fetchable.
    pub fn get(
        &self,
        key: &StepKey,
        snapshots: &Snapshotter,
        images: &ImageStore,
        remote: &RemoteBlobs,
    ) -> Option<CachedStep> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let e: Entry = serde_json::from_slice(&bytes).ok()?;
        let chain = match &e.chain {
            Some(c) => {
                let id = ChainId::parse(c)?;
                let makeable = chain_of(e.layers.iter().map(|l| l.digest.as_str())).as_ref()
                    == Some(&id)
                    && e.layers.iter().all(|l| remote.available(images, &l.digest));
                if !snapshots.exists(&id) && !makeable {
                    return None;
                }
                Some(id)
            }
            None => None,
        };
        let layer = match e.layer {
            Some(l) => {
                if !remote.available(images, &l.digest) {
                    return None;
                }
                Some(LayerRef::from(l))
            }
            None => None,
        };
        let layers = e.layers.into_iter().map(LayerRef::from).collect();
        // Last used now; an entry that cannot be touched is still a hit.
        let _ = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(CachedStep {
            chain,
            layer,
            layers,
        })
    }

    /// The stored entry of `key`, as it is on disk.
    pub fn entry(&self, key: &StepKey) -> Option<Entry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores `entry` under `key` unless this root has one: an imported cache never
    /// replaces what this root built. Whether it was stored.
    pub fn import(&self, key: &StepKey, entry: &Entry) -> Result<bool, CacheError> {
        if self.path(key).exists() {
            return Ok(false);
        }
        self.write(key, entry)?;
        Ok(true)
    }

    fn io_err(&self) -> impl Fn(std::io::Error) -> CacheError + '_ {
        |source| CacheError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    /// Every entry file (`<key>.json`), decoded as far as it goes.
    pub fn entries(&self) -> Result<Vec<StoredEntry>, CacheError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(self.io_err())? {
            let e = e.map_err(self.io_err())?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || !name.ends_with(".json") {
                continue;
            }
            let path = e.path();
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            let decoded = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
            let named = decoded.and_then(|entry| {
                let chain = match entry.chain {
                    Some(c) => Some(ChainId::parse(&c)?),
                    None => None,
                };
                Some((chain, entry.layer.map(|l| l.digest)))
            });
            let readable = named.is_some();
            let (chain, layer_digest) = named.unwrap_or_default();
            let stored = StoredEntry {
                path,
                chain,
                layer_digest,
                readable,
                modified,
            };
            out.push(stored);
        }
        Ok(out)
    }

    /// Unfinished entry writes (`.tmp-*`) a killed build left.
    pub fn temporaries(&self) -> Result<Vec<PathBuf>, CacheError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(self.io_err())? {
            let e = e.map_err(self.io_err())?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Removes an entry file (gone already is fine).
    pub fn remove(&self, entry: &StoredEntry) -> Result<(), CacheError> {
        match std::fs::remove_file(&entry.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::Io {
                path: entry.path.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Records what the step with `key` made.
    pub fn put(&self, key: &StepKey, step: &CachedStep) -> Result<(), CacheError> {
        let layers: Vec<EntryLayer> = step.layers.iter().map(EntryLayer::from).collect();
        let entry = Entry {
            chain: step.chain.as_ref().map(|c| c.as_str().to_string()),
            layer: step.layer.as_ref().map(EntryLayer::from),
            // Only layers that add up to the chain can rebuild it.
            layers: match chain_of(layers.iter().map(|l| l.digest.as_str())) == step.chain {
                true => layers,
                false => Vec::new(),
            },
        };
        self.write(key, &entry)
    }

    fn write(&self, key: &StepKey, entry: &Entry) -> Result<(), CacheError> {
        let json = serde_json::to_vec(entry)?;
        let io = |source| CacheError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(io)?;
        tmp.write_all(&json).map_err(io)?;
        tmp.persist(self.path(key)).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// Makes snapshot `chain` from `layers` (their blobs in `images`), applying those of its
/// parents this root lacks; whether it now exists.
/// Makes snapshot `chain` from `layers` (bottom first; their blobs stored), applying
/// those of its ancestors that are missing too; whether it exists after.
pub fn rebuild(
    snapshots: &Snapshotter,
    images: &ImageStore,
    layers: &[LayerRef],
    chain: &ChainId,
) -> bool {
    if snapshots.exists(chain) {
        return true;
    }
    if chain_of(layers.iter().map(|l| l.digest.as_str())).as_ref() != Some(chain) {
        return false;
    }
    let mut parent: Option<ChainId> = None;
    for l in layers {
        let next = ChainId::new(parent.as_ref(), &l.digest);
        if !snapshots.exists(&next) {
            let Ok(f) = std::fs::File::open(images.blob_path(&l.digest)) else {
                return false;
            };
            match snapshots.apply_layer(parent.as_ref(), &l.digest, std::io::BufReader::new(f)) {
                Ok((id, _)) if id == next => {}
                Ok(_) | Err(_) => return false,
            }
        }
        parent = Some(next);
    }
    snapshots.exists(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_list_what_they_name_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StepCache::open(dir.path()).unwrap();
        let chain = ChainId::new(None, "sha256:aa");
        let step = CachedStep {
            chain: Some(chain.clone()),
            layer: Some(LayerRef {
                digest: "sha256:bb".into(),
                diff_id: "sha256:cc".into(),
                size: 3,
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            }),
            layers: Vec::new(),
        };
        cache.put(&StepKey([1; 32]), &step).unwrap();
        std::fs::write(cache.dir.join(format!("{}.json", StepKey([2; 32]))), "{").unwrap();
        std::fs::write(cache.dir.join(".tmp-half"), "").unwrap();
        let mut got = cache.entries().unwrap();
        got.sort_by_key(|e| !e.readable);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].chain.as_ref(), Some(&chain));
        assert_eq!(got[0].layer_digest.as_deref(), Some("sha256:bb"));
        assert!(!got[1].readable && got[1].chain.is_none());
        assert_eq!(cache.temporaries().unwrap().len(), 1);
        cache.remove(&got[0]).unwrap();
        cache.remove(&got[0]).unwrap();
        assert_eq!(cache.entries().unwrap().len(), 1);
    }

    #[test]
    fn only_layers_that_make_the_chain_are_kept_for_rebuilding() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StepCache::open(dir.path()).unwrap();
        let l = |d: &str| LayerRef {
            digest: d.into(),
            diff_id: d.into(),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        };
        let a = ChainId::new(None, "sha256:aa");
        let ab = ChainId::new(Some(&a), "sha256:bb");
        let good = CachedStep {
            chain: Some(ab.clone()),
            layer: Some(l("sha256:bb")),
            layers: vec![l("sha256:aa"), l("sha256:bb")],
        };
        cache.put(&StepKey([7; 32]), &good).unwrap();
        assert_eq!(cache.entry(&StepKey([7; 32])).unwrap().layers.len(), 2);
        let wrong = CachedStep {
            layers: vec![l("sha256:bb"), l("sha256:aa")],
            ..good
        };
        cache.put(&StepKey([8; 32]), &wrong).unwrap();
        assert!(cache.entry(&StepKey([8; 32])).unwrap().layers.is_empty());
        // An imported entry never replaces this root's own.
        let mine = cache.entry(&StepKey([7; 32])).unwrap();
        let other = Entry {
            chain: None,
            ..mine.clone()
        };
        assert!(!cache.import(&StepKey([7; 32]), &other).unwrap());
        assert_eq!(cache.entry(&StepKey([7; 32])).unwrap(), mine);
        assert!(cache.import(&StepKey([9; 32]), &other).unwrap());
    }
}
