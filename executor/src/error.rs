//! Why a build failed: [`BuildError`] gathers the typed errors of every module, with the
//! Dockerfile span where one applies, so an embedder can match on the kind of failure
//! (snapshot store, sandbox, mount, layer, image store…) and the CLI can show a code frame.

use crate::dockerfile::DockerfileError;
use crate::image::resolve::ResolveError;
use crate::mounts::MountError;
use crate::plan::PlanError;
use crate::sandbox::run::SandboxError;
use crate::snapshots::SnapshotterError;
use crate::step::copy::download::DownloadError;
use crate::step::copy::tree::CopyError;
use crate::store::ImageStoreError;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong (parse or instruction error), before anything ran.
    #[error("{0}")]
    Dockerfile(Box<DockerfileError>),
    /// The plan could not be made (unknown target, cycles, …).
    #[error(transparent)]
    Plan(Box<PlanError>),
    /// A RUN exited non-zero.
    #[error("{0}")]
    RunFailed(Box<RunFailure>),
    /// A step failed for another reason: where, and the typed cause.
    #[error("{}", .0.at)]
    Step(Box<StepFailure>),
    /// `# check=error=true` and a build check found something (BuildKit's words).
    #[error("lint violation found for rules: {}", .0.join(", "))]
    Lint(Vec<String>),
    /// The build was cancelled (Ctrl-C, SIGTERM, or the embedding program).
    #[error("the build was cancelled")]
    Cancelled,
    /// Something the build needs before its first step could not be set up.
    #[error("{context}: {source}")]
    Setup {
        context: String,
        #[source]
        source: SetupError,
    },
}

impl BuildError {
    /// The typed cause of a failed step, if this is one.
    pub fn step_error(&self) -> Option<&StepError> {
        match self {
            BuildError::Step(f) => Some(&f.source),
            _ => None,
        }
    }

    pub(crate) fn setup(context: impl Into<String>, source: impl Into<SetupError>) -> Self {
        BuildError::Setup {
            context: context.into(),
            source: source.into(),
        }
    }
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

/// What failed while setting a build up (before its first step) or finishing it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Snapshotter(#[from] SnapshotterError),
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Ignore(#[from] crate::context::ignore::IgnoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Oci(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Layer(#[from] kiln_snapshotter::layer::LayerError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    CacheTransfer(#[from] crate::cache::transfer::CacheTransferError),
    /// A recompressed layer did not hold the same content (never expected).
    #[error("recompressing {digest}: the content changed ({before} became {after})")]
    Recompressed {
        digest: String,
        before: String,
        after: String,
    },
    /// The build asks for something kiln does not do (the message says what).
    #[error("{0}")]
    Unsupported(String),
    /// A stage worker stopped without a result.
    #[error("a stage's worker panicked")]
    WorkerPanicked,
    #[error("the target stage was not built")]
    TargetNotBuilt,
}

/// A step that failed: the Dockerfile position (its message is the cause's text) and the
/// typed cause.
#[derive(Debug)]
pub struct StepFailure {
    pub at: DockerfileError,
    pub source: StepError,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Snapshotter(#[from] SnapshotterError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Image(#[from] ResolveError),
    #[error(transparent)]
    ImageStore(#[from] ImageStoreError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `USER`/`--chown` names that the stage's /etc does not know.
    #[error("user {user:?}: {reason}")]
    Owner { user: String, reason: String },
    /// The instruction is refused as written (the message says why, in BuildKit's words).
    #[error("{0}")]
    Refused(String),
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

/// The last 20 lines of a failed step's output, under a heading.
fn tail_text(tail: &str) -> String {
    if tail.trim().is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = tail.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!("\nlast output:\n{}", lines[start..].join("\n"))
}
