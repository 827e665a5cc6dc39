//! Mounting and serving: the lowers, upper and work directory of a [`Request`] mounted at
//! its mount point, requests served until it is unmounted. As root, or as root of a
//! user namespace, through `mount(2)`; as a plain user outside one, through
//! `fusermount3`.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_snapshotter::backend::fuse::{mount_direct, mount_with_fusermount, OverlaySpec};

use crate::options::Request;

/// Why the mount could not be made or served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating a scratch upper directory: {0}")]
    Scratch(#[source] std::io::Error),
    #[error("mounting {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

fn canonical(p: &Path) -> Result<PathBuf, ServeError> {
    std::fs::canonicalize(p).map_err(|source| ServeError::Path {
        path: p.to_path_buf(),
        source,
    })
}

/// Mounts `req` and serves it until unmounted. `ready` hears `ok` once the mount is
/// live, or the error; without it, errors are only returned.
pub fn serve(req: &Request, mut ready: Option<std::fs::File>) -> Result<(), ServeError> {
    let mounted = mount(req);
    if let Some(f) = ready.as_mut() {
        let line = match &mounted {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string().replace('\n', " "),
        };
        let _ = writeln!(f, "{line}");
    }
    drop(ready);
    let (session, _scratch) = mounted?;
    session.run().map_err(ServeError::Serve)
}

/// The mount, and the scratch directory of a read-only mount's unused upper.
fn mount(
    req: &Request,
) -> Result<
    (
        kiln_snapshotter::backend::fuse::OverlaySession,
        Option<tempfile::TempDir>,
    ),
    ServeError,
> {
    let lowers = req
        .lowers
        .iter()
        .map(|l| canonical(l))
        .collect::<Result<Vec<_>, _>>()?;
    let (upper, work, scratch) = match (&req.upper, &req.work) {
        (Some(u), Some(w)) => (canonical(u)?, canonical(w)?, None),
        _ => {
            let t = tempfile::tempdir().map_err(ServeError::Scratch)?;
            let (u, w) = (t.path().join("upper"), t.path().join("work"));
            std::fs::create_dir_all(&u).map_err(ServeError::Scratch)?;
            std::fs::create_dir_all(&w).map_err(ServeError::Scratch)?;
            (u, w, Some(t))
        }
    };
    // Foreign stacks (fuse-overlayfs', other tools' unpacked layers) may hold AUFS-style
    // whiteouts.
    let spec = OverlaySpec {
        lowers,
        upper,
        work,
        aufs_whiteouts: true,
    };
    let target = canonical(&req.mountpoint)?;
    let session = if rustix::process::geteuid().is_root() {
        mount_direct(&spec, &target, &req.flags)
    } else {
        mount_with_fusermount(&spec, &target, &req.flags)
    }
    .map_err(|source| ServeError::Mount {
        target: target.clone(),
        source,
    })?;
    tracing::debug!(target = %target.display(), "kiln-overlay mounted");
    Ok((session, scratch))
}
