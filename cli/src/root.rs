//! Getting into the build's namespace (kiln's root is `kiln_executor::default_root`).

use anyhow::{Context, Result};
use kiln_executor::sandbox::userns;

/// Where this process is relative to the build's user and mount namespace.
pub enum Namespace {
    /// Inside, with this mapping for the steps.
    Inside(userns::IdMapping),
    /// Was outside: the command ran inside a child, which exited with this code.
    Exited(i32),
}

/// Inside the namespace already, or runs this command again inside it.
pub fn namespace() -> Result<Namespace> {
    match userns::build_namespace() {
        Some(m) => Ok(Namespace::Inside(m)),
        None => {
            let mapping = userns::IdMapping::detect();
            let code = userns::enter_build_namespace(&mapping)
                .context("entering the build's user namespace")?;
            Ok(Namespace::Exited(code))
        }
    }
}
