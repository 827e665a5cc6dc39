//! `kiln run IMAGE [CMD…]`: a command in an image of the local store, through the same
//! sandbox as RUN (the debug-stage pattern: `kiln build --target debug -t app:debug . &&
//! kiln run app:debug sh`). The image's Entrypoint, Cmd, Env, WorkingDir and User apply;
//! whatever the command writes is thrown away with its snapshot.

use std::path::PathBuf;

use kiln_snapshotter::store::Store;

use crate::build::{backend_for, SnapshotterChoice};
use crate::sandbox::run::{run, RunSpec};
use crate::sandbox::userns::IdMapping;
use crate::store::ImageStore;

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
    pub snapshotter: SnapshotterChoice,
    pub mapping: IdMapping,
    pub helper: PathBuf,
}

/// Why an image could not be run (not: the command's exit code).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct RunImageError {
    pub context: String,
    pub message: String,
}

fn fail(context: impl Into<String>) -> impl FnOnce(String) -> RunImageError {
    let context = context.into();
    move |message| RunImageError { context, message }
}

/// Runs the command; returns its exit code. `on_output` gets its output unless
/// `interactive`.
pub fn run_image(
    opts: &RunImageOptions,
    on_output: &mut dyn FnMut(&[u8]),
) -> Result<i32, RunImageError> {
    let images =
        ImageStore::open(&opts.root).map_err(|e| fail("opening the image store")(e.to_string()))?;
    let snapshots =
        Store::open(&opts.root).map_err(|e| fail("opening the snapshot store")(e.to_string()))?;
    let desc = images
        .resolve(&opts.image)
        .map_err(|e| fail(opts.image.clone())(e.to_string()))?
        .ok_or_else(|| {
            fail(opts.image.clone())("no such image in the local store (see kiln images)".into())
        })?;
    let st = crate::build::import_for_run(&snapshots, &images, &desc)
        .map_err(fail(opts.image.clone()))?;
    let scratch = tempfile::tempdir().map_err(|e| fail("scratch directory")(e.to_string()))?;
    let backend =
        backend_for(opts.snapshotter, scratch.path()).map_err(fail("choosing a snapshotter"))?;
    let active = snapshots
        .prepare(st.chain.as_ref())
        .map_err(|e| fail("preparing the container's filesystem")(e.to_string()))?;
    let guard = active
        .mount(backend.as_ref())
        .map_err(|e| fail("mounting the container's filesystem")(e.to_string()))?;
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
        return Err(fail(opts.image.clone())(
            "the image has no Cmd or Entrypoint: give a command".into(),
        ));
    }
    let mut env = c.env.clone();
    env.extend(opts.env.iter().cloned());
    let spec = RunSpec {
        rootfs: guard.root().to_path_buf(),
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
    };
    let outcome =
        run(&spec, &opts.helper, |b| on_output(b)).map_err(|e| fail("running")(e.to_string()))?;
    drop(guard);
    drop(active);
    Ok(outcome.exit_code)
}
