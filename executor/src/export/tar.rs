//! `-o type=tar,dest=FILE`: the target stage's filesystem as one tar file.

use std::path::Path;

use crate::error::SetupError;
use crate::image::state::StageState;
use crate::step::StepContext;

pub(super) fn export(
    cx: &StepContext<'_>,
    target: &StageState,
    dest: &Path,
) -> Result<(), SetupError> {
    cx.materialize(target)?;
    let view = cx.snapshots.view(target.chain.as_ref())?;
    crate::store::archive::tar_dir(view.root(), dest)?;
    Ok(())
}
