//! The build plan: a Dockerfile's stages turned into the graph of work a target needs.
//!
//! [`plan`] follows BuildKit's `dockerfile2llb` up to (not including) dispatch:
//! - global ARGs (before the first FROM) are evaluated in file order over the automatic
//!   platform ARGs, with `--build-arg` values replacing defaults without evaluating them;
//! - each stage's FROM image expression and `--platform` are expanded with the global
//!   ARGs only; `FROM <name>` is an earlier stage when `<name>` equals (exactly, after
//!   expansion) the name of a stage defined before it, else an image (`scratch` is empty);
//! - `COPY --from` and `RUN --mount from=` name a stage (0-based index, or name compared
//!   case-insensitively) or else an image; ONBUILD triggers of a stage used as a base add
//!   their dependencies to the stage built on it;
//! - cycles are errors, the target is `--target` (case-insensitive) or the last stage,
//!   only stages reachable from it are planned, and a reachable stage that copies or mounts
//!   from a stage defined after it is an error;
//! - stages are grouped in levels: every stage of a level depends only on stages of earlier
//!   levels, so the stages of one level can run in parallel.
//!
//! Stage-local ARG/ENV scoping lives in [`scope`].

pub mod platform;
pub mod scope;

use std::collections::{BTreeMap, BTreeSet};

pub use platform::{Platform, PlatformError};
pub use scope::{ArgValue, EvaluatedCommand, StageScope};

use crate::dockerfile::instructions::{self, Command, Instruction, Parsed, Stage};
use crate::dockerfile::shell::{EnvGetter, Lexer};
use crate::dockerfile::suggest::suggest;
use crate::dockerfile::{DockerfileError, Document, Position};

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// `--target` names no stage.
    #[error("target stage {name:?} could not be found{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownTarget {
        name: String,
        suggestion: Option<String>,
    },
}

/// What the plan is made for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The stage to build; the last stage when `None`.
    pub target: Option<String>,
    /// `--build-arg` values (a key given without a value is resolved by the caller).
    pub build_args: BTreeMap<String, String>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// `--platform`; the build platform when `None`.
    pub target_platform: Option<Platform>,
    /// Names of named contexts (`--build-context NAME=…`): a stage of that name is
    /// replaced by the context, its own instructions not run, as in BuildKit.
    pub named_contexts: BTreeSet<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            target: None,
            build_args: BTreeMap::new(),
            build_platform: Platform::host(),
            target_platform: None,
            named_contexts: BTreeSet::new(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ref")]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// `FROM <earlier stage>`, by index.
    Stage(usize),
    /// An image reference, expanded.
    Image(String),
}

/// How a stage came to depend on something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// `FROM <stage>`.
    From,
    /// `COPY --from=<x>`.
    CopyFrom,
    /// `RUN --mount=...,from=<x>`.
    MountFrom,
    /// A `COPY --from`/`RUN --mount from=` inside an ONBUILD trigger of the base stage.
    Onbuild,
}

/// What a dependency points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ref")]
pub enum DependencyTarget {
    Stage(usize),
    Image(String),
}

/// One edge of the stage graph.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dependency {
    pub kind: DependencyKind,
    pub target: DependencyTarget,
    /// The value as written (`--from=build`).
    pub reference: String,
    /// The instruction that created the edge.
    pub position: Position,
}

/// A stage with everything the plan resolved about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedStage {
    pub index: usize,
    /// The `AS` name, lower-cased.
    pub name: Option<String>,
    /// `name`, or `stage-N` for an unnamed stage.
    pub label: String,
    /// The FROM image expression as written.
    pub base_expression: String,
    pub base: Base,
    /// The expanded `FROM --platform`, if given.
    pub platform: Option<Platform>,
    /// Stage and image dependencies (including `FROM <stage>`), in instruction order.
    pub dependencies: Vec<Dependency>,
    /// Whether the target needs this stage.
    pub needed: bool,
    /// For needed stages: 0 for stages that depend on no stage, else one more than the
    /// highest level among the stages it depends on.
    pub level: Option<usize>,
    pub position: Position,
    #[serde(skip)]
    pub stage: Stage,
}

impl PlannedStage {
    /// The stages this one depends on (base stage included), without repeats.
    pub fn stage_dependencies(&self) -> BTreeSet<usize> {
        self.dependencies
            .iter()
            .filter_map(|d| match d.target {
                DependencyTarget::Stage(i) => Some(i),
                DependencyTarget::Image(_) => None,
            })
            .collect()
    }
}

/// The plan: every stage of the file, which of them the target needs, and the global ARGs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageGraph {
    pub stages: Vec<PlannedStage>,
    /// Index of the target stage.
    pub target: usize,
    /// Global ARGs (automatic platform ARGs plus the ARGs before the first FROM), evaluated.
    pub global_args: Vec<(String, String)>,
    /// The escape character of the file (for later word expansion).
    pub escape: char,
    /// Build arguments as given.
    pub build_args: BTreeMap<String, String>,
    pub target_platform: Platform,
}

impl StageGraph {
    /// Needed stages grouped by level, each level in file order.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for s in &self.stages {
            if let Some(l) = s.level {
                if levels.len() <= l {
                    levels.resize(l + 1, Vec::new());
                }
                levels[l].push(s.index);
            }
        }
        levels
    }

    /// Adds what the ONBUILD `triggers` of stage `stage`'s base image copy or mount from
    /// (known only once the image is resolved): the stages they name become needed, and
    /// `stage` depends on them, as BuildKit dispatches the triggers.
    pub fn add_trigger_dependencies(
        &mut self,
        stage: usize,
        triggers: &[Command],
        source: &crate::dockerfile::Source,
    ) -> Result<(), DockerfileError> {
        let names: Vec<Option<String>> = self.stages.iter().map(|s| s.name.clone()).collect();
        let lexer = Lexer::new(self.escape);
        let mut deps = Vec::new();
        for t in triggers {
            command_dependencies(source, t, &names, &lexer, true, &mut deps)?;
        }
        if deps.is_empty() {
            return Ok(());
        }
        let mut stack: Vec<usize> = deps
            .iter()
            .filter_map(|d| match d.target {
                DependencyTarget::Stage(j) => Some(j),
                DependencyTarget::Image(_) => None,
            })
            .collect();
        self.stages[stage].dependencies.extend(deps);
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut self.stages[i].needed, true) {
                continue;
            }
            stack.extend(self.stages[i].stage_dependencies());
        }
        // Levels again, in file order; a trigger may name a stage defined later, so
        // repeat until nothing moves.
        loop {
            let mut moved = false;
            for i in 0..self.stages.len() {
                if !self.stages[i].needed {
                    continue;
                }
                let level = self.stages[i]
                    .stage_dependencies()
                    .into_iter()
                    .filter(|j| *j != i)
                    .filter_map(|j| self.stages[j].level)
                    .max()
                    .map_or(0, |l| l + 1);
                if self.stages[i].level != Some(level) {
                    self.stages[i].level = Some(level);
                    moved = true;
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// Needed stages in an order where every stage comes after what it depends on.
    pub fn execution_order(&self) -> Vec<usize> {
        self.levels().into_iter().flatten().collect()
    }

    /// Images the needed stages use, by FROM or `--from`, without repeats.
    pub fn images(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in self.stages.iter().filter(|s| s.needed) {
            if let Base::Image(r) = &s.base {
                out.insert(r.clone());
            }
            for d in &s.dependencies {
                if let DependencyTarget::Image(r) = &d.target {
                    out.insert(r.clone());
                }
            }
        }
        out
    }

    /// Dispatches the needed stages' commands in dependency order with BuildKit's ARG/ENV
    /// scoping. `image_env` gives the `Env` of a base image (empty for unknown images;
    /// `PATH` defaults as BuildKit's does when the image sets none). A stage built on a
    /// stage starts from that stage's final scope and first runs its ONBUILD triggers.
    pub fn evaluate(
        &self,
        source: &crate::dockerfile::Source,
        image_env: &dyn Fn(&str) -> Vec<(String, String)>,
    ) -> Result<BTreeMap<usize, StageEvaluation>, DockerfileError> {
        self.evaluate_with_triggers(source, image_env, &|_| Vec::new())
    }

    /// As [`StageGraph::evaluate`], and a stage built on an image first runs the image's
    /// ONBUILD triggers, given parsed by `image_triggers`.
    pub fn evaluate_with_triggers(
        &self,
        source: &crate::dockerfile::Source,
        image_env: &dyn Fn(&str) -> Vec<(String, String)>,
        image_triggers: &dyn Fn(&str) -> Vec<Command>,
    ) -> Result<BTreeMap<usize, StageEvaluation>, DockerfileError> {
        let lexer = Lexer::new(self.escape);
        let ctx = scope::EvalContext {
            source,
            lexer: &lexer,
            globals: &self.global_args,
            build_args: &self.build_args,
        };
        let mut done: BTreeMap<usize, StageEvaluation> = BTreeMap::new();
        let triggers: BTreeMap<usize, Vec<Command>> = self
            .stages
            .iter()
            .filter_map(|s| match &s.base {
                Base::Image(r) if s.needed => Some((s.index, image_triggers(r))),
                _ => None,
            })
            .collect();
        for i in self.execution_order() {
            let stage = &self.stages[i];
            let mut commands: Vec<(&Command, bool)> = Vec::new();
            if let Some(t) = triggers.get(&i) {
                commands.extend(t.iter().map(|c| (c, true)));
            }
            let mut scope = match &stage.base {
                Base::Stage(j) => {
                    for c in &self.stages[*j].stage.commands {
                        if let Instruction::Onbuild(ob) = &c.instruction {
                            commands.push((&ob.trigger, true));
                        }
                    }
                    match done.get(j) {
                        Some(e) => StageScope::from_stage(&e.end),
                        None => StageScope::default(),
                    }
                }
                Base::Scratch => StageScope::from_image(Vec::new()),
                Base::Image(r) => StageScope::from_image(image_env(r)),
            };
            if !matches!(stage.base, Base::Stage(_)) && scope.get("PATH").is_none() {
                scope = StageScope::from_image(
                    scope
                        .image_env()
                        .iter()
                        .cloned()
                        .chain([("PATH".to_string(), scope::DEFAULT_PATH.to_string())])
                        .collect(),
                );
            }
            commands.extend(stage.stage.commands.iter().map(|c| (c, false)));
            let evaluated = scope.evaluate(&commands, &ctx)?;
            done.insert(
                i,
                StageEvaluation {
                    commands: evaluated,
                    end: scope,
                },
            );
        }
        Ok(done)
    }
}

/// A stage after dispatch-time evaluation.
#[derive(Debug, Clone)]
pub struct StageEvaluation {
    pub commands: Vec<scope::EvaluatedCommand>,
    /// The scope at the end of the stage (what a stage built on it inherits).
    pub end: StageScope,
}

/// Makes the plan for `doc`.
pub fn plan(doc: &Document, opts: &PlanOptions) -> Result<StageGraph, PlanError> {
    let Parsed { meta_args, stages } = instructions::parse_document(doc)?;
    let source = &doc.source;
    if stages.is_empty() {
        return Err(source
            .error(
                Position::new(doc.start_line.max(1), 1),
                "dockerfile contains no stages to build",
            )
            .into());
    }
    let lexer = Lexer::new(doc.escape);
    let target_platform = opts
        .target_platform
        .clone()
        .unwrap_or_else(|| opts.build_platform.clone());

    // TARGETSTAGE: the --target as given, else the last stage's name.
    let target_stage_name = opts
        .target
        .clone()
        .or_else(|| stages.last().and_then(|s| s.name.clone()))
        .unwrap_or_default();
    let mut globals =
        Platform::automatic_args(&opts.build_platform, &target_platform, &target_stage_name);
    for (k, v) in globals.iter_mut() {
        if let Some(o) = opts.build_args.get(k) {
            *v = o.clone();
        }
    }
    for cmd in &meta_args {
        for decl in &cmd.args {
            let value = match (opts.build_args.get(&decl.key), &decl.value) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(default)) => Some(
                    lexer
                        .process_word(default, &globals)
                        .map_err(|e| source.error(cmd.position, e.to_string()))?,
                ),
                (None, None) => None,
            };
            if let Some(v) = value {
                set_var(&mut globals, &decl.key, v);
            }
        }
    }

    // Resolve every stage's base and platform with the global ARGs only.
    let mut planned: Vec<PlannedStage> = Vec::with_capacity(stages.len());
    for (i, mut st) in stages.into_iter().enumerate() {
        let replaced = st
            .name
            .as_ref()
            .is_some_and(|n| opts.named_contexts.contains(n));
        if replaced {
            // The named context is the stage: FROM that context, nothing of its own.
            st.base = st.name.clone().unwrap_or_default();
            st.platform = None;
            st.commands.clear();
        }
        let expanded = lexer
            .process_word(&st.base, &globals)
            .map_err(|e| source.error_spanning(st.position, st.end_line, e.to_string()))?;
        if expanded.is_empty() {
            return Err(source
                .error_spanning(
                    st.position,
                    st.end_line,
                    format!("base name ({}) should not be blank", st.base),
                )
                .into());
        }
        let platform = match &st.platform {
            None => None,
            Some(expr) => {
                let p = lexer.process_word(expr, &globals).map_err(|e| {
                    source.error_spanning(
                        st.position,
                        st.end_line,
                        format!("failed to process arguments for platform {expr}: {e}"),
                    )
                })?;
                if p.is_empty() {
                    return Err(source
                        .error_spanning(
                            st.position,
                            st.end_line,
                            format!("empty platform value from expression {expr}"),
                        )
                        .into());
                }
                Some(Platform::parse(&p).map_err(|e| {
                    source.error_spanning(
                        st.position,
                        st.end_line,
                        format!("failed to parse platform {expr}: {e}"),
                    )
                })?)
            }
        };
        let base = if replaced {
            Base::Image(expanded)
        } else if let Some(j) = planned
            .iter()
            .position(|p| p.name.as_deref() == Some(expanded.as_str()))
        {
            Base::Stage(j)
        } else if expanded == "scratch" {
            Base::Scratch
        } else {
            Base::Image(expanded)
        };
        let mut dependencies = Vec::new();
        if let Base::Stage(j) = base {
            dependencies.push(Dependency {
                kind: DependencyKind::From,
                target: DependencyTarget::Stage(j),
                reference: st.base.clone(),
                position: st.position,
            });
        }
        planned.push(PlannedStage {
            index: i,
            label: st.name.clone().unwrap_or_else(|| format!("stage-{i}")),
            name: st.name.clone(),
            base_expression: st.base.clone(),
            base,
            platform,
            dependencies,
            needed: false,
            level: None,
            position: st.position,
            stage: st,
        });
    }

    // Dependencies through --from and mounts (names can point anywhere in the file; a
    // forward reference is an error only for stages that are actually built).
    let names: Vec<Option<String>> = planned.iter().map(|p| p.name.clone()).collect();
    for i in 0..planned.len() {
        let mut deps = Vec::new();
        for cmd in &planned[i].stage.commands {
            command_dependencies(source, cmd, &names, &lexer, false, &mut deps)?;
        }
        if let Base::Stage(j) = planned[i].base {
            for cmd in &planned[j].stage.commands {
                if let Instruction::Onbuild(ob) = &cmd.instruction {
                    command_dependencies(source, &ob.trigger, &names, &lexer, true, &mut deps)?;
                }
            }
        }
        planned[i].dependencies.extend(deps);
    }

    check_cycles(source, &planned)?;

    let target = match &opts.target {
        None => planned.len() - 1,
        Some(t) => {
            let lower = t.to_lowercase();
            planned
                .iter()
                .position(|p| p.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| PlanError::UnknownTarget {
                    name: t.clone(),
                    suggestion: suggest(t, planned.iter().filter_map(|p| p.name.as_deref()), true),
                })?
        }
    };

    // Reachability from the target.
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut planned[i].needed, true) {
            continue;
        }
        stack.extend(planned[i].stage_dependencies());
    }

    // Forward references among needed stages, in file order (as BuildKit dispatches).
    for p in planned.iter().filter(|p| p.needed) {
        for d in &p.dependencies {
            let DependencyTarget::Stage(j) = d.target else {
                continue;
            };
            if j < p.index {
                continue;
            }
            let msg = match d.kind {
                DependencyKind::MountFrom => format!(
                    "cannot mount from stage {:?} to {:?}, stage needs to be defined before current command",
                    d.reference,
                    mount_target_of(&p.stage, d).unwrap_or_default()
                ),
                _ => format!(
                    "cannot copy from stage {:?}, it needs to be defined before current stage {:?}",
                    d.reference, p.label
                ),
            };
            return Err(source.error(d.position, msg).into());
        }
    }

    // Levels: every dependency is earlier in the file now, so one pass in file order works.
    for i in 0..planned.len() {
        if !planned[i].needed {
            continue;
        }
        let level = planned[i]
            .stage_dependencies()
            .into_iter()
            .filter_map(|j| planned[j].level)
            .max()
            .map_or(0, |l| l + 1);
        planned[i].level = Some(level);
    }

    Ok(StageGraph {
        stages: planned,
        target,
        global_args: globals,
        escape: doc.escape,
        build_args: opts.build_args.clone(),
        target_platform,
    })
}

/// Adds or replaces `key` in an ordered variable list.
pub(crate) fn set_var(vars: &mut Vec<(String, String)>, key: &str, value: String) {
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => vars.push((key.to_string(), value)),
    }
}

/// Records the `COPY --from` and `RUN --mount from=` edges of one command.
fn command_dependencies(
    source: &crate::dockerfile::Source,
    cmd: &Command,
    names: &[Option<String>],
    lexer: &Lexer,
    onbuild: bool,
    out: &mut Vec<Dependency>,
) -> Result<(), DockerfileError> {
    let empty: Vec<(String, String)> = Vec::new();
    let kind_for = |k: DependencyKind| if onbuild { DependencyKind::Onbuild } else { k };
    match &cmd.instruction {
        Instruction::Copy(c) => {
            let Some(from) = &c.from else { return Ok(()) };
            let unexpanded = lexer.process_word(from, &empty as &dyn EnvGetter).ok();
            if unexpanded.as_deref() != Some(from.as_str()) {
                return Err(source.error_spanning(
                    cmd.position,
                    cmd.end_line,
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                ));
            }
            let target = if let Ok(index) = from.parse::<i64>() {
                if index < 0 || index as usize >= names.len() {
                    return Err(source.error_spanning(
                        cmd.position,
                        cmd.end_line,
                        format!("invalid stage index {index}"),
                    ));
                }
                DependencyTarget::Stage(index as usize)
            } else {
                stage_or_image(from, names)
            };
            out.push(Dependency {
                kind: kind_for(DependencyKind::CopyFrom),
                target,
                reference: from.clone(),
                position: cmd.position,
            });
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                let Some(from) = m.from.as_deref().filter(|f| !f.is_empty()) else {
                    continue;
                };
                out.push(Dependency {
                    kind: kind_for(DependencyKind::MountFrom),
                    target: stage_or_image(from, names),
                    reference: from.to_string(),
                    position: cmd.position,
                });
            }
        }
        _ => {}
    }
    Ok(())
}

fn stage_or_image(reference: &str, names: &[Option<String>]) -> DependencyTarget {
    let lower = reference.to_lowercase();
    match names
        .iter()
        .position(|n| n.as_deref() == Some(lower.as_str()))
    {
        Some(j) => DependencyTarget::Stage(j),
        None => DependencyTarget::Image(reference.to_string()),
    }
}

fn mount_target_of(stage: &Stage, dep: &Dependency) -> Option<String> {
    stage.commands.iter().find_map(|c| match &c.instruction {
        Instruction::Run(r) if c.position == dep.position => r
            .mounts
            .iter()
            .find(|m| m.from.as_deref() == Some(dep.reference.as_str()))
            .and_then(|m| m.target.clone()),
        _ => None,
    })
}

/// Finds a dependency cycle among stages, reporting it as BuildKit does.
fn check_cycles(
    source: &crate::dockerfile::Source,
    stages: &[PlannedStage],
) -> Result<(), DockerfileError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(i: usize, stages: &[PlannedStage], marks: &mut [Mark]) -> Option<Position> {
        marks[i] = Mark::OnPath;
        for d in &stages[i].dependencies {
            let DependencyTarget::Stage(j) = d.target else {
                continue;
            };
            match marks[j] {
                Mark::OnPath => return Some(d.position),
                Mark::New => {
                    if let Some(p) = visit(j, stages, marks) {
                        return Some(p);
                    }
                }
                Mark::Done => {}
            }
        }
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; stages.len()];
    for i in 0..stages.len() {
        if marks[i] == Mark::New {
            if let Some(pos) = visit(i, stages, &mut marks) {
                return Err(source.error(
                    pos,
                    format!("circular dependency detected on stage: {}", stages[i].label),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
