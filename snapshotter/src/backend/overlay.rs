//! The kernel overlayfs backend. It must run inside the build's mount namespace (and user
//! namespace when kiln is not real root, where `userxattr` makes overlayfs keep its
//! bookkeeping in `user.overlay.*` xattrs, which is also what [`crate::format`] reads).
//! `index=off` and no `redirect_dir`: renamed directories are copied up whole, so the upper
//! directory always diffs into a plain OCI layer.
//!
//! Unprivileged (`userxattr`), overlayfs has no inode index: a lower file hard-linked in a
//! step shows its lower inode number under one name and the upper one under the other.
//! The upper directory, and so the layer, still holds one inode with two names.
//!
//! The legacy mount call takes at most one page of options: when the lower list is too
//! long, the bottom lowers are flattened into one directory first (a copy, once).

use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use super::{Backend, BackendError, BackendKind, MountGuard, ProbeError};
use crate::diff::{write_upper_diff, DiffError, DiffOptions, DiffStats};

/// Options longer than this are flattened (the kernel's limit is one 4 KiB page).
const MAX_OPTIONS: usize = 3800;

/// Kernel overlayfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct OverlayBackend;

struct OverlayMount {
    root: PathBuf,
    upper: PathBuf,
    lowers: Vec<PathBuf>,
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.root, UnmountFlags::DETACH) {
            tracing::warn!(target = %self.root.display(), "unmounting overlay: {e}");
        }
    }
}

impl MountGuard for OverlayMount {
    fn root(&self) -> &Path {
        &self.root
    }
    fn write_diff(&self, opts: &DiffOptions, out: &mut dyn Write) -> Result<DiffStats, DiffError> {
        write_upper_diff(&self.upper, &self.lowers, opts, out)
    }
}

fn options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let escape = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace(':', "\\:")
            .replace(',', "\\,")
    };
    let lower = lowers
        .iter()
        .map(|p| escape(p))
        .collect::<Vec<_>>()
        .join(":");
    let mut o = format!(
        "lowerdir={lower},upperdir={},workdir={},index=off",
        escape(upper),
        escape(work)
    );
    if !crate::idmap::is_real_root() {
        o.push_str(",userxattr");
    }
    o
}

impl Backend for OverlayBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Overlay
    }

    fn works_here(&self, scratch: &Path) -> Result<(), ProbeError> {
        let dirs = ["l", "u", "w", "m"].map(|d| scratch.join(d));
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(ProbeError::setup(d))?;
        }
        let [l, u, w, m] = dirs;
        let guard = self
            .mount(&[l], &u, &w, &m)
            .map_err(|source| ProbeError::Mount {
                hint: "it needs a mount namespace, unprivileged Linux 5.11+, and kiln's root on a filesystem overlayfs takes as upper directory (not an overlay, as a container's root is)",
                source,
            })?;
        drop(guard);
        Ok(())
    }

    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Box<dyn MountGuard>, BackendError> {
        let err = |context: String, source: std::io::Error| BackendError::Io {
            backend: "overlay",
            context,
            source,
        };
        let mut lowers = lowers.to_vec();
        if lowers.is_empty() {
            // overlayfs needs a lower; an empty one stands for "nothing below".
            let empty = work.join("empty-lower");
            std::fs::create_dir_all(&empty)
                .map_err(|e| err(format!("creating {}", empty.display()), e))?;
            lowers.push(empty);
        }
        let mut flat = 0;
        while options(&lowers, upper, work).len() > MAX_OPTIONS && lowers.len() > 1 {
            let keep = lowers.len() / 2;
            let dir = work.join(format!("flattened-{flat}"));
            flat += 1;
            super::copy::materialize(&lowers[keep..], &dir)
                .map_err(|e| err(format!("flattening lower layers into {}", dir.display()), e))?;
            lowers.truncate(keep);
            lowers.push(dir);
        }
        let work_dir = work.join("overlay-work");
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| err(format!("creating {}", work_dir.display()), e))?;
        let opts = options(&lowers, upper, &work_dir);
        let data = std::ffi::CString::new(opts.clone())
            .map_err(|e| err("mount options".into(), std::io::Error::other(e)))?;
        mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| {
            err(
                format!("mount -t overlay -o {opts} {}", target.display()),
                e.into(),
            )
        })?;
        Ok(Box::new(OverlayMount {
            root: target.to_path_buf(),
            upper: upper.to_path_buf(),
            lowers,
        }))
    }
}
