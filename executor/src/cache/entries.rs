//! Cache entries on disk: `<root>/cache/steps/<key>.json`, each naming the committed
//! snapshot and the layer a step made. Entries are written to a temporary file and
//! renamed into place, so a reader sees a whole entry or none; an entry whose snapshot or
//! blob is gone (removed by hand, a crash before commit) is a miss, never an error.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::StepKey;
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
}

/// What a cached step made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedStep {
    /// The snapshot chain after the step (`None`: still empty).
    pub chain: Option<ChainId>,
    /// The layer it added, if any.
    pub layer: Option<LayerRef>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    chain: Option<String>,
    layer: Option<EntryLayer>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EntryLayer {
    digest: String,
    diff_id: String,
    size: u64,
    media_type: String,
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
        Ok(StepCache { dir })
    }

    fn path(&self, key: &StepKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The step's result, if it was cached and everything it names still exists.
    pub fn get(
        &self,
        key: &StepKey,
        snapshots: &Snapshotter,
        images: &ImageStore,
    ) -> Option<CachedStep> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let e: Entry = serde_json::from_slice(&bytes).ok()?;
        let chain = match e.chain {
            Some(c) => {
                let id = ChainId::parse(&c)?;
                if !snapshots.exists(&id) {
                    return None;
                }
                Some(id)
            }
            None => None,
        };
        let layer = match e.layer {
            Some(l) => {
                if !images.blob_path(&l.digest).is_file() {
                    return None;
                }
                Some(LayerRef {
                    digest: l.digest,
                    diff_id: l.diff_id,
                    size: l.size,
                    media_type: l.media_type,
                })
            }
            None => None,
        };
        Some(CachedStep { chain, layer })
    }

    /// Records what the step with `key` made.
    pub fn put(&self, key: &StepKey, step: &CachedStep) -> Result<(), CacheError> {
        let entry = Entry {
            chain: step.chain.as_ref().map(|c| c.as_str().to_string()),
            layer: step.layer.as_ref().map(|l| EntryLayer {
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            }),
        };
        let json = serde_json::to_vec(&entry)?;
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
