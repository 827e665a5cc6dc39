//! RUN mounts inside the sandbox, set up by pid 1 before `pivot_root`:
//! - `Tmpfs`: a fresh tmpfs (optionally size-limited): gone after the step;
//! - `Bind`: a host directory or file (the build context, another stage's root, a cache
//!   directory), read-only, writable, or writable with the writes thrown away;
//! - `Secret`: the secret's bytes are copied onto pid 1's own `/dev` tmpfs (memory, never
//!   a disk) with the requested mode and owner, bind-mounted at the target, and the
//!   staging name is unlinked, so the only way to the bytes is the target, for the length
//!   of the step.
//!
//! Mount points that do not exist in the root are created for the step and removed by
//! [`super::run::run`] afterwards ([`missing_components`]), so no trace of a mount — not
//! even an empty `/run/secrets` — stays in the root filesystem, and so in a layer.

use std::ffi::CString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use rustix::mount::{mount, mount_bind, mount_remount, MountFlags};

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountSource {
    Tmpfs {
        size: Option<u64>,
    },
    /// `discard_writes` (with `readonly: false`): writes land on a throw-away layer, as
    /// BuildKit's `type=bind,rw`; without it writes reach `source` (cache directories).
    Bind {
        source: PathBuf,
        readonly: bool,
        #[serde(default)]
        discard_writes: bool,
    },
    /// `source` is a host file holding the secret (kiln keeps it in memory-backed storage).
    Secret {
        source: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// One mount of a step: what, and where inside the root (an absolute path).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    pub target: String,
    pub source: MountSource,
}

/// `target` made relative to the root, with `.` dropped; `None` if it has `..`.
fn relative(target: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return None,
            _ => {}
        }
    }
    Some(out)
}

/// The paths from `root` down to `target` that do not exist yet, outermost first.
pub fn missing_components(root: &Path, target: &str) -> Vec<PathBuf> {
    let Some(rel) = relative(target) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        if fs::symlink_metadata(&p).is_err() {
            out.push(p.clone());
        }
    }
    out
}

use super::setup_error::{sys_doing as errno, SetupError};

/// Creates the mount point `root/target` (a directory, or a file when `file`), refusing
/// a target that leaves the root or passes through a symlink.
fn mount_point(root: &Path, target: &str, file: bool) -> Result<PathBuf, SetupError> {
    let rel = relative(target).ok_or_else(|| SetupError::TargetLeavesRoot(target.to_string()))?;
    let mut p = root.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(SetupError::TargetThroughSymlink(target.to_string()))
            }
            Ok(_) => {}
            Err(_) if i + 1 == n && file => fs::write(&p, b"")?,
            Err(_) => fs::create_dir(&p)?,
        }
    }
    Ok(p)
}

/// Mounts `m` (the `index`-th mount of the step) into `root`; `dev` is pid 1's `/dev`
/// tmpfs inside the root, used to stage secrets.
pub(super) fn mount_into(
    root: &Path,
    dev: &Path,
    index: usize,
    m: &MountSpec,
) -> Result<(), SetupError> {
    match &m.source {
        MountSource::Tmpfs { size } => {
            let at = mount_point(root, &m.target, false)?;
            let opts = match size {
                Some(s) => format!("mode=1777,size={s}"),
                None => "mode=1777".to_string(),
            };
            let data = CString::new(opts)?;
            mount(
                "tmpfs",
                &at,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                data.as_c_str(),
            )
            .map_err(errno(format!("mounting a tmpfs at {}", m.target)))
        }
        MountSource::Bind {
            source,
            readonly,
            discard_writes,
        } => {
            let at = mount_point(root, &m.target, !source.is_dir())?;
            if *discard_writes && !*readonly && source.is_dir() {
                // Writable, but the writes go to an upper on pid 1's /dev tmpfs and vanish
                // with the step (BuildKit's `rw` bind mounts).
                let stage = dev.join(format!(".kiln-rw-{index}"));
                let (upper, work) = (stage.join("upper"), stage.join("work"));
                fs::create_dir_all(&upper)?;
                fs::create_dir_all(&work)?;
                let mut opts = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    source.display(),
                    upper.display(),
                    work.display()
                );
                if !crate::sandbox::userns::is_real_root() {
                    opts.push_str(",userxattr");
                }
                let data = CString::new(opts)?;
                mount(
                    "overlay",
                    &at,
                    "overlay",
                    MountFlags::empty(),
                    data.as_c_str(),
                )
                .map_err(errno(format!(
                    "mounting a throw-away layer over {} at {}",
                    source.display(),
                    m.target
                )))?;
                return Ok(());
            }
            mount_bind(source, &at).map_err(errno(format!(
                "binding {} at {}",
                source.display(),
                m.target
            )))?;
            if *readonly {
                mount_remount(&at, MountFlags::BIND | MountFlags::RDONLY, "")
                    .map_err(errno(format!("making {} read-only", m.target)))?;
            }
            Ok(())
        }
        MountSource::Secret {
            source,
            mode,
            uid,
            gid,
        } => {
            let staged = dev.join(format!(".kiln-secret-{index}"));
            fs::copy(source, &staged)?;
            rustix::fs::chownat(
                rustix::fs::CWD,
                &staged,
                Some(rustix::fs::Uid::from_raw(*uid)),
                Some(rustix::fs::Gid::from_raw(*gid)),
                rustix::fs::AtFlags::empty(),
            )
            .map_err(errno(format!("setting the owner of secret {}", m.target)))?;
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&staged, fs::Permissions::from_mode(*mode))?;
            }
            let at = mount_point(root, &m.target, true)?;
            mount_bind(&staged, &at).map_err(errno(format!("mounting secret at {}", m.target)))?;
            let _ = mount_remount(&at, MountFlags::BIND | MountFlags::RDONLY, "");
            Ok(fs::remove_file(&staged)?)
        }
    }
}
