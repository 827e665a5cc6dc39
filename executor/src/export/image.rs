//! The image itself: config and manifest blobs in the local store.

use oci_spec::image::{Descriptor, MediaType};

use crate::error::SetupError;
use crate::image::state::StageState;
use crate::step::StepContext;
use crate::store::descriptor;

/// The written image.
#[derive(Debug, Clone)]
pub struct ImageWritten {
    pub manifest: Descriptor,
    pub manifest_digest: String,
    pub config_digest: String,
}

pub(super) fn write(cx: &StepContext<'_>, target: &StageState) -> Result<ImageWritten, SetupError> {
    // Layers of cached steps an imported cache names: the image needs their blobs here.
    cx.fetch_layers(&target.layers)?;
    let mut config = target.config.clone();
    config.created = Some(cx.created().to_string());
    config.rootfs.diff_ids = target.layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_json = serde_json::to_vec(&config)?;
    let mut layers = Vec::new();
    for l in &target.layers {
        layers.push(descriptor(media_type(&l.media_type), &l.digest, l.size)?);
    }
    let (manifest, config_digest) = cx.images.put_image(&config_json, layers)?;
    let manifest_digest = manifest.digest().to_string();
    Ok(ImageWritten {
        manifest,
        manifest_digest,
        config_digest,
    })
}

fn media_type(s: &str) -> MediaType {
    use kiln_snapshotter::layer::{MEDIA_TYPE_GZIP, MEDIA_TYPE_TAR, MEDIA_TYPE_ZSTD};
    match s {
        MEDIA_TYPE_ZSTD => MediaType::ImageLayerZstd,
        MEDIA_TYPE_GZIP => MediaType::ImageLayerGzip,
        MEDIA_TYPE_TAR => MediaType::ImageLayer,
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        other => MediaType::Other(other.to_string()),
    }
}
