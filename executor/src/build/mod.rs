//! `build`: the one entry point an embedding program calls. It parses the Dockerfile,
//! plans the stages the target needs, runs each step on a copy-on-write snapshot, and
//! writes the image (config, manifest, layers) to the local store and the outputs asked.
//!
//! Every step is one snapshot: `prepare(parent) → mount → mutate → diff → commit`; a
//! step whose diff is empty makes no layer (its history entry says `empty_layer`).
//! Metadata instructions change only the config. Stages run one after another in
//! dependency order. The caller must already be inside the build's user and mount
//! namespace ([`crate::sandbox::userns::enter_build_namespace`]); progress and output
//! arrive as [`Event`]s; the library prints nothing.

mod base;
pub mod copy;
mod download;
mod export;
pub mod ignore;
pub mod pattern;
mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_snapshotter::backend::copy::CopyBackend;
use kiln_snapshotter::backend::fuse::FuseBackend;
use kiln_snapshotter::backend::overlay::OverlayBackend;
use kiln_snapshotter::backend::Backend;
use kiln_snapshotter::layer::LayerCompression;

use crate::dockerfile::DockerfileError;
use crate::mounts::SecretSource;
use crate::plan::{PlanError, Platform};
use crate::sandbox::userns::IdMapping;

pub use export::Output;

/// Which snapshotter backend mounts the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotterChoice {
    #[default]
    Auto,
    Overlay,
    Copy,
    Fuse,
}

/// A named context (`--build-context NAME=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (for COPY --from / bind mounts, or as a base filesystem).
    Dir(PathBuf),
    /// An OCI image layout and the tag (or only image) in it.
    OciLayout { path: PathBuf, tag: Option<String> },
    /// Another image reference, looked up in the local store.
    Image(String),
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The kiln root: image store, snapshots, caches.
    pub root: PathBuf,
    pub context: PathBuf,
    /// The Dockerfile's bytes and the name shown in errors.
    pub dockerfile: Vec<u8>,
    pub dockerfile_name: String,
    /// Where the Dockerfile is on disk, if it is (for `<Dockerfile>.dockerignore`).
    pub dockerfile_path: Option<PathBuf>,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// `--label`s, added to the target's config.
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub secrets: Vec<(String, SecretSource)>,
    /// ssh id → agent socket or key files.
    pub ssh: BTreeMap<String, crate::mounts::ssh::SshSource>,
    pub named_contexts: BTreeMap<String, NamedContext>,
    pub compression: LayerCompression,
    pub snapshotter: SnapshotterChoice,
    pub source_date_epoch: Option<u64>,
    /// How ids map in the namespace the build runs in.
    pub mapping: IdMapping,
    /// The program that acts as the sandbox's helper (the kiln binary).
    pub helper: PathBuf,
    pub outputs: Vec<Output>,
    /// `--allow security.insecure` (only honoured as real root).
    pub allow_insecure: bool,
    pub platform: Option<Platform>,
}

/// What happened, for the caller to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Something the user should know (shown once).
    Warning(String),
    /// A step starts: `id` numbers steps across the build.
    StepStarted {
        id: usize,
        stage: String,
        index: usize,
        total: usize,
        text: String,
    },
    /// Output of a running step.
    Output { id: usize, bytes: Vec<u8> },
    /// A step ended; `layer` is the digest of the layer it made, if any.
    StepDone {
        id: usize,
        layer: Option<String>,
        seconds: f64,
    },
    /// The image was written (`manifest` and `config` digests).
    ImageWritten {
        manifest: String,
        config: String,
        tags: Vec<String>,
    },
    /// An output was exported.
    Exported(String),
}

/// The finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub manifest_digest: String,
    pub config_digest: String,
}

/// A RUN that exited non-zero: where, what, how, and the end of what it printed.
#[derive(Debug)]
pub struct RunFailure {
    pub at: DockerfileError,
    pub command: String,
    pub exit_code: i32,
    pub output_tail: String,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nprocess {:?} did not complete successfully: exit code: {}{}",
            self.at,
            self.command,
            self.exit_code,
            tail_text(&self.output_tail)
        )
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Dockerfile(Box<DockerfileError>),
    #[error(transparent)]
    Plan(Box<PlanError>),
    /// A RUN exited non-zero.
    #[error("{0}")]
    RunFailed(Box<RunFailure>),
    /// A step failed for another reason (the message says why).
    #[error("{0}")]
    Step(Box<DockerfileError>),
    #[error("{context}: {message}")]
    Setup { context: String, message: String },
}

impl From<DockerfileError> for BuildError {
    fn from(e: DockerfileError) -> Self {
        BuildError::Dockerfile(Box::new(e))
    }
}

impl From<PlanError> for BuildError {
    fn from(e: PlanError) -> Self {
        BuildError::Plan(Box::new(e))
    }
}

fn tail_text(tail: &str) -> String {
    if tail.trim().is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = tail.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!("\nlast output:\n{}", lines[start..].join("\n"))
}

pub(crate) fn setup(context: impl Into<String>) -> impl FnOnce(String) -> BuildError {
    let context = context.into();
    move |message| BuildError::Setup { context, message }
}

/// The snapshots and config of an image of `images` (for `kiln run`).
pub(crate) fn import_for_run(
    snapshots: &kiln_snapshotter::store::Store,
    images: &crate::store::ImageStore,
    desc: &oci_spec::image::Descriptor,
) -> Result<base::StageState, String> {
    base::import_image(snapshots, images, images, desc)
}

/// Picks the backend for `choice`, probing in `scratch`.
pub fn backend_for(choice: SnapshotterChoice, scratch: &Path) -> Result<Arc<dyn Backend>, String> {
    let works = |b: &dyn Backend| {
        let probe = scratch.join(format!("probe-{}", b.name()));
        let ok = b.probe(&probe);
        let _ = std::fs::remove_dir_all(&probe);
        ok
    };
    match choice {
        SnapshotterChoice::Overlay => Ok(Arc::new(OverlayBackend)),
        SnapshotterChoice::Copy => Ok(Arc::new(CopyBackend)),
        SnapshotterChoice::Fuse => {
            works(&FuseBackend).map(|()| Arc::new(FuseBackend) as Arc<dyn Backend>)
        }
        SnapshotterChoice::Auto => {
            // Kernel overlayfs when the kernel allows it here (fastest), else kiln's FUSE
            // overlay, else plain copies.
            if works(&OverlayBackend).is_ok() {
                Ok(Arc::new(OverlayBackend))
            } else if works(&FuseBackend).is_ok() {
                Ok(Arc::new(FuseBackend))
            } else {
                Ok(Arc::new(CopyBackend))
            }
        }
    }
}

/// Runs a build, sending its progress on `events` (for a caller that renders it on
/// another thread).
pub fn build_with_channel(
    opts: &BuildOptions,
    events: &crossbeam_channel::Sender<Event>,
) -> Result<BuildResult, BuildError> {
    build(opts, &mut |e| {
        let _ = events.send(e);
    })
}

/// Runs a build. `on_event` receives progress, in order.
pub fn build(
    opts: &BuildOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<BuildResult, BuildError> {
    let doc = crate::dockerfile::parser::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut plan_opts = crate::plan::PlanOptions {
        target: opts.target.clone(),
        build_args: opts.build_args.clone(),
        ..Default::default()
    };
    if let Some(p) = &opts.platform {
        let host = Platform::host();
        if p.os != host.os || p.architecture != host.architecture {
            return Err(BuildError::Setup {
                context: format!("--platform {p}"),
                message: format!("building for another platform than this machine's ({host}) is not supported yet"),
            });
        }
        plan_opts.target_platform = Some(p.clone());
    }
    let graph = crate::plan::plan(&doc, &plan_opts)?;
    if matches!(opts.mapping, IdMapping::Entered { single: true }) {
        on_event(Event::Warning(
            "kiln runs with the single id mapping (no subordinate ids for this user in /etc/subuid and /etc/subgid): \
             only root exists inside RUN steps, so chown to other ids and USER other than root fail"
                .into(),
        ));
    }
    let mut session = stage::Session::open(opts, &doc, on_event)?;
    let result = session.run(&graph, on_event)?;
    Ok(result)
}
