//! The build cache shared between roots: `--cache-to` writes the entries a build used
//! (its step keys → the snapshot chain and layers each made), with their layer blobs, as
//! one OCI artifact in a registry (`type=registry,ref=REF`) or an OCI layout directory
//! (`type=local,dest=DIR`); `--cache-from` reads it back into this root's cache before
//! the steps run, so a runner with an empty root gets `CACHED` for every unchanged step.
//!
//! The artifact is an OCI image manifest whose config (media type [`CONFIG_MEDIA_TYPE`])
//! is `{"kiln.cache": 1, "entries": [{"key": HEX, "entry": ENTRY}]}` and whose layers
//! are every layer blob an entry names. BuildKit's cache manifest (an index with its own
//! config of a graph of records) was the model; kiln's keys are flat, so a list of
//! entries says it all, and a plain image manifest is what every registry stores.
//! Each entry carries its chain's layers, bottom first, so a root that lacks the snapshot
//! rebuilds it from the blobs when a step needs it. From a registry, only the manifest
//! and the config are read at import; a layer is fetched when a step needs it
//! ([`super::remote`]), so a runner downloads only what its build uses. `mode=min` exports the entries
//! of the target stage and the stages it is built on; `mode=max` those of every stage the
//! build ran or took from the cache.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use super::entries::{Entry, EntryLayer};
use super::remote::RemoteBlobs;
use super::{StepCache, StepKey};
use crate::plan::Platform;
use crate::registry::{Registry, RegistryError, Transfer};
use crate::store::{descriptor, ImageStore, ImageStoreError};

/// The media type of a kiln build cache's config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.buildcache.config.v1+json";

/// Which entries an export carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// The target stage and the stages it is built on.
    #[default]
    Min,
    /// Every stage of the build.
    Max,
}

/// A `--cache-to` or `--cache-from` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    Registry {
        reference: String,
        mode: CacheMode,
        /// `ignore-error=true`: a failed export is a warning.
        ignore_error: bool,
    },
    Local {
        dir: PathBuf,
        tag: String,
        mode: CacheMode,
        ignore_error: bool,
    },
}

/// Why a `--cache-to`/`--cache-from` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheSpecError {
    #[error("{spec:?}: invalid field {field:?} (expected KEY=VALUE)")]
    BadField { spec: String, field: String },
    #[error("{spec:?}: unknown option {option:?}")]
    UnknownOption { spec: String, option: String },
    #[error("{spec:?}: cache type {kind:?} is not supported (registry, local)")]
    UnknownType { spec: String, kind: String },
    #[error("{spec:?}: {what}")]
    Missing { spec: String, what: &'static str },
    #[error("{spec:?}: {option} must be {expected}")]
    BadValue {
        spec: String,
        option: String,
        expected: &'static str,
    },
}

impl CacheSpec {
    /// Parses `--cache-to` (`to`) or `--cache-from` (`!to`), as buildx spells them; a
    /// bare `REF` is a registry reference.
    pub fn parse(spec: &str, to: bool) -> Result<CacheSpec, CacheSpecError> {
        if !spec.contains('=') {
            return Ok(CacheSpec::Registry {
                reference: spec.to_string(),
                mode: CacheMode::Min,
                ignore_error: false,
            });
        }
        let err_value = |option: &str, expected| CacheSpecError::BadValue {
            spec: spec.to_string(),
            option: option.to_string(),
            expected,
        };
        let mut fields = BTreeMap::new();
        for f in spec.split(',') {
            let (k, v) = f.split_once('=').ok_or_else(|| CacheSpecError::BadField {
                spec: spec.to_string(),
                field: f.to_string(),
            })?;
            fields.insert(k.trim().to_string(), v.to_string());
        }
        let kind = fields.remove("type").unwrap_or_else(|| "registry".into());
        let mode = match fields.remove("mode").as_deref() {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(_) => return Err(err_value("mode", "min or max")),
        };
        let boolean =
            |fields: &mut BTreeMap<String, String>, k: &str| match fields.remove(k).as_deref() {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(_) => Err(err_value(k, "true or false")),
            };
        let ignore_error = boolean(&mut fields, "ignore-error")?;
        // kiln always writes an OCI image manifest with OCI media types.
        for k in ["image-manifest", "oci-mediatypes"] {
            if fields.contains_key(k) && !boolean(&mut fields, k)? {
                return Err(err_value(k, "true (kiln writes OCI image manifests)"));
            }
        }
        let missing = |what| CacheSpecError::Missing {
            spec: spec.to_string(),
            what,
        };
        let out = match kind.as_str() {
            "registry" => CacheSpec::Registry {
                reference: fields
                    .remove("ref")
                    .ok_or_else(|| missing("needs ref=REF"))?,
                mode,
                ignore_error,
            },
            "local" => {
                let key = if to { "dest" } else { "src" };
                CacheSpec::Local {
                    dir: fields.remove(key).map(PathBuf::from).ok_or_else(|| {
                        missing(if to {
                            "needs dest=DIR"
                        } else {
                            "needs src=DIR"
                        })
                    })?,
                    tag: fields.remove("tag").unwrap_or_else(|| "latest".into()),
                    mode,
                    ignore_error,
                }
            }
            other => {
                return Err(CacheSpecError::UnknownType {
                    spec: spec.to_string(),
                    kind: other.to_string(),
                })
            }
        };
        match fields.keys().next() {
            Some(k) => Err(CacheSpecError::UnknownOption {
                spec: spec.to_string(),
                option: k.clone(),
            }),
            None => Ok(out),
        }
    }

    pub fn mode(&self) -> CacheMode {
        match self {
            CacheSpec::Registry { mode, .. } | CacheSpec::Local { mode, .. } => *mode,
        }
    }

    pub fn ignore_error(&self) -> bool {
        match self {
            CacheSpec::Registry { ignore_error, .. } | CacheSpec::Local { ignore_error, .. } => {
                *ignore_error
            }
        }
    }

    /// How progress names it.
    pub fn describe(&self) -> String {
        match self {
            CacheSpec::Registry { reference, .. } => reference.clone(),
            CacheSpec::Local { dir, tag, .. } => format!("{}:{tag}", dir.display()),
        }
    }
}

/// Why a cache export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheTransferError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] ImageStoreError),
    #[error(transparent)]
    Cache(#[from] super::CacheError),
    #[error("the cache's manifest is not valid: {0}")]
    Manifest(#[from] oci_spec::OciSpecError),
    #[error("the cache's config is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}: not a kiln build cache (its config is {1})")]
    NotACache(String, String),
    #[error("{0}: no cache tagged here")]
    NoTag(String),
}

#[derive(Serialize, Deserialize)]
struct CacheConfig {
    #[serde(rename = "kiln.cache")]
    version: u32,
    entries: Vec<KeyedEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyedEntry {
    key: String,
    entry: Entry,
}

/// Writes the entries of `keys` to `spec`: config and manifest into `images` (and for
/// `type=local` every blob into the layout), then the push for `type=registry`.
pub fn export<'r>(
    spec: &CacheSpec,
    keys: &[StepKey],
    cache: &StepCache,
    images: &ImageStore,
    remote: &RemoteBlobs,
    registry: impl Fn() -> Result<&'r Registry, RegistryError>,
    on_transfer: &mut dyn FnMut(Transfer),
) -> Result<usize, CacheTransferError> {
    let stored: Vec<_> = keys
        .iter()
        .filter_map(|k| cache.entry(k).map(|e| (k, e)))
        .collect();
    // Layers of hits from an imported cache that no step needed are fetched now: the
    // exported cache names every layer of its entries.
    let named: Vec<&str> = stored
        .iter()
        .flat_map(|(_, e)| e.layers.iter().chain(e.layer.as_ref()))
        .map(|l| l.digest.as_str())
        .collect();
    remote.fetch_missing(&named, images, &registry, on_transfer)?;
    let mut entries = Vec::new();
    let mut layers: BTreeMap<String, EntryLayer> = BTreeMap::new();
    for (k, e) in stored {
        for l in e.layers.iter().chain(e.layer.as_ref()) {
            if images.blob_path(&l.digest).is_file() {
                layers.entry(l.digest.clone()).or_insert_with(|| l.clone());
            }
        }
        entries.push(KeyedEntry {
            key: k.hex(),
            entry: e,
        });
    }
    let count = entries.len();
    let config = serde_json::to_vec(&CacheConfig {
        version: 1,
        entries,
    })?;
    let (store, _layout);
    match spec {
        CacheSpec::Local { dir, .. } => {
            std::fs::create_dir_all(dir).map_err(|source| ImageStoreError::Io {
                context: "creating",
                path: dir.clone(),
                source,
            })?;
            _layout = ImageStore::open(dir)?;
            for d in layers.keys() {
                _layout.copy_blob_from(images, d)?;
            }
            store = &_layout;
        }
        CacheSpec::Registry { .. } => store = images,
    }
    let config_digest = store.put_blob(&config)?;
    let descs = layers
        .values()
        .map(|l| descriptor(MediaType::from(l.media_type.as_str()), &l.digest, l.size))
        .collect::<Result<Vec<Descriptor>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::Other(CONFIG_MEDIA_TYPE.into()),
            &config_digest,
            config.len() as u64,
        )?)
        .layers(descs)
        .build()?;
    let json = manifest.to_string()?;
    let digest = store.put_blob(json.as_bytes())?;
    let desc = descriptor(MediaType::ImageManifest, &digest, json.len() as u64)?;
    match spec {
        CacheSpec::Local { tag, .. } => store.tag(tag, &desc)?,
        CacheSpec::Registry { reference, .. } => {
            registry()?.push(images, &desc, reference, on_transfer)?;
        }
    }
    Ok(count)
}

/// Reads the cache at `spec` into `cache` (entries this root has stay as they are) and
/// its blobs into `images`; how many entries were new.
pub fn import<'r>(
    spec: &CacheSpec,
    cache: &StepCache,
    images: &ImageStore,
    remote: &RemoteBlobs,
    registry: impl FnOnce() -> Result<&'r Registry, RegistryError>,
    on_transfer: &mut dyn FnMut(Transfer),
) -> Result<usize, CacheTransferError> {
    let manifest_bytes = match spec {
        // The manifest and the config only; each layer is fetched when a step needs it.
        CacheSpec::Registry { reference, .. } => {
            let registry = registry()?;
            let (bytes, _) = registry.fetch_manifest(reference, &Platform::host())?;
            let m = oci_spec::image::ImageManifest::from_reader(&bytes[..])?;
            let config = m.config();
            if !images.blob_path(config.digest().as_ref()).is_file() {
                registry.fetch_blob(
                    reference,
                    config.digest().as_ref(),
                    config.size(),
                    images,
                    on_transfer,
                )?;
            }
            for l in m.layers() {
                remote.add(reference, l.digest().as_ref(), l.size());
            }
            bytes
        }
        CacheSpec::Local { dir, tag, .. } => {
            let layout = ImageStore::open(dir)?;
            let desc = layout
                .resolve(tag)?
                .ok_or_else(|| CacheTransferError::NoTag(spec.describe()))?;
            let bytes = layout.read_blob(desc.digest().as_ref())?;
            let m = oci_spec::image::ImageManifest::from_reader(&bytes[..])?;
            for l in m.layers() {
                images.copy_verified_from(&layout, l.digest().as_ref())?;
            }
            images.copy_verified_from(&layout, m.config().digest().as_ref())?;
            bytes
        }
    };
    let m = oci_spec::image::ImageManifest::from_reader(&manifest_bytes[..])?;
    let media_type = m.config().media_type().to_string();
    if media_type != CONFIG_MEDIA_TYPE {
        return Err(CacheTransferError::NotACache(spec.describe(), media_type));
    }
    let config: CacheConfig =
        serde_json::from_slice(&images.read_blob(m.config().digest().as_ref())?)?;
    let mut added = 0;
    for e in config.entries {
        let Some(key) = StepKey::parse(&e.key) else {
            continue;
        };
        if cache.import(&key, &e.entry)? {
            added += 1;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_work_or_are_refused() {
        assert_eq!(
            CacheSpec::parse("type=registry,ref=r/c:1,mode=max", true).unwrap(),
            CacheSpec::Registry {
                reference: "r/c:1".into(),
                mode: CacheMode::Max,
                ignore_error: false
            }
        );
        assert_eq!(
            CacheSpec::parse("r/c:1", false).unwrap().describe(),
            "r/c:1"
        );
        assert!(matches!(
            CacheSpec::parse("type=local,dest=/d", true).unwrap(),
            CacheSpec::Local { .. }
        ));
        for bad in [
            "type=local,src=/d",
            "type=gha",
            "type=registry",
            "type=registry,ref=x,mode=all",
            "type=registry,ref=x,compression=zstd",
            "type=registry,ref=x,image-manifest=false",
            "type=registry,ref=x,ignore-error=maybe",
        ] {
            assert!(CacheSpec::parse(bad, true).is_err(), "{bad}");
        }
        assert!(CacheSpec::parse("type=local,src=/d", false).is_ok());
        assert!(CacheSpec::parse("type=local,dest=/d", false).is_err());
    }
}
