//! Running the planned stages, step by step, on snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kiln_snapshotter::backend::{Backend, MountGuard};
use kiln_snapshotter::diff::DiffOptions;
use kiln_snapshotter::layer::{write_layer, Layer};
use kiln_snapshotter::store::{Active, ChainId, Store};

use super::copy::{copy_into, CopyRequest, InlineSource};
use super::pattern::clean_abs;
use super::{setup, BuildError, BuildOptions, BuildResult, Event, NamedContext};
use crate::dockerfile::ast::Document;
use crate::dockerfile::instructions::{
    Instruction, NetworkMode, RunCommand, SecurityMode, ShellOrExec,
};
use crate::dockerfile::{DockerfileError, Position, Source};
use crate::image::history::{self, go_list, go_quoted_list};
use crate::image::{Healthcheck, History, ImageConfig};
use crate::mounts::{MountInputs, SecretStore};
use crate::plan::scope::{EvaluatedCommand, StageScope, DEFAULT_PATH};
use crate::plan::{Base, StageGraph};
use crate::store::{normalize_reference, ImageStore};

pub(super) use super::base::{LayerRef, StageState};

/// A read-only look at a snapshot chain, mounted for the length of a step.
struct View {
    // Field order matters: the mount goes before its snapshot.
    _guard: Option<Box<dyn MountGuard>>,
    _active: Option<Active>,
    _empty: Option<tempfile::TempDir>,
    root: PathBuf,
}

pub(super) struct Session<'a> {
    opts: &'a BuildOptions,
    snapshots: Store,
    pub(super) images: ImageStore,
    backend: Arc<dyn Backend>,
    scratch: PathBuf,
    secrets: SecretStore,
    created: String,
    step_id: AtomicUsize,
    results: Mutex<BTreeMap<usize, StageState>>,
    bases: Mutex<BTreeMap<String, StageState>>,
    source: Arc<Source>,
    held: Mutex<Vec<View>>,
    /// ssh id → the agent socket steps are forwarded to.
    ssh: BTreeMap<String, PathBuf>,
    _agents: Vec<crate::mounts::key_agent::KeyAgent>,
    ignore: Arc<super::ignore::IgnoreRules>,
}

/// A private tmpfs for the build's secrets and sockets; plain directory when the mount
/// is refused (outside a mount namespace).
fn scratch_dir() -> Result<(PathBuf, bool), BuildError> {
    let base = std::env::temp_dir().join(format!("kiln-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)
        .map_err(|e| setup("creating the build's scratch directory")(e.to_string()))?;
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

impl<'a> Session<'a> {
    pub(super) fn open(
        opts: &'a BuildOptions,
        doc: &Document,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Session<'a>, BuildError> {
        let snapshots = Store::open(&opts.root)
            .map_err(|e| setup("opening the snapshot store")(e.to_string()))?;
        let images = ImageStore::open(&opts.root)
            .map_err(|e| setup("opening the image store")(e.to_string()))?;
        let (scratch, on_tmpfs) = scratch_dir()?;
        if !on_tmpfs && !opts.secrets.is_empty() {
            on_event(Event::Warning(
                "secrets are kept in a plain directory: no private tmpfs could be mounted".into(),
            ));
        }
        let backend = super::backend_for(opts.snapshotter, &scratch)
            .map_err(setup("choosing a snapshotter"))?;
        let secrets = SecretStore::load(&scratch, &opts.secrets)
            .map_err(|e| setup("loading secrets")(e.to_string()))?;
        let ignore =
            super::ignore::IgnoreRules::load(&opts.context, opts.dockerfile_path.as_deref())
                .map_err(|e| setup("reading .dockerignore")(e.to_string()))?;
        let mut ssh = BTreeMap::new();
        let mut agents = Vec::new();
        for (id, src) in &opts.ssh {
            match src {
                crate::mounts::ssh::SshSource::Socket(p) => {
                    ssh.insert(id.clone(), p.clone());
                }
                crate::mounts::ssh::SshSource::Keys(keys) => {
                    let sock = scratch.join(format!("agent-{}.sock", agents.len()));
                    let agent = crate::mounts::key_agent::KeyAgent::start(keys, &sock)
                        .map_err(|e| setup(format!("--ssh {id}"))(e.to_string()))?;
                    ssh.insert(id.clone(), agent.socket().to_path_buf());
                    agents.push(agent);
                }
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let created = match opts.source_date_epoch {
            Some(e) => crate::image::rfc3339(e, 0),
            None => crate::image::rfc3339(now.as_secs(), now.subsec_nanos()),
        };
        Ok(Session {
            opts,
            snapshots,
            images,
            backend,
            scratch,
            secrets,
            created,
            step_id: AtomicUsize::new(0),
            results: Mutex::new(BTreeMap::new()),
            bases: Mutex::new(BTreeMap::new()),
            source: doc.source.clone(),
            held: Mutex::new(Vec::new()),
            ssh,
            _agents: agents,
            ignore: Arc::new(ignore),
        })
    }

    fn results(&self) -> MutexGuard<'_, BTreeMap<usize, StageState>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bases(&self) -> MutexGuard<'_, BTreeMap<String, StageState>> {
        self.bases.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn opts(&self) -> &'a BuildOptions {
        self.opts
    }

    pub(super) fn created(&self) -> &str {
        &self.created
    }

    /// Mounts `st`'s filesystem read-only until [`Session::drop_views`]; returns its root.
    pub(super) fn view_of(&self, st: &StageState) -> Result<PathBuf, String> {
        let v = self.view(st.chain.as_ref())?;
        let root = v.root.clone();
        self.held.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        Ok(root)
    }

    pub(super) fn drop_views(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn err_at(&self, pos: Position, msg: impl Into<String>) -> BuildError {
        BuildError::Step(Box::new(self.source.error(pos, msg)))
    }

    fn dferr(&self, pos: Position, msg: impl Into<String>) -> DockerfileError {
        self.source.error(pos, msg)
    }

    pub(super) fn run(
        &mut self,
        graph: &StageGraph,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<BuildResult, BuildError> {
        // Base images first: their Env feeds the evaluation of the stages.
        for s in graph.stages.iter().filter(|s| s.needed) {
            if let Base::Image(r) = &s.base {
                if !self.bases().contains_key(r) {
                    let st = self
                        .resolve_image(r)
                        .map_err(|m| self.err_at(s.position, m))?;
                    self.bases().insert(r.clone(), st);
                }
            }
        }
        let bases = self.bases().clone();
        let env_of = move |r: &str| {
            bases
                .get(r)
                .map(|s| s.config.env_pairs())
                .unwrap_or_default()
        };
        // ONBUILD triggers of base images run first in the stages built on them.
        let mut triggers: BTreeMap<String, Vec<crate::dockerfile::instructions::Command>> =
            BTreeMap::new();
        for s in graph.stages.iter().filter(|s| s.needed) {
            let Base::Image(r) = &s.base else { continue };
            let Some(b) = self.bases().get(r).cloned() else {
                continue;
            };
            let mut out = Vec::new();
            for t in &b.config.config.on_build {
                let text = format!("FROM scratch\n{t}\n");
                let parsed = crate::dockerfile::parser::parse("ONBUILD", text.as_bytes())
                    .and_then(|d| crate::dockerfile::instructions::parse_document(&d))
                    .map_err(|e| {
                        self.err_at(
                            s.position,
                            format!("ONBUILD trigger {t:?} of {r}: {}", e.summary()),
                        )
                    })?;
                for mut c in parsed.stages.into_iter().flat_map(|s| s.commands) {
                    c.position = s.position;
                    out.push(c);
                }
            }
            triggers.insert(r.clone(), out);
        }
        let triggers_of = |r: &str| triggers.get(r).cloned().unwrap_or_default();
        let evals = graph.evaluate_with_triggers(&self.source, &env_of, &triggers_of)?;
        // Stages of one level depend on none of each other: they run in parallel, and their
        // events reach the caller through a channel, in the order they happen.
        for level in graph.levels() {
            let (tx, rx) = crossbeam_channel::unbounded::<Event>();
            let outcome: Result<(), BuildError> = std::thread::scope(|scope| {
                let this = &*self;
                let evals = &evals;
                let handles: Vec<_> = level
                    .iter()
                    .filter_map(|i| evals.get(i).map(|e| (*i, e)))
                    .map(|(i, eval)| {
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let emit = move |e: Event| {
                                let _ = tx.send(e);
                            };
                            this.run_stage(graph, i, &eval.commands, &emit)
                                .map(|st| (i, st))
                        })
                    })
                    .collect();
                drop(tx);
                for e in rx.iter() {
                    on_event(e);
                }
                let mut first_error = None;
                for h in handles {
                    match h.join() {
                        Ok(Ok((i, st))) => {
                            this.results().insert(i, st);
                        }
                        Ok(Err(e)) => {
                            first_error.get_or_insert(e);
                        }
                        Err(_) => {
                            first_error.get_or_insert(setup("building")(
                                "a stage's worker panicked".into(),
                            ));
                        }
                    }
                }
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            });
            outcome?;
        }
        let mut target = self
            .results()
            .get(&graph.target)
            .cloned()
            .ok_or_else(|| setup("building")("the target stage was not built".into()))?;
        for (k, v) in &self.opts.labels {
            target.config.config.labels.insert(k.clone(), v.clone());
        }
        super::export::finish(self, &target, on_event)
    }

    fn platform_config(&self) -> ImageConfig {
        let p = self
            .opts
            .platform
            .clone()
            .unwrap_or_else(crate::plan::Platform::host);
        ImageConfig {
            architecture: p.architecture,
            os: p.os,
            variant: p.variant,
            config: crate::image::RunConfig {
                env: vec![format!("PATH={DEFAULT_PATH}")],
                working_dir: "/".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// An image reference: a named context, or the local store.
    fn resolve_image(&self, reference: &str) -> Result<StageState, String> {
        let wanted = normalize_reference(reference);
        let named = self
            .opts
            .named_contexts
            .iter()
            .find(|(k, _)| k.as_str() == reference || normalize_reference(k) == wanted)
            .map(|(_, v)| v.clone());
        match named {
            Some(NamedContext::Dir(dir)) => self.state_from_dir(&dir),
            Some(NamedContext::OciLayout { path, tag }) => {
                let layout = ImageStore::open(&path).map_err(|e| e.to_string())?;
                let index = layout.index().map_err(|e| e.to_string())?;
                let desc = match &tag {
                    Some(t) => layout.resolve(t).map_err(|e| e.to_string())?,
                    None if index.manifests().len() == 1 => index.manifests().first().cloned(),
                    None => None,
                }
                .ok_or_else(|| {
                    format!(
                        "{}: no image {} in this OCI layout",
                        path.display(),
                        tag.as_deref()
                            .unwrap_or("(give a tag: oci-layout://PATH:TAG)")
                    )
                })?;
                self.import_image(&layout, &desc)
            }
            Some(NamedContext::Image(r)) => self.resolve_image(&r),
            None => {
                let desc = self.images.resolve(reference).map_err(|e| e.to_string())?.ok_or_else(|| {
                    format!(
                        "{reference}: the image is not in the local store ({}) and pulling from registries is not available yet; \
                         build it with `kiln build -t {reference}`, or pass --build-context {reference}=oci-layout://PATH",
                        self.opts.root.display()
                    )
                })?;
                let images = self.images.clone();
                self.import_image(&images, &desc)
            }
        }
    }

    /// Makes snapshots of an image's layers (copying its blobs into the store).
    fn import_image(
        &self,
        from: &ImageStore,
        desc: &oci_spec::image::Descriptor,
    ) -> Result<StageState, String> {
        super::base::import_image(&self.snapshots, &self.images, from, desc)
    }

    /// A directory as a one-layer base filesystem.
    fn state_from_dir(&self, dir: &Path) -> Result<StageState, String> {
        let mut st = StageState {
            config: self.platform_config(),
            ..Default::default()
        };
        let active = self.snapshots.prepare(None).map_err(|e| e.to_string())?;
        kiln_snapshotter::backend::copy::materialize(&[dir.to_path_buf()], active.upper())
            .map_err(|e| format!("copying {}: {e}", dir.display()))?;
        let guard = active
            .mount(self.backend.as_ref())
            .map_err(|e| e.to_string())?;
        let layer = self.layer_of(guard.as_ref()).map_err(|e| e.to_string())?;
        drop(guard);
        if let Some(layer) = layer {
            self.commit(&mut st, active, layer)
                .map_err(|e| e.to_string())?;
        }
        Ok(st)
    }

    fn layer_of(&self, guard: &dyn MountGuard) -> Result<Option<Layer>, String> {
        let diff = DiffOptions {
            source_date_epoch: self.opts.source_date_epoch,
            ..Default::default()
        };
        write_layer(guard, &diff, &self.images.blob_dir(), self.opts.compression)
            .map_err(|e| e.to_string())
    }

    fn commit(&self, st: &mut StageState, active: Active, layer: Layer) -> Result<(), String> {
        let id = ChainId::new(st.chain.as_ref(), &layer.digest);
        if self.backend.name() == "copy" && !self.snapshots.exists(&id) {
            // The copy backend writes into a full copy, not an upper directory: the
            // snapshot is the layer itself, applied (its cost is the change's size).
            let f = std::fs::File::open(&layer.path)
                .map_err(|e| format!("reading {}: {e}", layer.path.display()))?;
            kiln_snapshotter::apply::apply_layer(
                std::io::BufReader::new(f),
                active.upper(),
                &Default::default(),
            )
            .map_err(|e| format!("recording the step's changes: {e}"))?;
        }
        active.commit(&id).map_err(|e| e.to_string())?;
        st.chain = Some(id);
        st.config.rootfs.diff_ids.push(layer.diff_id.clone());
        st.layers.push(LayerRef {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            media_type: layer.media_type.to_string(),
        });
        Ok(())
    }

    fn history(&self, st: &mut StageState, created_by: String, layer: bool) {
        st.config.history.push(History {
            created: Some(self.created.clone()),
            created_by,
            comment: history::COMMENT.into(),
            empty_layer: !layer,
        });
    }

    /// A mounted read-only view of a chain.
    fn view(&self, chain: Option<&ChainId>) -> Result<View, String> {
        match chain {
            None => {
                let d = tempfile::tempdir_in(&self.scratch).map_err(|e| e.to_string())?;
                Ok(View {
                    root: d.path().to_path_buf(),
                    _guard: None,
                    _active: None,
                    _empty: Some(d),
                })
            }
            Some(c) => {
                let active = self.snapshots.prepare(Some(c)).map_err(|e| e.to_string())?;
                let guard = active
                    .mount(self.backend.as_ref())
                    .map_err(|e| e.to_string())?;
                Ok(View {
                    root: guard.root().to_path_buf(),
                    _guard: Some(guard),
                    _active: Some(active),
                    _empty: None,
                })
            }
        }
    }

    /// What `--from=NAME` (COPY) or `from=NAME` (RUN --mount) points at.
    fn view_of_source(&self, graph: &StageGraph, from: &str) -> Result<View, String> {
        let lower = from.to_ascii_lowercase();
        let stage = graph
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index)
            .or_else(|| {
                from.parse::<usize>()
                    .ok()
                    .filter(|i| *i < graph.stages.len())
            });
        if let Some(j) = stage {
            let chain = self
                .results()
                .get(&j)
                .ok_or_else(|| format!("stage {from:?} has not been built"))?
                .chain
                .clone();
            return self.view(chain.as_ref());
        }
        if let Some(NamedContext::Dir(d)) = self.opts.named_contexts.get(from) {
            return Ok(View {
                root: d.clone(),
                _guard: None,
                _active: None,
                _empty: None,
            });
        }
        let known = self.bases().get(from).cloned();
        let st = match known {
            Some(s) => s,
            None => {
                let s = self.resolve_image(from)?;
                self.bases().insert(from.to_string(), s.clone());
                s
            }
        };
        self.view(st.chain.as_ref())
    }

    fn run_stage(
        &self,
        graph: &StageGraph,
        index: usize,
        commands: &[EvaluatedCommand],
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<StageState, BuildError> {
        let planned = &graph.stages[index];
        let mut st = match &planned.base {
            Base::Scratch => self.platform_config_state(),
            Base::Stage(j) => self.results().get(j).cloned().unwrap_or_default(),
            Base::Image(r) => self.bases().get(r).cloned().unwrap_or_default(),
        };
        st.config.config.on_build.clear();
        st.cmd_set = false;
        if st.config.config.env_has_no_path() {
            st.config.config.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        if !matches!(planned.base, Base::Stage(_)) {
            st.build_args.clear();
        }
        let total = commands.len();
        for (k, cmd) in commands.iter().enumerate() {
            let id = self.step_id.fetch_add(1, Ordering::SeqCst) + 1;
            let text = self.source.line(cmd.position.line).trim().to_string();
            on_event(Event::StepStarted {
                id,
                stage: planned.label.clone(),
                index: k + 1,
                total,
                text,
            });
            let started = Instant::now();
            let layer = self.step(graph, &mut st, cmd, id, on_event)?;
            on_event(Event::StepDone {
                id,
                layer,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        Ok(st)
    }

    fn platform_config_state(&self) -> StageState {
        StageState {
            config: self.platform_config(),
            ..Default::default()
        }
    }

    /// One instruction; returns the digest of the layer it made.
    fn step(
        &self,
        graph: &StageGraph,
        st: &mut StageState,
        cmd: &EvaluatedCommand,
        id: usize,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Option<String>, BuildError> {
        let pos = cmd.position;
        match &cmd.instruction {
            Instruction::Env(kvs) => {
                let mut msg = String::from("ENV");
                for kv in kvs {
                    st.config.set_env(&kv.key, &kv.value);
                    msg.push_str(&format!(" {}={}", kv.key, kv.value));
                }
                self.history(st, msg, false);
            }
            Instruction::Label(kvs) => {
                let mut msg = String::from("LABEL");
                for kv in kvs {
                    st.config
                        .config
                        .labels
                        .insert(kv.key.clone(), kv.value.clone());
                    msg.push_str(&format!(" {}={}", kv.key, kv.value));
                }
                self.history(st, msg, false);
            }
            Instruction::Maintainer(m) => {
                st.config.author = m.clone();
                self.history(st, format!("MAINTAINER {m}"), false);
            }
            Instruction::Arg(a) => {
                let lexer = crate::dockerfile::shell::Lexer::new(graph.escape);
                let mut parts = Vec::new();
                for d in &a.args {
                    let value = match self.opts.build_args.get(&d.key) {
                        Some(v) => Some(v.clone()),
                        None => match &d.value {
                            Some(raw) => Some(
                                lexer
                                    .process_word(raw, &cmd.env)
                                    .map_err(|e| self.err_at(pos, e.to_string()))?,
                            ),
                            None => graph
                                .global_args
                                .iter()
                                .find(|(k, _)| *k == d.key)
                                .map(|(_, v)| v.clone()),
                        },
                    };
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", d.key),
                        None => d.key.clone(),
                    });
                    let shown = value.unwrap_or_default();
                    match st.build_args.iter_mut().find(|(k, _)| *k == d.key) {
                        Some(slot) => slot.1 = shown,
                        None => st.build_args.push((d.key.clone(), shown)),
                    }
                }
                self.history(st, format!("ARG {}", parts.join(" ")), false);
            }
            Instruction::Cmd(form) => {
                let args = self.with_shell(&st.config, form);
                st.config.config.cmd = Some(args.clone());
                st.config.config.args_escaped = true;
                st.cmd_set = true;
                self.history(st, format!("CMD {}", go_quoted_list(&args)), false);
            }
            Instruction::Entrypoint(form) => {
                let args = self.with_shell(&st.config, form);
                st.config.config.entrypoint = Some(args.clone());
                // An ENTRYPOINT resets a CMD inherited from the base (not one set here).
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                self.history(st, format!("ENTRYPOINT {}", go_quoted_list(&args)), false);
            }
            Instruction::Shell(sh) => {
                st.config.config.shell = sh.clone();
                self.history(st, format!("SHELL {}", go_list(sh)), false);
            }
            Instruction::Expose(ports) => {
                let mut list = Vec::new();
                for p in ports {
                    list.extend(parse_port(p).map_err(|m| self.err_at(pos, m))?);
                }
                for p in &list {
                    st.config
                        .config
                        .exposed_ports
                        .insert(p.clone(), serde_json::json!({}));
                }
                self.history(st, format!("EXPOSE {}", go_list(&list)), false);
            }
            Instruction::Volume(vols) => {
                for v in vols {
                    if v.is_empty() {
                        return Err(self.err_at(pos, "VOLUME specified can not be an empty string"));
                    }
                    st.config
                        .config
                        .volumes
                        .insert(v.clone(), serde_json::json!({}));
                }
                self.history(st, format!("VOLUME {}", go_list(vols)), false);
            }
            Instruction::User(u) => {
                st.config.config.user = u.clone();
                self.history(st, format!("USER {u}"), false);
            }
            Instruction::Stopsignal(s) => {
                st.config.config.stop_signal = s.clone();
                self.history(st, format!("STOPSIGNAL {s}"), false);
            }
            Instruction::Healthcheck(h) => {
                let ns = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as u64);
                let hc = Healthcheck {
                    test: h.test.clone(),
                    interval: ns(h.interval),
                    timeout: ns(h.timeout),
                    start_period: ns(h.start_period),
                    start_interval: ns(h.start_interval),
                    retries: h.retries.unwrap_or(0) as u64,
                };
                let msg = history::healthcheck(&hc);
                st.config.config.healthcheck = Some(hc);
                self.history(st, msg, false);
            }
            Instruction::Onbuild(ob) => {
                st.config.config.on_build.push(ob.expression.clone());
            }
            Instruction::Workdir(w) => {
                let wd = if w.starts_with('/') {
                    clean_abs(w)
                } else {
                    clean_abs(&format!("{}/{w}", st.config.config.working_dir))
                };
                st.config.config.working_dir = wd.clone();
                let mut layer = None;
                if wd != "/" {
                    let user = st.config.config.user.clone();
                    layer = self
                        .fs_step(st, |root| {
                            let (uid, gid) = owner_in(root, &user)?;
                            super::copy::make_dir(root, &wd, (uid, gid)).map_err(|e| e.to_string())
                        })
                        .map_err(|m| self.err_at(pos, m))?;
                }
                let made = layer.is_some();
                self.history(st, format!("WORKDIR {wd}"), made);
                return Ok(layer);
            }
            Instruction::Run(run) => return self.run_step(graph, st, cmd, run, id, on_event),
            Instruction::Copy(cp) => {
                let req = CopyRequest {
                    sources: cp.sources.clone(),
                    inline: inline_sources(&cp.inline_files),
                    dest: cp.dest.clone(),
                    src_root: PathBuf::new(),
                    from_context: cp.from.is_none(),
                    chown: None,
                    chmod: parse_chmod(cp.chmod.as_deref()).map_err(|m| self.err_at(pos, m))?,
                    workdir: st.config.config.working_dir.clone(),
                    excludes: cp.excludes.clone(),
                    parents: cp.parents,
                    ignore: Some(self.ignore.clone()),
                };
                let msg = copy_message(
                    "COPY",
                    cp.parents,
                    cp.chown.as_deref(),
                    cp.chmod.as_deref(),
                    &cp.sources,
                    &cp.inline_files,
                    &cp.dest,
                );
                return self.copy_step(
                    graph,
                    st,
                    req,
                    cp.from.as_deref(),
                    cp.chown.as_deref(),
                    msg,
                    pos,
                    (Vec::new(), Vec::new()),
                );
            }
            Instruction::Add(add) => {
                // URLs are downloaded now (checked against --checksum) and copied like
                // local files, mode 0600 as BuildKit gives them; git sources are not
                // supported yet.
                let mut downloads = Vec::new();
                for s in &add.sources {
                    if s.starts_with("git@") || s.ends_with(".git") || s.starts_with("git://") {
                        return Err(
                            self.err_at(pos, format!("ADD {s}: git sources are not supported yet"))
                        );
                    }
                    if s.starts_with("http://") || s.starts_with("https://") {
                        let dir = self.scratch.join(format!("add-{id}-{}", downloads.len()));
                        let name = super::download::fetch(s, &dir, add.checksum.as_deref())
                            .map_err(|m| self.err_at(pos, m))?;
                        downloads.push((dir, name));
                    } else if s.contains("://") {
                        return Err(self.err_at(
                            pos,
                            format!("ADD {s}: unsupported URL scheme (http and https only)"),
                        ));
                    }
                }
                if add.checksum.is_some() && downloads.is_empty() {
                    return Err(self.err_at(pos, "checksum requires HTTP(S) or Git sources"));
                }
                // Local archives are unpacked (unless --unpack=false); the rest is copied.
                let mut archives = Vec::new();
                let mut plain = Vec::new();
                for s in add.sources.iter().filter(|s| !s.contains("://")) {
                    let path = (!super::pattern::has_wildcard(s))
                        .then(|| crate::mounts::resolve_beneath(&self.opts.context, s).ok())
                        .flatten()
                        .filter(|p| {
                            !self.ignore.excluded(s) && super::copy::archive_kind(p).is_some()
                        });
                    match path {
                        Some(p) if add.unpack != Some(false) => archives.push(p),
                        _ => plain.push(s.clone()),
                    }
                }
                let req = CopyRequest {
                    sources: plain,
                    inline: inline_sources(&add.inline_files),
                    dest: add.dest.clone(),
                    src_root: PathBuf::new(),
                    from_context: true,
                    chown: None,
                    chmod: parse_chmod(add.chmod.as_deref()).map_err(|m| self.err_at(pos, m))?,
                    workdir: st.config.config.working_dir.clone(),
                    excludes: add.excludes.clone(),
                    parents: false,
                    ignore: Some(self.ignore.clone()),
                };
                let msg = copy_message(
                    "ADD",
                    false,
                    add.chown.as_deref(),
                    add.chmod.as_deref(),
                    &add.sources,
                    &add.inline_files,
                    &add.dest,
                );
                let extra: Vec<CopyRequest> = downloads
                    .into_iter()
                    .map(|(dir, name)| CopyRequest {
                        sources: vec![name],
                        inline: Vec::new(),
                        src_root: dir,
                        from_context: false,
                        chmod: req.chmod.clone().or(Some(super::copy::Chmod::Octal(0o600))),
                        ignore: None,
                        ..req.clone()
                    })
                    .collect();
                return self.copy_step(
                    graph,
                    st,
                    req,
                    None,
                    add.chown.as_deref(),
                    msg,
                    pos,
                    (archives, extra),
                );
            }
        }
        Ok(None)
    }

    fn with_shell(&self, config: &ImageConfig, form: &ShellOrExec) -> Vec<String> {
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

    /// A filesystem step: mount, mutate, diff, commit.
    fn fs_step(
        &self,
        st: &mut StageState,
        f: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<Option<String>, String> {
        let active = self
            .snapshots
            .prepare(st.chain.as_ref())
            .map_err(|e| e.to_string())?;
        let guard = active
            .mount(self.backend.as_ref())
            .map_err(|e| e.to_string())?;
        f(guard.root())?;
        let layer = self.layer_of(guard.as_ref())?;
        drop(guard);
        Ok(match layer {
            Some(l) => {
                let d = l.digest.clone();
                self.commit(st, active, l)?;
                Some(d)
            }
            None => None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &self,
        graph: &StageGraph,
        st: &mut StageState,
        mut req: CopyRequest,
        from: Option<&str>,
        chown: Option<&str>,
        msg: String,
        pos: Position,
        (archives, extra): (Vec<PathBuf>, Vec<CopyRequest>),
    ) -> Result<Option<String>, BuildError> {
        let view = match from {
            Some(f) => Some(
                self.view_of_source(graph, f)
                    .map_err(|m| self.err_at(pos, m))?,
            ),
            None => None,
        };
        req.src_root = match &view {
            Some(v) => v.root.clone(),
            None => self.opts.context.clone(),
        };
        let chown = chown.map(str::to_string);
        let layer = self
            .fs_step(st, |root| {
                if let Some(c) = &chown {
                    req.chown = Some(owner_in(root, c)?);
                }
                if !req.sources.is_empty() || !req.inline.is_empty() {
                    copy_into(root, &req).map_err(|e| e.to_string())?;
                }
                for x in &extra {
                    let mut x = x.clone();
                    x.chown = req.chown;
                    copy_into(root, &x).map_err(|e| e.to_string())?;
                }
                for a in &archives {
                    super::copy::extract_into(
                        root,
                        a,
                        &req.dest,
                        &req.workdir,
                        req.chown.unwrap_or((0, 0)),
                    )
                    .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .map_err(|m| self.err_at(pos, m))?;
        drop(view);
        self.history(st, format!("{msg} # buildkit"), layer.is_some());
        Ok(layer)
    }

    fn run_step(
        &self,
        graph: &StageGraph,
        st: &mut StageState,
        cmd: &EvaluatedCommand,
        run: &RunCommand,
        id: usize,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Result<Option<String>, BuildError> {
        let pos = cmd.position;
        if run.security == SecurityMode::Insecure {
            return Err(self.err_at(
                pos,
                "RUN --security=insecure is refused: kiln runs rootless, inside a user namespace, where a step cannot be given the host privileges insecure mode means",
            ));
        }
        if !run.devices.is_empty() {
            return Err(self.err_at(
                pos,
                "device feature is only supported in Dockerfile frontend 1.14.0-labs or later",
            ));
        }
        let mut argv = self.with_shell(&st.config, &run.command);
        let mut extra_mounts = Vec::new();
        if let (ShellOrExec::Shell(line), false) = (&run.command, run.heredocs.is_empty()) {
            let body = |h: &crate::dockerfile::ast::Heredoc| -> String {
                if h.chomp {
                    h.content
                        .lines()
                        .map(|l| format!("{}\n", l.trim_start_matches('\t')))
                        .collect()
                } else {
                    h.content.clone()
                }
            };
            let lone = run.heredocs.len() == 1
                && crate::dockerfile::parser::parse_heredoc_word(line.trim())
                    .ok()
                    .flatten()
                    .is_some();
            if lone {
                let h = &run.heredocs[0];
                let text = body(h);
                if text.starts_with("#!") {
                    let file = self.scratch.join(format!("heredoc-{id}"));
                    std::fs::write(&file, &text).map_err(|e| self.err_at(pos, e.to_string()))?;
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755));
                    let target = format!("/dev/pipes/{}", h.name);
                    extra_mounts.push(crate::sandbox::mounts::MountSpec {
                        target: target.clone(),
                        source: crate::sandbox::mounts::MountSource::Bind {
                            source: file,
                            readonly: true,
                            discard_writes: false,
                        },
                    });
                    argv = vec![target];
                } else {
                    argv.pop();
                    argv.push(text);
                }
            } else {
                let mut script = line.clone();
                script.push('\n');
                for h in &run.heredocs {
                    script.push_str(&body(h));
                    script.push_str(&h.name);
                    script.push('\n');
                }
                argv.pop();
                argv.push(script);
            }
        }
        let history_text = history::run(&self.with_shell(&st.config, &run.command), &st.build_args);

        let active = self
            .snapshots
            .prepare(st.chain.as_ref())
            .map_err(|e| self.err_at(pos, e.to_string()))?;
        let guard = active
            .mount(self.backend.as_ref())
            .map_err(|e| self.err_at(pos, e.to_string()))?;
        // Views of other stages for `from=` mounts, kept for the step.
        let mut views: BTreeMap<String, View> = BTreeMap::new();
        for m in &run.mounts {
            if let Some(f) = &m.from {
                if !views.contains_key(f) {
                    let v = self
                        .view_of_source(graph, f)
                        .map_err(|e| self.err_at(pos, e))?;
                    views.insert(f.clone(), v);
                }
            }
        }
        let from_dir = |f: &str| -> Result<PathBuf, crate::mounts::MountError> {
            views.get(f).map(|v| v.root.clone()).ok_or_else(|| {
                crate::mounts::MountError::BadSource {
                    path: f.to_string(),
                    target: String::new(),
                    why: "unknown stage".into(),
                }
            })
        };
        let workdir = st.config.config.working_dir.clone();
        let inputs = MountInputs {
            secrets: &self.secrets,
            ssh: &self.ssh,
            cache_root: &self.opts.root.join("cache").join("mounts"),
            context_dir: &self.opts.context,
            from_dir: &from_dir,
            scratch: &self.scratch,
            workdir: if workdir.is_empty() { "/" } else { &workdir },
        };
        let prepared = crate::mounts::prepare(&run.mounts, &inputs)
            .map_err(|e| self.err_at(pos, e.to_string()))?;
        let mut env: Vec<String> = StageScope::run_env(&cmd.env, &self.opts.build_args)
            .into_iter()
            .chain(prepared.env.iter().cloned())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let mut mounts = prepared.specs.clone();
        mounts.extend(extra_mounts);
        let spec = crate::sandbox::run::RunSpec {
            rootfs: guard.root().to_path_buf(),
            argv: argv.clone(),
            env,
            cwd: if workdir.is_empty() {
                "/".into()
            } else {
                workdir.clone()
            },
            hostname: "buildkitsandbox".into(),
            isolated_network: run.network == NetworkMode::None,
            user: Some(st.config.config.user.clone()).filter(|u| !u.is_empty()),
            mapping: self.opts.mapping.clone(),
            mounts,
            secret_env: prepared.secret_env.clone(),
            interactive: false,
            etc_dir: PathBuf::new(),
        };
        let outcome = crate::sandbox::run::run(&spec, &self.opts.helper, |chunk| {
            on_event(Event::Output {
                id,
                bytes: chunk.to_vec(),
            })
        })
        .map_err(|e| self.err_at(pos, e.to_string()))?;
        drop(prepared);
        drop(views);
        if outcome.exit_code != 0 {
            return Err(BuildError::RunFailed(Box::new(super::RunFailure {
                at: self.dferr(
                    pos,
                    format!("RUN failed with exit code {}", outcome.exit_code),
                ),
                command: argv.join(" "),
                exit_code: outcome.exit_code,
                output_tail: outcome.output_tail,
            })));
        }
        let layer = self
            .layer_of(guard.as_ref())
            .map_err(|m| self.err_at(pos, m))?;
        drop(guard);
        let digest = match layer {
            Some(l) => {
                let d = l.digest.clone();
                self.commit(st, active, l)
                    .map_err(|m| self.err_at(pos, m))?;
                Some(d)
            }
            None => None,
        };
        self.history(st, history_text, digest.is_some());
        Ok(digest)
    }
}

impl crate::image::RunConfig {
    fn env_has_no_path(&self) -> bool {
        !self.env.iter().any(|e| e.starts_with("PATH="))
    }
}

/// `user[:group]` resolved in the stage root's /etc (numbers pass through).
fn owner_in(root: &Path, user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let etc = crate::mounts::resolve_beneath(root, "etc").unwrap_or_else(|_| root.join("etc"));
    crate::sandbox::user::resolve(user, &etc)
        .map(|ids| (ids.uid, ids.gid))
        .map_err(|e| format!("user {user:?}: {e}"))
}

/// Heredoc files of COPY/ADD as copy sources.
fn inline_sources(files: &[crate::dockerfile::instructions::InlineFile]) -> Vec<InlineSource> {
    files
        .iter()
        .map(|f| InlineSource {
            name: f.name.clone(),
            data: f.data.clone().into_bytes(),
        })
        .collect()
}

fn parse_chmod(s: Option<&str>) -> Result<Option<super::copy::Chmod>, String> {
    s.map(super::copy::Chmod::parse).transpose()
}

fn copy_message(
    name: &str,
    parents: bool,
    chown: Option<&str>,
    chmod: Option<&str>,
    sources: &[String],
    inline: &[crate::dockerfile::instructions::InlineFile],
    dest: &str,
) -> String {
    let mut m = String::from(name);
    if parents {
        m.push_str(" --parents");
    }
    if let Some(c) = chown {
        m.push_str(&format!(" --chown={c}"));
    }
    if let Some(c) = chmod {
        m.push_str(&format!(" --chmod={c}"));
    }
    for s in sources {
        m.push(' ');
        m.push_str(s);
    }
    for f in inline {
        m.push_str(&format!(" <<{}", f.name));
    }
    m.push(' ');
    m.push_str(dest);
    m
}

/// `EXPOSE` words → `port/proto` entries (ranges expanded, ip/host parts dropped).
fn parse_port(raw: &str) -> Result<Vec<String>, String> {
    let (port, proto) = match raw.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (raw, "tcp".to_string()),
    };
    let container = port.rsplit(':').next().unwrap_or(port);
    let bad = || format!("invalid containerPort: {container}");
    let (lo, hi) = match container.split_once('-') {
        Some((a, b)) => (
            a.parse::<u32>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let p = container.parse::<u32>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo || hi > 65535 {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_expand() {
        assert_eq!(parse_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(parse_port("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(parse_port("x").is_err());
    }
}
