//! `compression=`/`force-compression=` of an image output: the image's layers that are
//! not in the asked compression (every layer, when forced) are decompressed and written
//! again by the snapshotter's layer writer; the uncompressed content, and so each diff
//! id and the config's rootfs, stays the same. The new blobs and a manifest for them go
//! to the local store; the image the build tagged keeps its own layers.

use std::io::BufReader;

use super::{image, ImageOutput, ImageWritten};
use crate::error::SetupError;
use crate::image::state::{LayerRef, StageState};
use crate::step::StepContext;

/// The image this output writes: `written` itself, or a recompressed copy.
pub(super) fn for_output(
    cx: &StepContext<'_>,
    written: &ImageWritten,
    target: &StageState,
    output: &ImageOutput,
) -> Result<ImageWritten, SetupError> {
    let Some(want) = output.compression else {
        return Ok(written.clone());
    };
    let media_type = want.media_type();
    if !output.force_compression && target.layers.iter().all(|l| l.media_type == media_type) {
        return Ok(written.clone());
    }
    let mut copy = target.clone();
    for l in copy.layers.iter_mut() {
        if !output.force_compression && l.media_type == media_type {
            continue;
        }
        let blob = std::fs::File::open(cx.images.blob_path(&l.digest))?;
        let mut tar = kiln_snapshotter::apply::decompressed(BufReader::new(blob))?;
        let mut w = kiln_snapshotter::layer::LayerWriter::new(&cx.images.blob_dir(), want)?;
        std::io::copy(&mut tar, &mut w)?;
        let layer = w.finish()?;
        if layer.diff_id != l.diff_id {
            return Err(SetupError::Recompressed {
                digest: l.digest.clone(),
                before: l.diff_id.clone(),
                after: layer.diff_id,
            });
        }
        *l = LayerRef {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            media_type: layer.media_type.to_string(),
        };
    }
    image::write(cx, &copy)
}
