//! What a RUN mounts, resolved from its `--mount` flags ([`RunMount`]) into the sandbox's
//! [`MountSpec`]s, with BuildKit's defaults:
//! - [`secret`]: `--secret` values kept on a tmpfs private to the build; a missing secret
//!   is an error only with `required=true`; `env=` exposes it as a variable instead of (or
//!   besides) a file;
//! - [`ssh`]: an agent socket proxied into the step, owned and moded as asked, with
//!   `SSH_AUTH_SOCK` pointing at the first one;
//! - [`cache`]: persistent directories under the kiln root, shared, private or locked;
//! - `tmpfs`, and `bind` from the context or a stage (read-only; `rw` writes are thrown
//!   away).
//!
//! Each resolved mount may hold a resource for the length of the step (a cache lock, an
//! ssh proxy); [`PreparedMounts`] keeps them until it is dropped.

pub mod cache;
pub mod key_agent;
pub mod key_file;
pub mod redact;
pub mod secret;
pub mod ssh;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::dockerfile::instructions::{CacheSharing, MountKind, RunMount};
use crate::sandbox::mounts::{MountSource, MountSpec};

pub use secret::{SecretSource, SecretSpecError, SecretStore};
pub use ssh::SshSpecError;

/// Why a RUN mount could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A cache mount could not be seeded from its `from`/`source`.
    #[error("seeding cache {id:?}: {source}")]
    Seed {
        id: String,
        #[source]
        source: kiln_snapshotter::SnapshotterError,
    },
    #[error("secret {id}: not found (pass --secret id={id},src=FILE or id={id},env=VAR)")]
    MissingSecret { id: String },
    #[error("ssh agent {id:?} is required but was not given (pass --ssh {id}[=SOCKET])")]
    MissingSsh { id: String },
    #[error("invalid mount target {0:?}")]
    BadTarget(String),
    #[error("mount source {path:?} of {target}: {why}")]
    BadSource {
        path: String,
        target: String,
        why: String,
    },
    /// A bind or cache source that does not resolve beneath its root.
    #[error("mount source {path:?} of {target}: {source}")]
    Unresolvable {
        path: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// `--secret id=ID,env=VAR` with `VAR` unset.
    #[error("secret {id:?}: environment variable {var} is not set")]
    SecretEnvUnset { id: String, var: String },
    /// An `--ssh` key file that is not a private key kiln can read.
    #[error("failed to parse ssh key {}: {source}", path.display())]
    NotAKey {
        path: PathBuf,
        #[source]
        source: Box<key_file::KeyFileError>,
    },
    /// An `--ssh` key file that is encrypted.
    #[error("ssh key {}: the key is encrypted: load it into ssh-agent and pass the agent's socket (--ssh ID=$SSH_AUTH_SOCK)", path.display())]
    EncryptedKey { path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MountError {
    let context = context.into();
    move |source| MountError::Io { context, source }
}

/// Where the step's mounts come from.
pub struct MountInputs<'a> {
    pub secrets: &'a SecretStore,
    /// ssh ids → agent sockets (`--ssh`).
    pub ssh: &'a BTreeMap<String, PathBuf>,
    /// Where cache mounts persist.
    pub cache_root: &'a Path,
    /// The build context directory (`bind` without `from`).
    pub context_dir: &'a Path,
    /// The root directory of `from=` (a stage's filesystem, kept mounted by the caller).
    pub from_dir: &'a dyn Fn(&str) -> Result<PathBuf, MountError>,
    /// Private scratch space on a tmpfs (ssh proxy sockets).
    pub scratch: &'a Path,
    /// The stage's working directory (relative targets are relative to it).
    pub workdir: &'a str,
}

/// The step's mounts, and what must stay alive while it runs.
#[derive(Default)]
pub struct PreparedMounts {
    pub specs: Vec<MountSpec>,
    /// Variables the step gets (`SSH_AUTH_SOCK`).
    pub env: Vec<(String, String)>,
    /// Secret variables: name → file the value is read from inside the sandbox.
    pub secret_env: Vec<(String, PathBuf)>,
    _holds: Vec<Box<dyn Send>>,
}

/// `target` made absolute against `workdir`, cleaned.
fn absolute_target(target: &str, workdir: &str) -> Result<String, MountError> {
    let joined = if target.starts_with('/') {
        PathBuf::from(target)
    } else {
        Path::new("/").join(workdir).join(target)
    };
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return Err(MountError::BadTarget(target.to_string()));
    }
    let mut out = String::new();
    for p in parts {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(p.as_bytes()));
    }
    Ok(out)
}

/// `base/source`, resolved beneath `base` (symlinks inside resolve as if `base` were
/// `/`), so a stage's symlink can never point a bind mount at the host.
pub fn resolve_beneath(base: &Path, source: &str) -> std::io::Result<PathBuf> {
    let rel = source.trim_start_matches('/');
    if rel.is_empty() || rel == "." {
        return Ok(base.to_path_buf());
    }
    let root = kiln_snapshotter::Root::open(base).map_err(std::io::Error::other)?;
    let path = root
        .resolve(Path::new(rel))
        .map_err(std::io::Error::other)?;
    // The path must exist (the root's resolve keeps missing trailing components).
    std::fs::symlink_metadata(&path)?;
    Ok(path)
}

/// The cache directories a step mounts, each taken once, in the order of their ids
/// whatever the order of the mounts: two steps that mount the same `locked` caches the
/// other way round (nested targets, say) never wait for each other for ever, and an id
/// mounted twice is one lease (a second `flock` of it would wait for the first).
fn cache_leases(
    mounts: &[RunMount],
    inputs: &MountInputs<'_>,
) -> Result<BTreeMap<String, cache::CacheDir>, MountError> {
    let mut wanted: BTreeMap<String, &RunMount> = BTreeMap::new();
    for m in mounts.iter().filter(|m| m.kind == MountKind::Cache) {
        let target = absolute_target(m.target.as_deref().unwrap_or(""), inputs.workdir)?;
        let id = m.id.clone().unwrap_or(target);
        wanted.entry(id).or_insert(m);
    }
    let mut leases = BTreeMap::new();
    for (id, m) in wanted {
        let seed = match &m.from {
            Some(f) => Some(
                resolve_beneath(&(inputs.from_dir)(f)?, m.source.as_deref().unwrap_or("/"))
                    .map_err(|source| MountError::Unresolvable {
                        path: m.source.clone().unwrap_or_default(),
                        target: m.target.clone().unwrap_or_default(),
                        source,
                    })?,
            ),
            None => None,
        };
        let lease = cache::CacheDir::acquire(
            inputs.cache_root,
            &id,
            m.sharing.unwrap_or(CacheSharing::Shared),
            cache::Ownership {
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                mode: m.mode.unwrap_or(0o755),
            },
            seed.as_deref(),
        )?;
        leases.insert(id, lease);
    }
    Ok(leases)
}

/// Resolves `mounts` for one step.
pub fn prepare(
    mounts: &[RunMount],
    inputs: &MountInputs<'_>,
) -> Result<PreparedMounts, MountError> {
    let mut out = PreparedMounts::default();
    let mut ssh_index = 0usize;
    let leases = cache_leases(mounts, inputs)?;
    for m in mounts {
        match m.kind {
            MountKind::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| m.source.clone())
                        .or_else(|| {
                            m.target
                                .as_deref()
                                .map(|t| t.rsplit('/').next().unwrap_or(t).to_string())
                        })
                        .unwrap_or_default();
                let Some(file) = inputs.secrets.file(&id) else {
                    if m.required {
                        return Err(MountError::MissingSecret { id });
                    }
                    continue;
                };
                if let Some(var) = &m.env {
                    out.secret_env.push((var.clone(), file.clone()));
                }
                let target = match (&m.target, &m.env) {
                    (Some(t), _) => Some(absolute_target(t, inputs.workdir)?),
                    (None, None) => Some(format!(
                        "/run/secrets/{}",
                        id.rsplit('/').next().unwrap_or(&id)
                    )),
                    (None, Some(_)) => None,
                };
                if let Some(target) = target {
                    out.specs.push(MountSpec {
                        target,
                        source: MountSource::Secret {
                            source: file,
                            mode: m.mode.unwrap_or(0o400),
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                        },
                    });
                }
            }
            MountKind::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let Some(agent) = inputs.ssh.get(&id) else {
                    if m.required {
                        return Err(MountError::MissingSsh { id });
                    }
                    continue;
                };
                let target = match &m.target {
                    Some(t) => absolute_target(t, inputs.workdir)?,
                    None => format!("/run/buildkit/ssh_agent.{ssh_index}"),
                };
                let proxy = ssh::AgentProxy::start(
                    agent,
                    &inputs
                        .scratch
                        .join(format!("ssh-{}-{ssh_index}.sock", std::process::id())),
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                    m.mode.unwrap_or(0o600),
                )?;
                if ssh_index == 0 {
                    out.env.push(("SSH_AUTH_SOCK".into(), target.clone()));
                }
                ssh_index += 1;
                out.specs.push(MountSpec {
                    target,
                    source: MountSource::Bind {
                        source: proxy.socket().to_path_buf(),
                        readonly: false,
                        discard_writes: false,
                    },
                });
                out._holds.push(Box::new(proxy));
            }
            MountKind::Tmpfs => {
                let target = absolute_target(m.target.as_deref().unwrap_or(""), inputs.workdir)?;
                out.specs.push(MountSpec {
                    target,
                    source: MountSource::Tmpfs { size: m.size },
                });
            }
            MountKind::Bind => {
                let target = absolute_target(m.target.as_deref().unwrap_or(""), inputs.workdir)?;
                let base = match &m.from {
                    Some(f) => (inputs.from_dir)(f)?,
                    None => inputs.context_dir.to_path_buf(),
                };
                let src = m.source.as_deref().unwrap_or("/");
                let source =
                    resolve_beneath(&base, src).map_err(|source| MountError::Unresolvable {
                        path: src.to_string(),
                        target: target.clone(),
                        source,
                    })?;
                out.specs.push(MountSpec {
                    target,
                    source: MountSource::Bind {
                        source,
                        readonly: m.read_only,
                        discard_writes: !m.read_only,
                    },
                });
            }
            MountKind::Cache => {
                let target = absolute_target(m.target.as_deref().unwrap_or(""), inputs.workdir)?;
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let Some(lease) = leases.get(&id) else {
                    continue;
                };
                let source = match (&m.from, &m.source) {
                    (None, Some(sub)) => {
                        let p = lease.path().join(sub.trim_start_matches('/'));
                        std::fs::create_dir_all(&p)
                            .map_err(io_err(format!("creating {}", p.display())))?;
                        resolve_beneath(lease.path(), sub).map_err(io_err("cache source"))?
                    }
                    _ => lease.path().to_path_buf(),
                };
                out.specs.push(MountSpec {
                    target,
                    source: MountSource::Bind {
                        source,
                        readonly: m.read_only,
                        discard_writes: false,
                    },
                });
            }
        }
    }
    for lease in leases.into_values() {
        out._holds.push(Box::new(lease));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_and_clean() {
        assert_eq!(absolute_target("cache", "/app").unwrap(), "/app/cache");
        assert_eq!(absolute_target("/a/../b/", "/").unwrap(), "/b");
        assert!(absolute_target("/", "/").is_err());
        assert!(absolute_target("..", "/").is_err());
    }

    #[test]
    fn sources_never_leave_their_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(resolve_beneath(&base, "sub").unwrap(), base.join("sub"));
        // `/etc` resolves inside the base, where it does not exist.
        assert!(resolve_beneath(&base, "escape").is_err());
        assert!(resolve_beneath(&base, "../..").unwrap().starts_with(&base));
    }
}

/// The library errors of the frontend, plan, sandbox, mounts and store can all be
/// wrapped (`#[from]`) into a build error: `Error + Send + Sync + 'static`.
#[cfg(test)]
mod error_bounds {
    fn wrappable<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn every_error_is_send_sync_static() {
        use crate::dockerfile::instructions as ins;
        wrappable::<crate::dockerfile::DockerfileError>();
        wrappable::<crate::dockerfile::parser::ParseError>();
        wrappable::<crate::dockerfile::shell::ShellError>();
        wrappable::<ins::ArgumentsError>();
        wrappable::<ins::CsvError>();
        wrappable::<ins::DeviceSpecError>();
        wrappable::<ins::DurationError>();
        wrappable::<ins::InstructionExpandError>();
        wrappable::<ins::MountSpecError>();
        wrappable::<crate::plan::PlanError>();
        wrappable::<crate::plan::PlatformError>();
        wrappable::<crate::sandbox::run::SandboxError>();
        wrappable::<crate::sandbox::SetupError>();
        wrappable::<crate::sandbox::UserError>();
        wrappable::<crate::sandbox::userns::MapHelperError>();
        wrappable::<super::MountError>();
        wrappable::<super::SecretSpecError>();
        wrappable::<super::SshSpecError>();
        wrappable::<crate::store::ImageStoreError>();
        wrappable::<crate::context::pattern::PatternError>();
        wrappable::<crate::context::ignore::IgnoreError>();
    }
}
