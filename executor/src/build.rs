//! The one entry point an embedding program calls: [`Build`] parses the Dockerfile,
//! plans the stages the target needs, resolves base images, lowers the plan to a
//! [`StepGraph`](crate::graph::StepGraph), has the scheduler run it, and exports the
//! image. The caller must already be inside the build's user and mount namespace
//! ([`crate::sandbox::prelude`]); progress arrives as [`Event`]s; the library prints
//! nothing.

use std::collections::BTreeMap;

use crate::cancel::CancelToken;
use crate::error::{BuildError, SetupError};
use crate::event::Event;
use crate::lint::Lint;
use crate::mounts::redact::{RedactedEvents, Redactor};
use crate::options::BuildOptions;
use crate::plan::{Base, PlanOptions, Platform};
use crate::sandbox::userns::IdMapping;
use crate::step::StepContext;

/// The finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub manifest_digest: String,
    pub config_digest: String,
}

/// A build, ready to run.
#[derive(Debug, Clone)]
pub struct Build {
    options: BuildOptions,
    cancel: CancelToken,
}

impl Build {
    pub fn new(options: BuildOptions) -> Build {
        Build {
            options,
            cancel: CancelToken::new(),
        }
    }

    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// The same build, stopped by `cancel` (a token made before the build, e.g. one a
    /// signal handler already holds).
    pub fn cancelled_by(mut self, cancel: CancelToken) -> Build {
        self.cancel = cancel;
        self
    }

    /// The token that stops this build (from another thread, or a signal handler).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Runs the build; `on_event` receives progress, in order.
    pub fn run(&self, on_event: &mut dyn FnMut(Event)) -> Result<BuildResult, BuildError> {
        run(&self.options, &self.cancel, on_event)
    }

    /// Runs the build, sending its progress on `events` (for a caller that renders it on
    /// another thread).
    pub fn run_with_channel(
        &self,
        events: &crossbeam_channel::Sender<Event>,
    ) -> Result<BuildResult, BuildError> {
        self.run(&mut |e| {
            let _ = events.send(e);
        })
    }
}

/// Runs a build (as [`Build::run`]).
pub fn build(
    opts: &BuildOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<BuildResult, BuildError> {
    run(opts, &CancelToken::new(), on_event)
}

/// Runs a build, sending its progress on `events` (as [`Build::run_with_channel`]).
pub fn build_with_channel(
    opts: &BuildOptions,
    events: &crossbeam_channel::Sender<Event>,
) -> Result<BuildResult, BuildError> {
    run(opts, &CancelToken::new(), &mut |e| {
        let _ = events.send(e);
    })
}

/// Reads the secrets first, so that no step name, output line, warning or error shows a
/// secret's value (each is masked, see [`crate::mounts::redact`]).
fn run(
    opts: &BuildOptions,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(Event),
) -> Result<BuildResult, BuildError> {
    let values = crate::mounts::secret::read_values(&opts.secrets)
        .map_err(|e| BuildError::setup("loading secrets", e))?;
    let redactor = Redactor::new(values.iter().map(|(_, v)| v.as_slice()));
    let mut events = RedactedEvents::new(redactor.clone());
    let result = run_masked(opts, cancel, &values, &mut |e| events.forward(e, on_event));
    events.flush(on_event);
    result.map_err(|e| redactor.error(e))
}

fn run_masked(
    opts: &BuildOptions,
    cancel: &CancelToken,
    secrets: &[(String, Vec<u8>)],
    on_event: &mut dyn FnMut(Event),
) -> Result<BuildResult, BuildError> {
    let doc = crate::dockerfile::parser::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut lint = Lint::for_document(&doc);
    lint.secret_values_elsewhere(secrets, &opts.build_args, &opts.dockerfile);
    let mut plan_opts = PlanOptions {
        target: opts.target.clone(),
        build_args: opts.build_args.clone(),
        ..Default::default()
    };
    // Another platform than this machine's: stages without RUN build for it (their base
    // images are that platform's); a RUN would need emulation and is refused before
    // anything runs.
    plan_opts.target_platform = opts.platform.clone();
    plan_opts.named_contexts = opts.named_contexts.keys().cloned().collect();
    let mut plan = crate::plan::plan(&doc, &plan_opts)?;
    lint.secrets_in_arg_or_env(&plan);
    for w in lint.take_warnings() {
        on_event(Event::Warning(w));
    }
    if let Some(rules) = lint.violations() {
        return Err(BuildError::Lint(rules));
    }
    if matches!(opts.mapping, IdMapping::Entered { single: true }) {
        on_event(Event::Warning(
            "kiln runs with the single id mapping (no subordinate ids for this user in /etc/subuid and /etc/subgid): \
             only root exists inside RUN steps, so chown to other ids and USER other than root fail"
                .into(),
        ));
    }
    let mut cx = StepContext::open(opts, doc.source.clone(), cancel.clone(), secrets, on_event)?;
    on_event(Event::Snapshotter {
        kind: cx.snapshots.kind().to_string(),
        reason: cx.snapshots.reason().to_string(),
    });
    // Shared caches first: their entries serve this build's steps. A cache that cannot
    // be read is a warning, as in BuildKit.
    for spec in &opts.cache_from {
        let imported = crate::cache::transfer::import(
            spec,
            cx.cache(),
            &cx.images,
            cx.remote_blobs(),
            || cx.registry(),
            &mut |t| on_event(Event::Transfer(t)),
        );
        match imported {
            Ok(n) => on_event(Event::Exported(format!(
                "imported {n} cache entries from {}",
                spec.describe()
            ))),
            Err(e) => on_event(Event::Warning(format!(
                "--cache-from {}: {e}",
                spec.describe()
            ))),
        }
    }
    // Base images first: their Env and ONBUILD triggers feed the evaluation of the stages.
    let mut env = BTreeMap::new();
    let mut triggers = BTreeMap::new();
    // Base images' working directories, for the mount targets lowering checks.
    let mut workdirs: BTreeMap<String, String> = BTreeMap::new();
    for s in plan.stages.iter().filter(|s| s.needed) {
        let Base::Image(r) = &s.base else { continue };
        if env.contains_key(r) {
            continue;
        }
        let platform = s.platform.clone().unwrap_or_else(|| cx.target_platform());
        cx.fetch_base(r, &platform, on_event)
            .map_err(|e| cx.fail(s.position, e))?;
        let mut st = cx.base(r, &platform).map_err(|e| cx.fail(s.position, e))?;
        for w in std::mem::take(&mut st.warnings) {
            on_event(Event::Warning(format!("{r}: {w}")));
        }
        let parsed = crate::graph::onbuild::parse_triggers(
            &st.config.config.on_build,
            r,
            s.position,
            &doc.source,
        )?;
        env.insert(r.clone(), st.config.env_pairs());
        workdirs.insert(r.clone(), st.config.config.working_dir.clone());
        triggers.insert(r.clone(), parsed);
    }
    // What the base images' triggers copy or mount from joins the plan.
    let built_on_images: Vec<(usize, String)> = plan
        .stages
        .iter()
        .filter(|s| s.needed)
        .filter_map(|s| match &s.base {
            Base::Image(r) => Some((s.index, r.clone())),
            _ => None,
        })
        .collect();
    for (i, r) in built_on_images {
        if let Some(t) = triggers.get(&r) {
            plan.add_trigger_dependencies(i, t, &doc.source)?;
        }
    }
    // Stages that only triggers need may be built on images too.
    for s in plan.stages.iter().filter(|s| s.needed) {
        let Base::Image(r) = &s.base else { continue };
        if !env.contains_key(r) {
            let platform = s.platform.clone().unwrap_or_else(|| cx.target_platform());
            cx.fetch_base(r, &platform, on_event)
                .map_err(|e| cx.fail(s.position, e))?;
            let st = cx.base(r, &platform).map_err(|e| cx.fail(s.position, e))?;
            env.insert(r.clone(), st.config.env_pairs());
            workdirs.insert(r.clone(), st.config.config.working_dir.clone());
        }
    }
    let env_of = |r: &str| env.get(r).cloned().unwrap_or_default();
    let triggers_of = |r: &str| triggers.get(r).cloned().unwrap_or_default();
    let evals = plan.evaluate_with_triggers(&doc.source, &env_of, &triggers_of)?;
    let graph = crate::graph::lower(&plan, &evals, &doc.source, &|r| workdirs.get(r).cloned())?;
    // Images that steps copy or mount from are fetched before anything runs; a RUN for
    // a platform this machine cannot run is refused.
    let host = Platform::host();
    for node in graph.stages.values() {
        let foreign =
            node.platform.os != host.os || node.platform.architecture != host.architecture;
        if let Some(run) = node
            .steps
            .iter()
            .find(|s| matches!(s.op, crate::graph::StepOp::Run(_)))
        {
            if foreign {
                return Err(cx.fail(
                    run.position,
                    crate::error::StepError::Refused(format!(
                        "RUN for {} needs emulation, which kiln does not provide (this machine runs {host}); stages without RUN build for any platform",
                        node.platform
                    )),
                ));
            }
        }
        for step in &node.steps {
            for input in &step.inputs {
                if let crate::graph::StepInput::Named(name) = input {
                    cx.fetch_base(name, &cx.target_platform(), on_event)
                        .map_err(|e| cx.fail(step.position, e))?;
                }
            }
        }
    }
    let no_cache = graph.with_dependents(&opts.no_cache_filter).map_err(|e| {
        BuildError::setup("--no-cache-filter", SetupError::Unsupported(e.to_string()))
    })?;
    cx.set_no_cache_stages(no_cache);
    let jobs = match opts.jobs {
        Some(0) => {
            return Err(BuildError::setup(
                "-j 0",
                SetupError::Unsupported("at least one job is needed".into()),
            ))
        }
        Some(n) => n,
        None => crate::schedule::default_jobs(),
    };
    let scheduled = crate::schedule::run(&cx, &graph, jobs, cancel, on_event);
    cx.save_context_index();
    scheduled?;
    if cancel.is_cancelled() {
        return Err(BuildError::Cancelled);
    }
    let mut target = cx
        .result(graph.target)
        .ok_or_else(|| BuildError::setup("building", SetupError::TargetNotBuilt))?;
    for (k, v) in &opts.labels {
        target.config.config.labels.insert(k.clone(), v.clone());
    }
    let written = crate::export::finish(&cx, &target, on_event)?;
    // mode=min: the target and the stages it is built on; mode=max: every stage.
    let mut lineage = std::collections::BTreeSet::new();
    let mut at = Some(graph.target);
    while let Some(i) = at {
        if !lineage.insert(i) {
            break;
        }
        at = match graph.stages.get(&i).map(|n| &n.base) {
            Some(Base::Stage(j)) => Some(*j),
            _ => None,
        };
    }
    for spec in &opts.cache_to {
        let keys = match spec.mode() {
            crate::cache::transfer::CacheMode::Min => cx.used_keys(Some(&lineage)),
            crate::cache::transfer::CacheMode::Max => cx.used_keys(None),
        };
        let exported = crate::cache::transfer::export(
            spec,
            &keys,
            cx.cache(),
            &cx.images,
            cx.remote_blobs(),
            || cx.registry(),
            &mut |t| on_event(Event::Transfer(t)),
        );
        match exported {
            Ok(n) => on_event(Event::Exported(format!(
                "build cache ({n} entries) to {}",
                spec.describe()
            ))),
            Err(e) if spec.ignore_error() => on_event(Event::Warning(format!(
                "--cache-to {}: {e}",
                spec.describe()
            ))),
            Err(e) => {
                return Err(BuildError::setup(
                    format!("exporting the build cache to {}", spec.describe()),
                    e,
                ))
            }
        }
    }
    Ok(BuildResult {
        manifest_digest: written.manifest_digest,
        config_digest: written.config_digest,
    })
}
