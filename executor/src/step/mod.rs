//! Step runners: each step of the graph on its stage's snapshot chain.
//!
//! - [`meta`]: config-only instructions (ENV, LABEL, ARG, CMD, …) and WORKDIR;
//! - [`copy`]: COPY and ADD;
//! - [`run`]: RUN, through the sandbox, with its mounts.
//!
//! A filesystem step is `prepare(parent) → mutate → commit`; a step whose diff is empty
//! makes no layer (its history entry says `empty_layer`). [`StepContext`] holds what the
//! steps of one build share: the snapshotter, the image store, secrets, ssh agents, the
//! context's `.dockerignore`, and the finished stages.

mod bases;
pub mod copy;
mod keys;
mod meta;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::cache::{CacheError, CachedStep, ContextDigests, RemoteBlobs, StepCache, StepKey};
use crate::cancel::CancelToken;
use crate::context::ignore::IgnoreRules;
use crate::dockerfile::instructions::ShellOrExec;
use crate::dockerfile::{Position, Source};
use crate::error::{BuildError, StepError, StepFailure};
use crate::event::Event;
use crate::graph::{StageNode, StepGraph, StepInput, StepOp};
use crate::image::history::{self};
use crate::image::state::{LayerRef, StageState};
use crate::image::History;
use crate::mounts::key_agent::KeyAgent;
use crate::mounts::ssh::SshSource;
use crate::mounts::SecretStore;
use crate::options::{BuildOptions, NamedContext};
use crate::plan::scope::DEFAULT_PATH;
use crate::plan::Base;
use crate::registry::Registry;
use crate::snapshots::{CommitOptions, DiffOptions, Snapshotter, View};
use crate::store::ImageStore;

/// What the steps of one build share.
pub struct StepContext<'a> {
    pub(crate) opts: &'a BuildOptions,
    pub(crate) snapshots: Snapshotter,
    pub(crate) images: ImageStore,
    scratch: PathBuf,
    secrets: SecretStore,
    created: String,
    step_id: AtomicUsize,
    results: Mutex<BTreeMap<usize, StageState>>,
    bases: Mutex<BTreeMap<String, StageState>>,
    source: Arc<Source>,
    /// ssh id → the agent socket steps are forwarded to.
    ssh: BTreeMap<String, PathBuf>,
    _agents: Vec<KeyAgent>,
    ignore: Arc<IgnoreRules>,
    cache: StepCache,
    /// Layers an imported registry cache names, fetched when a step needs them.
    remote: RemoteBlobs,
    digests: ContextDigests,
    cancel: CancelToken,
    /// Stages whose steps must not come from the cache (`--no-cache-filter`).
    no_cache_stages: BTreeSet<usize>,
    /// The registry client, made when a pull or push first needs it.
    registry: OnceLock<Registry>,
    /// The cache keys this build hit or wrote, with their stage (for `--cache-to`).
    used_keys: Mutex<Vec<(StepKey, usize)>>,
    /// Last: dropped after everything that keeps files in it.
    _scratch: Scratch,
}

/// A private tmpfs for the build's secrets and sockets; plain directory when the mount
/// is refused (outside a mount namespace).
fn scratch_dir() -> Result<(PathBuf, bool), BuildError> {
    sweep_scratch_dirs();
    let base = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)
        .map_err(|e| BuildError::setup("creating the build's scratch directory", e))?;
    let ok = rustix::mount::mount(
        "tmpfs",
        &base,
        "tmpfs",
        rustix::mount::MountFlags::NODEV,
        c"mode=0700",
    )
    .is_ok();
    Ok((base, ok))
}

/// The name of a build's scratch directory in the temporary directory, before its pid.
const SCRATCH_PREFIX: &str = "kiln-build-";

/// Removes the scratch directories of builds whose process has ended (a kill leaves
/// one; its tmpfs went with the build's mount namespace). A live build's is kept: from
/// here its tmpfs is not seen, and removing the directory would detach it.
fn sweep_scratch_dirs() {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::snapshots::process_running(pid) && pid != std::process::id() {
            tracing::debug!(path = %e.path().display(), "removing a dead build's scratch directory");
            let _ = crate::snapshots::remove_tree(&e.path());
        }
    }
}

/// The build's scratch directory, unmounted and removed when the build ends (the last
/// field of [`StepContext`], so after the secrets and agents that live in it).
struct Scratch {
    path: PathBuf,
    tmpfs: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = crate::snapshots::remove_tree(&self.path);
    }
}

impl<'a> StepContext<'a> {
    pub(crate) fn open(
        opts: &'a BuildOptions,
        source: Arc<Source>,
        cancel: CancelToken,
        secret_values: &[(String, Vec<u8>)],
        on_event: &mut dyn FnMut(Event),
    ) -> Result<StepContext<'a>, BuildError> {
        let images = ImageStore::open(&opts.root)
            .map_err(|e| BuildError::setup("opening the image store", e))?;
        images
            .sweep_temporaries()
            .map_err(|e| BuildError::setup("sweeping the image store", e))?;
        let (scratch, on_tmpfs) = scratch_dir()?;
        let scratch_path = scratch.clone();
        if !on_tmpfs && !opts.secrets.is_empty() {
            on_event(Event::Warning(
                "secrets are kept in a plain directory: no private tmpfs could be mounted".into(),
            ));
        }
        let snapshots = Snapshotter::open(&opts.root, opts.snapshotter)
            .map_err(|e| BuildError::setup("opening the snapshot store", e))?;
        let secrets = SecretStore::load(&scratch, secret_values)
            .map_err(|e| BuildError::setup("loading secrets", e))?;
        // A malformed pattern fails the build, as in BuildKit.
        let ignore = IgnoreRules::load(&opts.context, opts.dockerfile_path.as_deref())
            .and_then(|rules| rules.check().map(|()| rules))
            .map_err(|e| BuildError::setup("reading .dockerignore", e))?;
        let mut ssh = BTreeMap::new();
        let mut agents = Vec::new();
        for (id, src) in &opts.ssh {
            match src {
                SshSource::Socket(p) => {
                    ssh.insert(id.clone(), p.clone());
                }
                SshSource::Keys(keys) => {
                    let sock = scratch.join(format!("agent-{}.sock", agents.len()));
                    let agent = KeyAgent::start(keys, &sock)
                        .map_err(|e| BuildError::setup(format!("--ssh {id}"), e))?;
                    ssh.insert(id.clone(), agent.socket().to_path_buf());
                    agents.push(agent);
                }
            }
        }
        let cache = StepCache::open(&opts.root)
            .map_err(|e| BuildError::setup("opening the build cache", e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let created = match opts.source_date_epoch {
            Some(e) => crate::image::rfc3339(e, 0),
            None => crate::image::rfc3339(now.as_secs(), now.subsec_nanos()),
        };
        Ok(StepContext {
            opts,
            snapshots,
            images,
            scratch,
            secrets,
            created,
            step_id: AtomicUsize::new(0),
            results: Mutex::new(BTreeMap::new()),
            bases: Mutex::new(BTreeMap::new()),
            source,
            ssh,
            _agents: agents,
            ignore: Arc::new(ignore),
            cache,
            remote: RemoteBlobs::default(),
            digests: ContextDigests::load(&opts.root.join("cache").join("context-index")),
            cancel,
            no_cache_stages: BTreeSet::new(),
            registry: OnceLock::new(),
            used_keys: Mutex::new(Vec::new()),
            _scratch: Scratch {
                path: scratch_path,
                tmpfs: on_tmpfs,
            },
        })
    }

    /// Keeps the context hashes this build computed for the next one.
    pub(crate) fn save_context_index(&self) {
        let index = self.opts.root.join("cache").join("context-index");
        if let Err(e) = self.digests.save(&index) {
            tracing::debug!("saving {}: {e}", index.display());
        }
    }

    /// Stages whose steps run even when cached.
    pub(crate) fn set_no_cache_stages(&mut self, stages: BTreeSet<usize>) {
        self.no_cache_stages = stages;
    }

    fn results(&self) -> MutexGuard<'_, BTreeMap<usize, StageState>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bases(&self) -> MutexGuard<'_, BTreeMap<String, StageState>> {
        self.bases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the image's `created` and history timestamps say it was made.
    pub(crate) fn created(&self) -> &str {
        &self.created
    }

    /// A finished stage's state.
    pub(crate) fn result(&self, stage: usize) -> Option<StageState> {
        self.results().get(&stage).cloned()
    }

    pub(crate) fn set_result(&self, stage: usize, st: StageState) {
        self.results().insert(stage, st);
    }

    /// How layers are written: diff options, blob directory, compression.
    pub(crate) fn commit_options(&self) -> CommitOptions {
        CommitOptions {
            diff: DiffOptions {
                source_date_epoch: self.opts.source_date_epoch,
                ..Default::default()
            },
            blob_dir: self.images.blob_dir(),
            compression: self.opts.compression,
        }
    }

    fn record_key(&self, key: StepKey, stage: usize) {
        self.used_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((key, stage));
    }

    /// The cache keys this build hit or wrote in `stages` (every stage: `None`), in order.
    pub(crate) fn used_keys(&self, stages: Option<&BTreeSet<usize>>) -> Vec<StepKey> {
        let used = self
            .used_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<StepKey> = Vec::new();
        for (k, s) in used.iter() {
            if stages.is_none_or(|set| set.contains(s)) && !out.contains(k) {
                out.push(*k);
            }
        }
        out
    }

    /// The layers an imported registry cache names.
    pub(crate) fn remote_blobs(&self) -> &RemoteBlobs {
        &self.remote
    }

    /// Makes sure the blobs of `layers` are in the store, fetching those an imported
    /// cache names (what the image of a cached stage needs).
    pub(crate) fn fetch_layers(&self, layers: &[LayerRef]) -> Result<(), CacheError> {
        let digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        self.remote
            .fetch_missing(&digests, &self.images, || self.registry(), &mut |t| {
                tracing::debug!(digest = %t.digest, done = t.done, total = t.total, "cached layer");
            })?;
        Ok(())
    }

    /// Makes sure `st`'s snapshot exists before it is mounted: a cache hit from an
    /// imported cache (or a root whose snapshots were removed) names a chain that is
    /// made from its layers only now, when a step runs on it or reads it.
    pub(crate) fn materialize(&self, st: &StageState) -> Result<(), CacheError> {
        let Some(chain) = &st.chain else {
            return Ok(());
        };
        if self.snapshots.exists(chain) {
            return Ok(());
        }
        self.fetch_layers(&st.layers)?;
        if crate::cache::entries::rebuild(&self.snapshots, &self.images, &st.layers, chain) {
            Ok(())
        } else {
            Err(CacheError::Unmade(chain.as_str().to_string()))
        }
    }

    /// Whether the build was asked to stop (checked between steps and between exports).
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub(crate) fn cache(&self) -> &StepCache {
        &self.cache
    }

    /// A step's error at `pos`: the Dockerfile frame shows the cause's text.
    pub(crate) fn fail(&self, pos: Position, e: impl Into<StepError>) -> BuildError {
        let source = e.into();
        BuildError::Step(Box::new(StepFailure {
            at: self.source.error(pos, source.to_string()),
            source,
        }))
    }

    fn history(&self, st: &mut StageState, created_by: String, layer: bool) {
        st.config.history.push(History {
            created: Some(self.created.clone()),
            created_by,
            comment: history::COMMENT.into(),
            empty_layer: !layer,
        });
    }

    /// A mounted read-only tree of what `input` names (for COPY --from and mounts).
    fn view_of(&self, input: &StepInput) -> Result<SourceTree, StepError> {
        match input {
            StepInput::Context => Ok(SourceTree::Dir(self.opts.context.clone())),
            StepInput::Stage(j) => {
                let st = self
                    .result(*j)
                    .ok_or_else(|| StepError::Refused(format!("stage {j} has not been built")))?;
                self.materialize(&st)?;
                Ok(SourceTree::View(self.snapshots.view(st.chain.as_ref())?))
            }
            StepInput::Named(name) => {
                if let Some(NamedContext::Dir(d)) = self.opts.named_contexts.get(name) {
                    return Ok(SourceTree::Dir(d.clone()));
                }
                let st = self.base(name, &self.target_platform())?;
                self.materialize(&st)?;
                Ok(SourceTree::View(self.snapshots.view(st.chain.as_ref())?))
            }
        }
    }

    /// Where stage `node` starts.
    fn initial_state(&self, node: &StageNode) -> Result<StageState, BuildError> {
        let mut st = match &node.base {
            Base::Scratch => StageState {
                config: self.base_images(&node.platform).platform_config(),
                ..Default::default()
            },
            Base::Stage(j) => self.result(*j).unwrap_or_default(),
            Base::Image(r) => self
                .base(r, &node.platform)
                .map_err(|e| self.fail(node.position, e))?,
        };
        st.config.config.on_build.clear();
        st.cmd_set = false;
        if !st.config.config.env.iter().any(|e| e.starts_with("PATH=")) {
            st.config.config.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        if !matches!(node.base, Base::Stage(_)) {
            st.build_args.clear();
        }
        Ok(st)
    }

    /// Runs one stage's steps in order; its stage dependencies must be finished. A
    /// filesystem step whose key is in the cache is not run: its snapshot and layer are
    /// reused and it is reported `cached`.
    pub(crate) fn run_stage(
        &self,
        graph: &StepGraph,
        node: &StageNode,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<StageState, BuildError> {
        on_event(Event::StageStarted {
            id: self.step_id.fetch_add(1, Ordering::SeqCst) + 1,
            stage: node.label.clone(),
            base: match &node.base {
                Base::Scratch => "scratch".to_string(),
                Base::Image(r) => r.clone(),
                Base::Stage(j) => graph
                    .stages
                    .get(j)
                    .map_or(j.to_string(), |n| n.label.clone()),
            },
            total: node.steps.len(),
        });
        let mut st = self.initial_state(node)?;
        let mut key = self.stage_key(node, &st);
        let total = node.steps.len();
        let use_cache = !self.opts.no_cache && !self.no_cache_stages.contains(&node.index);
        for (k, step) in node.steps.iter().enumerate() {
            if self.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let id = self.step_id.fetch_add(1, Ordering::SeqCst) + 1;
            on_event(Event::StepStarted {
                id,
                stage: node.label.clone(),
                index: k + 1,
                total,
                text: step.text.clone(),
            });
            let started = Instant::now();
            let pos = step.position;
            let step_key = self
                .step_key(&key, step, &st)
                .map_err(|e| self.fail(pos, e))?;
            let filesystem = !matches!(step.op, StepOp::Meta(_));
            let hit = match (&step_key, filesystem && use_cache) {
                (Some(k), true) => self
                    .cache
                    .get(k, &self.snapshots, &self.images, &self.remote),
                _ => None,
            };
            let cached = hit.is_some();
            if let (Some(k), true) = (&step_key, cached) {
                self.record_key(*k, node.index);
            }
            let layer = match hit {
                Some(hit) => {
                    let digest = hit.layer.as_ref().map(|l| l.digest.clone());
                    self.replay(&mut st, step, hit);
                    digest
                }
                None => {
                    let layer = match &step.op {
                        StepOp::Meta(i) => {
                            meta::apply(self, graph, &mut st, step, i)
                                .map_err(|e| self.fail(pos, e))?;
                            None
                        }
                        StepOp::Workdir(w) => {
                            meta::workdir(self, &mut st, w).map_err(|e| self.fail(pos, e))?
                        }
                        StepOp::Copy(op) => copy::run(self, &mut st, op, id, on_event)
                            .map_err(|e| self.fail(pos, e))?,
                        StepOp::Run(op) => run::run(self, &mut st, step, op, id, on_event)?,
                    };
                    if let (Some(k), true) = (&step_key, filesystem) {
                        let entry = CachedStep {
                            chain: st.chain.clone(),
                            layer: layer.as_ref().and_then(|_| st.layers.last().cloned()),
                            layers: st.layers.clone(),
                        };
                        self.cache.put(k, &entry).map_err(|e| self.fail(pos, e))?;
                        self.record_key(*k, node.index);
                    }
                    layer
                }
            };
            key = step_key.unwrap_or_else(|| keys::reanchor(&key, &st));
            let layer_size = layer
                .as_ref()
                .and_then(|d| st.layers.iter().rev().find(|l| &l.digest == d))
                .map(|l| l.size);
            on_event(Event::StepDone {
                id,
                layer,
                layer_size,
                seconds: started.elapsed().as_secs_f64(),
                cached,
            });
        }
        st.key = Some(key);
        Ok(st)
    }

    /// A filesystem step: prepare, mutate, commit; the digest of the layer it made.
    fn fs_step(
        &self,
        st: &mut StageState,
        f: impl FnOnce(&Path) -> Result<(), StepError>,
    ) -> Result<Option<String>, StepError> {
        self.materialize(st)?;
        let active = self.snapshots.prepare(st.chain.as_ref())?;
        f(active.root())?;
        self.commit(st, active)
    }

    /// Commits `active` onto `st`; the digest of the layer, if the step changed anything.
    fn commit(
        &self,
        st: &mut StageState,
        active: crate::snapshots::ActiveSnapshot,
    ) -> Result<Option<String>, StepError> {
        Ok(
            match self.snapshots.commit(active, &self.commit_options())? {
                Some(c) => {
                    let d = c.layer.digest.clone();
                    st.push_layer(c);
                    Some(d)
                }
                None => None,
            },
        )
    }
}

/// A tree a step reads from: a directory as it is, or a mounted snapshot.
enum SourceTree {
    Dir(PathBuf),
    View(View),
}

impl SourceTree {
    fn root(&self) -> &Path {
        match self {
            SourceTree::Dir(d) => d,
            SourceTree::View(v) => v.root(),
        }
    }
}

/// `user[:group]` resolved in the stage root's /etc (numbers pass through).
fn owner_in(root: &Path, user: &str) -> Result<(u32, u32), StepError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let etc = crate::mounts::resolve_beneath(root, "etc").unwrap_or_else(|_| root.join("etc"));
    crate::sandbox::user::resolve(user, &etc)
        .map(|ids| (ids.uid, ids.gid))
        .map_err(|e| StepError::Owner {
            user: user.to_string(),
            reason: e.to_string(),
        })
}

/// The argv of a shell- or exec-form command: shell form goes through the stage's SHELL
/// (`/bin/sh -c` by default).
fn shell_argv(config: &crate::image::ImageConfig, form: &ShellOrExec) -> Vec<String> {
    match form {
        ShellOrExec::Exec(a) => a.clone(),
        ShellOrExec::Shell(s) => {
            let mut sh = if config.config.shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                config.config.shell.clone()
            };
            sh.push(s.clone());
            sh
        }
    }
}
