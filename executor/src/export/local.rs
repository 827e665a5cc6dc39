//! `-o type=local,dest=DIR` (or a bare path): the target stage's filesystem, copied out.

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
    std::fs::create_dir_all(dest)?;
    crate::snapshots::copy_tree(view.root(), dest)?;
    Ok(())
}
