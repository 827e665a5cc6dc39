//! `kiln run IMAGE [CMD…]`: a command in an image of the local store, through the same
//! sandbox as RUN (the debug-stage pattern: `kiln build --target debug -t app:debug . &&
//! kiln run app:debug sh`). The image's Entrypoint, Cmd, Env, WorkingDir and User apply;
//! whatever the command writes is thrown away with its snapshot.

use std::path::PathBuf;

use crate::image::resolve::{import_image, ResolveError};
use crate::sandbox::run::{run, RunSpec, SandboxError};
use crate::sandbox::userns::IdMapping;
use crate::snapshots::{BackendChoice, Snapshotter, SnapshotterError};
use crate::store::{ImageStore, ImageStoreError};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunImageOptions {
    pub root: PathBuf,
    pub image: String,
    /// Replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint when given (empty: none).
    pub entrypoint: Option<Vec<String>>,
    /// Extra `KEY=VALUE` variables.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub isolated_network: bool,
    /// Pass kiln's stdin/stdout/stderr through.
    pub interactive: bool,
    pub snapshotter: BackendChoice,
    pub mapping: IdMapping,
    pub helper: PathBuf,
}

/// Why an image could not be run (not: the command's exit code).
#[derive(Debug, thiserror::Error)]
pub enum RunImageError {
    #[error("{0}: no such image in the local store (see kiln images)")]
    NoSuchImage(String),
    #[error("{0}: the image has no Cmd or Entrypoint: give a command")]
    NoCommand(String),
    #[error("{image}: {source}")]
    Image {
        image: String,
        #[source]
        source: ResolveError,
    },
    #[error("{context}: {source}")]
    ImageStore {
        context: String,
        #[source]
        source: ImageStoreError,
    },
    #[error("{context}: {source}")]
    Snapshotter {
        context: &'static str,
        #[source]
        source: SnapshotterError,
    },
    #[error("running: {0}")]
    Sandbox(#[source] SandboxError),
}

/// Runs the command; returns its exit code. `on_output` gets its output unless
/// `interactive`.
pub fn run_image(
    opts: &RunImageOptions,
    on_output: &mut dyn FnMut(&[u8]),
) -> Result<i32, RunImageError> {
    let images = ImageStore::open(&opts.root).map_err(|source| RunImageError::ImageStore {
        context: "opening the image store".into(),
        source,
    })?;
    let desc = images
        .resolve(&opts.image)
        .map_err(|source| RunImageError::ImageStore {
            context: opts.image.clone(),
            source,
        })?
        .ok_or_else(|| RunImageError::NoSuchImage(opts.image.clone()))?;
    let snapshots = Snapshotter::open(&opts.root, opts.snapshotter).map_err(|source| {
        RunImageError::Snapshotter {
            context: "opening the snapshot store",
            source,
        }
    })?;
    let st = import_image(&snapshots, &images, &images, &desc).map_err(|source| {
        RunImageError::Image {
            image: opts.image.clone(),
            source,
        }
    })?;
    let active =
        snapshots
            .prepare(st.chain.as_ref())
            .map_err(|source| RunImageError::Snapshotter {
                context: "preparing the container's filesystem",
                source,
            })?;
    let c = &st.config.config;
    let mut argv = opts
        .entrypoint
        .clone()
        .unwrap_or_else(|| c.entrypoint.clone().unwrap_or_default());
    if opts.command.is_empty() {
        if opts.entrypoint.is_none() {
            argv.extend(c.cmd.clone().unwrap_or_default());
        }
    } else {
        argv.extend(opts.command.iter().cloned());
    }
    if argv.is_empty() {
        return Err(RunImageError::NoCommand(opts.image.clone()));
    }
    let mut env = c.env.clone();
    env.extend(opts.env.iter().cloned());
    let spec = RunSpec {
        rootfs: active.root().to_path_buf(),
        argv,
        env,
        cwd: opts.workdir.clone().unwrap_or_else(|| {
            if c.working_dir.is_empty() {
                "/".into()
            } else {
                c.working_dir.clone()
            }
        }),
        hostname: "kiln".into(),
        isolated_network: opts.isolated_network,
        user: opts
            .user
            .clone()
            .or_else(|| Some(c.user.clone()).filter(|u| !u.is_empty())),
        mapping: opts.mapping.clone(),
        mounts: Vec::new(),
        interactive: opts.interactive,
        secret_env: Vec::new(),
        etc_dir: PathBuf::new(),
        extra_hosts: Vec::new(),
        privileged: false,
    };
    let outcome =
        run(&spec, &opts.helper, None, |b| on_output(b)).map_err(RunImageError::Sandbox)?;
    drop(active);
    Ok(outcome.exit_code)
}
