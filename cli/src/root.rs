//! Where kiln keeps its data, and getting into the build's namespace.

use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_executor::sandbox::userns;

/// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`; `/var/lib/kiln` for real root
/// without XDG_DATA_HOME. (`--root`/`$KILN_ROOT` win over all.)
pub fn default_root() -> PathBuf {
    if kiln_snapshotter::idmap::is_real_root() && std::env::var_os("XDG_DATA_HOME").is_none() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("kiln");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/kiln")
}

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
