//! Base images: what `FROM`, `COPY --from` and `RUN --mount from=` name when it is not a
//! stage — a named context (`--build-context`: a directory, an OCI layout, another
//! reference) or an image of the local store — turned into snapshots, layer by layer,
//! with their blobs copied into kiln's store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::state::{LayerRef, StageState};
use super::{ImageConfig, RunConfig};
use crate::options::NamedContext;
use crate::plan::scope::DEFAULT_PATH;
use crate::plan::Platform;
use crate::snapshots::{CommitOptions, Snapshotter, SnapshotterError};
use crate::store::{normalize_reference, ImageStore, ImageStoreError};

/// Why a base image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{reference}: the image is not in the local store ({})", root.display())]
    NotInStore { reference: String, root: PathBuf },
    #[error("{}: no image {} in this OCI layout", path.display(), tag.as_deref().unwrap_or("(give a tag: oci-layout://PATH:TAG)"))]
    NotInLayout { path: PathBuf, tag: Option<String> },
    #[error("{}: {tag} is {found}, not {digest}", path.display())]
    DigestMismatch {
        path: PathBuf,
        tag: String,
        digest: String,
        found: String,
    },
    #[error("{}: {digest} is neither an image manifest nor an index", path.display())]
    NotAnImage { path: PathBuf, digest: String },
    #[error("{}: the index {digest} has no manifest for {platform}", path.display())]
    NoPlatform {
        path: PathBuf,
        digest: String,
        platform: String,
    },
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    #[error(transparent)]
    Snapshotter(#[from] SnapshotterError),
    #[error("copying layer {digest}: {source}")]
    CopyBlob {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("applying layer {digest}: {source}")]
    Apply {
        digest: String,
        #[source]
        source: Box<SnapshotterError>,
    },
    #[error("reading layer {digest}: {source}")]
    ReadBlob {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: Box<SnapshotterError>,
    },
}

/// Resolves base image references for one build.
pub struct BaseImages<'a> {
    pub snapshots: &'a Snapshotter,
    pub images: &'a ImageStore,
    pub named: &'a BTreeMap<String, NamedContext>,
    pub root: &'a Path,
    pub platform: Platform,
    pub commit: CommitOptions,
}

impl BaseImages<'_> {
    /// The config a stage starts with when its base gives none (scratch, a directory).
    pub fn platform_config(&self) -> ImageConfig {
        let p = self.platform.clone();
        ImageConfig {
            architecture: p.architecture,
            os: p.os,
            variant: p.variant,
            config: RunConfig {
                env: vec![format!("PATH={DEFAULT_PATH}")],
                working_dir: "/".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// An image reference: a named context, or the local store.
    pub fn resolve(&self, reference: &str) -> Result<StageState, ResolveError> {
        let wanted = normalize_reference(reference);
        let named = self
            .named
            .iter()
            .find(|(k, _)| k.as_str() == reference || normalize_reference(k) == wanted)
            .map(|(_, v)| v.clone());
        match named {
            Some(NamedContext::Dir(dir)) => self.dir_as_base(&dir),
            Some(NamedContext::OciLayout { path, tag, digest }) => {
                let layout = ImageStore::open(&path)?;
                let index = layout.index()?;
                let tagged = match &tag {
                    Some(t) => layout.resolve(t)?,
                    None if index.manifests().len() == 1 && digest.is_none() => {
                        index.manifests().first().cloned()
                    }
                    None => None,
                };
                let desc = match (&digest, tagged) {
                    (Some(d), Some(t)) if t.digest().to_string() != *d => {
                        return Err(ResolveError::DigestMismatch {
                            path,
                            tag: tag.unwrap_or_default(),
                            digest: d.clone(),
                            found: t.digest().to_string(),
                        })
                    }
                    (Some(d), _) => self.by_digest(&layout, &path, d)?,
                    (None, Some(t)) => t,
                    (None, None) => return Err(ResolveError::NotInLayout { path, tag }),
                };
                import_image(self.snapshots, self.images, &layout, &desc)
            }
            Some(NamedContext::Image(r)) => self.resolve(&r),
            None => {
                let desc =
                    self.images
                        .resolve(reference)?
                        .ok_or_else(|| ResolveError::NotInStore {
                            reference: reference.to_string(),
                            root: self.root.to_path_buf(),
                        })?;
                import_image(self.snapshots, self.images, self.images, &desc)
            }
        }
    }

    /// The manifest of `digest` in `layout`: the manifest itself, or this platform's
    /// manifest when it is an index.
    fn by_digest(
        &self,
        layout: &ImageStore,
        path: &Path,
        digest: &str,
    ) -> Result<Descriptor, ResolveError> {
        use oci_spec::image::{ImageIndex, MediaType};
        let bytes = layout.read_blob(digest)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| ResolveError::NotAnImage {
                path: path.to_path_buf(),
                digest: digest.to_string(),
            })?;
        if value.get("manifests").is_none() {
            return Ok(crate::store::descriptor(
                MediaType::ImageManifest,
                digest,
                bytes.len() as u64,
            )?);
        }
        let index = ImageIndex::from_reader(&bytes[..]).map_err(|_| ResolveError::NotAnImage {
            path: path.to_path_buf(),
            digest: digest.to_string(),
        })?;
        let want = &self.platform;
        let manifests = index.manifests();
        manifests
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == want.os
                        && p.architecture().to_string() == want.architecture
                })
            })
            .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))
            .cloned()
            .ok_or_else(|| ResolveError::NoPlatform {
                path: path.to_path_buf(),
                digest: digest.to_string(),
                platform: want.to_string(),
            })
    }

    /// The registry reference `reference` stands for, when it is not a local named
    /// context (a directory or OCI layout): itself, or what a `docker-image://` context
    /// names.
    pub fn registry_source(&self, reference: &str) -> Option<String> {
        let mut r = reference.to_string();
        // Named contexts may name each other; a cycle ends the walk.
        for _ in 0..=self.named.len() {
            let wanted = normalize_reference(&r);
            let named = self
                .named
                .iter()
                .find(|(k, _)| k.as_str() == r || normalize_reference(k) == wanted)
                .map(|(_, v)| v.clone());
            match named {
                None => return Some(r),
                Some(NamedContext::Image(next)) if next != r => r = next,
                Some(_) => return None,
            }
        }
        None
    }

    /// A directory as a one-layer base filesystem.
    fn dir_as_base(&self, dir: &Path) -> Result<StageState, ResolveError> {
        let mut st = StageState {
            config: self.platform_config(),
            ..Default::default()
        };
        let committed = self
            .snapshots
            .import_dir(None, dir, &self.commit)
            .map_err(|e| ResolveError::Dir {
                dir: dir.to_path_buf(),
                source: Box::new(e),
            })?;
        if let Some(c) = committed {
            st.push_layer(c);
        }
        Ok(st)
    }
}

/// Makes snapshots of `desc`'s layers (copying its blobs from `from` into `images`).
pub fn import_image(
    snapshots: &Snapshotter,
    images: &ImageStore,
    from: &ImageStore,
    desc: &Descriptor,
) -> Result<StageState, ResolveError> {
    let img = from.load(desc)?;
    let mut st = StageState {
        config: img.config.clone(),
        ..Default::default()
    };
    for (i, l) in img.manifest.layers().iter().enumerate() {
        let digest = l.digest().to_string();
        let dst = images.blob_path(&digest);
        if from.blob_path(&digest) != dst {
            // A layout kiln did not write: its blobs must match their digests.
            images.copy_verified_from(from, &digest)?;
        }
        let diff_id = img
            .config
            .rootfs
            .diff_ids
            .get(i)
            .cloned()
            .unwrap_or_default();
        let f = std::fs::File::open(&dst).map_err(|source| ResolveError::ReadBlob {
            digest: digest.clone(),
            source,
        })?;
        let (id, stats) = snapshots
            .apply_layer(st.chain.as_ref(), &digest, std::io::BufReader::new(f))
            .map_err(|e| ResolveError::Apply {
                digest: digest.clone(),
                source: Box::new(e),
            })?;
        st.chain = Some(id);
        st.warnings.extend(
            stats
                .warnings
                .into_iter()
                .map(|w| format!("base image layer {}: {w}", short_digest(&digest))),
        );
        st.layers.push(LayerRef {
            digest,
            diff_id,
            size: l.size(),
            media_type: l.media_type().to_string(),
        });
    }
    Ok(st)
}

/// A digest's first 12 hex digits (how warnings name a layer).
fn short_digest(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex)
}
