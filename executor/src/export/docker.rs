//! `-o type=docker,dest=…`: a tar `docker load` (and `podman load`) reads.

use std::path::Path;

use super::ImageWritten;
use crate::error::SetupError;
use crate::step::StepContext;

pub(super) fn export(
    cx: &StepContext<'_>,
    image: &ImageWritten,
    dest: &Path,
    names: &[String],
) -> Result<(), SetupError> {
    cx.images
        .write_docker_archive(dest, &image.manifest, names)?;
    Ok(())
}
