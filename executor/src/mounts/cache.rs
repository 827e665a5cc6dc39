//! `RUN --mount=type=cache`: directories that outlive builds, under
//! `<kiln root>/cache/mounts/<sha256 of the id>/`, created on first use with the mount's
//! owner and mode (default `0:0`, 0755) or seeded from `from=`/`source=`.
//!
//! Sharing, as BuildKit: `shared` lets concurrent steps use one directory; `locked` gives
//! a step the directory alone (others wait); `private` gives a busy directory's next user
//! a directory of its own (`<hash>.1`, `.2`, …). Locks are `flock`s held for the step.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use sha2::{Digest, Sha256};

use super::{io_err, MountError};
use crate::dockerfile::instructions::CacheSharing;

/// Owner and mode of a new cache directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A cache directory in use; the lock is released when dropped.
pub struct CacheDir {
    path: PathBuf,
    _lock: File,
}

impl CacheDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes cache `id` for one step.
    pub fn acquire(
        root: &Path,
        id: &str,
        sharing: CacheSharing,
        owner: Ownership,
        seed: Option<&Path>,
    ) -> Result<CacheDir, MountError> {
        fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        let hash = format!("{:x}", Sha256::digest(id.as_bytes()));
        let name = &hash[..32];
        let open_lock = |path: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(io_err(format!("opening {}", path.display())))
        };
        let (dir, lock) = match sharing {
            CacheSharing::Shared | CacheSharing::Locked => {
                let lock = open_lock(&root.join(format!("{name}.lock")))?;
                let op = if sharing == CacheSharing::Locked {
                    FlockOperation::LockExclusive
                } else {
                    FlockOperation::LockShared
                };
                flock(lock.as_fd(), op).map_err(|e| io_err("locking a cache mount")(e.into()))?;
                (root.join(name), lock)
            }
            CacheSharing::Private => {
                let mut n = 0u32;
                loop {
                    let suffix = if n == 0 {
                        String::new()
                    } else {
                        format!(".{n}")
                    };
                    let lock = open_lock(&root.join(format!("{name}{suffix}.lock")))?;
                    if flock(lock.as_fd(), FlockOperation::NonBlockingLockExclusive).is_ok() {
                        // A shared user of the same id holds the main lock shared: wait for
                        // nothing, use another instance.
                        break (root.join(format!("{name}{suffix}")), lock);
                    }
                    n += 1;
                }
            }
        };
        if !dir.exists() {
            let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            match seed {
                Some(src) => {
                    crate::snapshots::copy_tree(src, &tmp).map_err(|source| MountError::Seed {
                        id: id.to_string(),
                        source,
                    })?
                }
                None => {
                    fs::create_dir(&tmp).map_err(io_err(format!("creating cache {id:?}")))?;
                    rustix::fs::chown(
                        &tmp,
                        Some(rustix::fs::Uid::from_raw(owner.uid)),
                        Some(rustix::fs::Gid::from_raw(owner.gid)),
                    )
                    .map_err(|e| {
                        io_err(format!(
                            "giving cache {id:?} to {}:{}",
                            owner.uid, owner.gid
                        ))(e.into())
                    })?;
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(owner.mode))
                        .map_err(io_err(format!("setting the mode of cache {id:?}")))?;
                }
            }
            fs::write(root.join(format!("{name}.id")), id)
                .map_err(io_err(format!("naming cache {id:?}")))?;
            if let Err(e) = fs::rename(&tmp, &dir) {
                // Another process made it first: use theirs.
                let _ = fs::remove_dir_all(&tmp);
                if !dir.exists() {
                    return Err(io_err(format!("creating cache {id:?}"))(e));
                }
            }
        }
        Ok(CacheDir {
            path: dir,
            _lock: lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Ownership {
        Ownership {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            mode: 0o750,
        }
    }

    #[test]
    fn same_id_same_directory_and_mode_on_creation() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let a = CacheDir::acquire(root.path(), "/go", CacheSharing::Shared, me(), None).unwrap();
        fs::write(a.path().join("f"), b"1").unwrap();
        let b = CacheDir::acquire(root.path(), "/go", CacheSharing::Shared, me(), None).unwrap();
        assert_eq!(a.path(), b.path());
        assert_eq!(
            fs::metadata(a.path()).unwrap().permissions().mode() & 0o777,
            0o750
        );
    }

    #[test]
    fn private_gives_a_busy_cache_a_second_directory() {
        let root = tempfile::tempdir().unwrap();
        let a = CacheDir::acquire(root.path(), "x", CacheSharing::Private, me(), None).unwrap();
        let b = CacheDir::acquire(root.path(), "x", CacheSharing::Private, me(), None).unwrap();
        assert_ne!(a.path(), b.path());
        drop(b);
        let c = CacheDir::acquire(root.path(), "x", CacheSharing::Private, me(), None).unwrap();
        assert_ne!(a.path(), c.path());
    }

    #[test]
    fn locked_waits_for_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let a = CacheDir::acquire(root.path(), "l", CacheSharing::Locked, me(), None).unwrap();
        let r = root.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _b = CacheDir::acquire(&r, "l", CacheSharing::Locked, me(), None).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(a);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
