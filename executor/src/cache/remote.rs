//! Layer blobs an imported registry cache names but this root does not have yet: where
//! each one is (the cache's reference, its size). `--cache-from type=registry` reads only
//! the cache's manifest and config; a blob is fetched when a step needs it — the layer of
//! a hit that goes into the image, or a snapshot that must exist because a later step
//! runs on it or an output reads it. What no step of this build needs is never
//! downloaded (the stages `--target` leaves out, other builds' entries, a builder
//! stage's toolchain layers when every step after it is cached).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::registry::{Registry, RegistryError, Transfer};
use crate::store::ImageStore;

/// One blob's source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    reference: String,
    size: u64,
}

/// The blobs known to be fetchable, by digest.
#[derive(Debug, Default)]
pub struct RemoteBlobs {
    blobs: Mutex<HashMap<String, Source>>,
}

impl RemoteBlobs {
    /// Records that `digest` (`size` bytes) can be fetched from `reference`'s repository.
    pub fn add(&self, reference: &str, digest: &str, size: u64) {
        self.lock().entry(digest.to_string()).or_insert(Source {
            reference: reference.to_string(),
            size,
        });
    }

    /// Whether `digest` is in `images` or can be fetched.
    pub fn available(&self, images: &ImageStore, digest: &str) -> bool {
        images.blob_path(digest).is_file() || self.lock().contains_key(digest)
    }

    /// Fetches each of `digests` that `images` lacks from where it is known to be; how
    /// many were fetched. A digest neither stored nor known is left to the caller (its
    /// use fails as a missing blob would).
    pub fn fetch_missing<'r>(
        &self,
        digests: &[&str],
        images: &ImageStore,
        registry: impl FnOnce() -> Result<&'r Registry, RegistryError>,
        on_transfer: &mut dyn FnMut(Transfer),
    ) -> Result<usize, RegistryError> {
        let wanted: Vec<(String, Source)> = {
            let blobs = self.lock();
            digests
                .iter()
                .filter(|d| !images.blob_path(d).is_file())
                .filter_map(|d| blobs.get(*d).map(|s| (d.to_string(), s.clone())))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(0);
        }
        let registry = registry()?;
        for (digest, source) in &wanted {
            tracing::info!(%digest, reference = %source.reference, "fetching a cached layer");
            registry.fetch_blob(&source.reference, digest, source.size, images, on_transfer)?;
        }
        Ok(wanted.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Source>> {
        self.blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_blobs_are_available_and_the_first_source_stays() {
        let dir = tempfile::tempdir().unwrap();
        let images = ImageStore::open(dir.path()).unwrap();
        let stored = images.put_blob(b"here").unwrap();
        let remote = RemoteBlobs::default();
        assert!(remote.available(&images, &stored));
        assert!(!remote.available(&images, "sha256:ab"));
        remote.add("r/one:1", "sha256:ab", 3);
        remote.add("r/two:1", "sha256:ab", 3);
        assert!(remote.available(&images, "sha256:ab"));
        assert_eq!(remote.lock()["sha256:ab"].reference, "r/one:1");
        // Nothing missing: no registry is asked for.
        let n = remote
            .fetch_missing(
                &[&stored],
                &images,
                || Err(RegistryError::Worker),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(n, 0);
        // A known blob missing here: the registry is asked (and its error returned).
        assert!(remote
            .fetch_missing(
                &["sha256:ab"],
                &images,
                || Err(RegistryError::Worker),
                &mut |_| {}
            )
            .is_err());
    }
}
