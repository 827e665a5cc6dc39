//! `-o type=oci,dest=…`: an OCI image layout, as a directory or a tar file.

use std::path::Path;

use super::ImageWritten;
use crate::error::SetupError;
use crate::step::StepContext;

pub(super) fn export(
    cx: &StepContext<'_>,
    image: &ImageWritten,
    dest: &Path,
    tar: bool,
    names: &[String],
) -> Result<(), SetupError> {
    let tag = names.first().map(String::as_str);
    if tar {
        cx.images.write_layout_tar(dest, &image.manifest, tag)?;
    } else {
        cx.images.write_layout(dest, &image.manifest, tag)?;
    }
    Ok(())
}
