//! The step graph: the plan lowered to the steps a build runs, each with everything it
//! reads named, so a scheduler can walk it and a cache can key it.
//!
//! Lowering settles what the step runners would otherwise re-read from the Dockerfile:
//! the shell form of a RUN with heredocs becomes the script it runs ([`RunScript`]),
//! `--chmod` is parsed, `COPY --from`/`RUN --mount from=` name a stage or another source
//! ([`StepInput`]), ADD's URLs are told from its local sources, and ONBUILD triggers of
//! base images are parsed ([`onbuild`]). Errors found here stop the build before
//! anything runs, with the instruction's position.

mod lower;
pub mod onbuild;

use std::collections::{BTreeMap, BTreeSet};

pub use lower::lower;

use crate::dockerfile::chmod::Chmod;
use crate::dockerfile::instructions::{Instruction, RunCommand};
use crate::dockerfile::Position;
use crate::plan::Base;

/// Every stage the target needs, as steps.
#[derive(Debug, Clone)]
pub struct StepGraph {
    /// Needed stages by index.
    pub stages: BTreeMap<usize, StageNode>,
    /// The stage whose result is the image.
    pub target: usize,
    /// The file's escape character (ARG defaults are expanded when they run).
    pub escape: char,
    /// Global ARGs, evaluated.
    pub global_args: Vec<(String, String)>,
}

impl StepGraph {
    /// Needed stages in an order where each comes after every stage it needs.
    pub fn order(&self) -> Vec<usize> {
        let mut done = BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < self.stages.len() {
            let before = out.len();
            for (i, s) in &self.stages {
                if !done.contains(i) && s.needs.iter().all(|n| done.contains(n)) {
                    done.insert(*i);
                    out.push(*i);
                }
            }
            if out.len() == before {
                break; // the plan has no cycles; never reached
            }
        }
        out
    }
}

impl StepGraph {
    /// The stages named in `names` (a stage name, case-insensitively, or its index)
    /// and every stage that is built on or reads from one of them; `Err` with the first
    /// name that is no needed stage.
    pub fn with_dependents(&self, names: &[String]) -> Result<BTreeSet<usize>, UnknownStage> {
        let mut out = BTreeSet::new();
        for n in names {
            let lower = n.to_ascii_lowercase();
            let found = self
                .stages
                .values()
                .find(|s| s.label == lower || s.index.to_string() == *n)
                .map(|s| s.index);
            match found {
                Some(i) => {
                    out.insert(i);
                }
                None => return Err(UnknownStage(n.clone())),
            }
        }
        for i in self.order() {
            if self.stages[&i].needs.iter().any(|d| out.contains(d)) {
                out.insert(i);
            }
        }
        Ok(out)
    }
}

/// A stage name that is not part of the build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no stage {0:?} is part of this build")]
pub struct UnknownStage(pub String);

/// One stage: where it starts, its steps in order, and the stages it needs first.
#[derive(Debug, Clone)]
pub struct StageNode {
    pub index: usize,
    /// The `AS` name, or `stage-N`.
    pub label: String,
    pub base: Base,
    /// The platform the stage is for: `FROM --platform`, else the build's.
    pub platform: crate::plan::Platform,
    pub position: Position,
    pub steps: Vec<Step>,
    /// Stages that must be built before this one starts (its base and everything its
    /// steps copy or mount from).
    pub needs: BTreeSet<usize>,
}

/// One step of a stage.
#[derive(Debug, Clone)]
pub struct Step {
    pub position: Position,
    /// The instruction's first line as written (what progress shows).
    pub text: String,
    /// The variables in force for it (a RUN's environment, before proxy args).
    pub env: Vec<(String, String)>,
    /// True for an ONBUILD trigger inherited from the base.
    pub from_onbuild: bool,
    pub op: StepOp,
    /// What the step reads besides its stage's filesystem.
    pub inputs: Vec<StepInput>,
}

/// What a step reads besides its own stage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StepInput {
    /// The build context.
    Context,
    /// Another stage's result.
    Stage(usize),
    /// A named context or an image, by the name written.
    Named(String),
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepOp {
    /// A config-only instruction (ENV, LABEL, ARG, CMD, …): no filesystem change.
    Meta(Instruction),
    /// `WORKDIR path` (as written; made absolute against the current WORKDIR).
    Workdir(String),
    Copy(Box<CopyOp>),
    Run(Box<RunOp>),
}

/// COPY or ADD.
#[derive(Debug, Clone)]
pub struct CopyOp {
    pub add: bool,
    /// Local source patterns (relative to the context or the `from` source).
    pub sources: Vec<String>,
    /// ADD's http(s) sources.
    pub urls: Vec<String>,
    /// Heredoc files.
    pub inline: Vec<InlineFile>,
    pub dest: String,
    /// `--from`.
    pub from: Option<StepInput>,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub excludes: Vec<String>,
    pub parents: bool,
    /// ADD `--checksum` (of the URL's content).
    pub checksum: Option<String>,
    /// ADD `--unpack`: `Some(false)` keeps local archives packed.
    pub unpack: Option<bool>,
    /// `--link`: the files form a layer of their own, made on an empty tree and put on
    /// top of the stage (so it does not depend on what is below).
    pub link: bool,
    /// The history entry's text, as BuildKit writes it.
    pub history: String,
}

/// A file a COPY/ADD heredoc makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    pub data: Vec<u8>,
}

/// RUN.
#[derive(Debug, Clone)]
pub struct RunOp {
    pub run: RunCommand,
    pub script: RunScript,
    /// `from=` of each mount that has one, resolved.
    pub mount_sources: BTreeMap<String, StepInput>,
}

/// What a RUN executes, heredocs settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript {
    /// The command as written (exec form, or shell form through the stage's SHELL).
    AsWritten,
    /// Shell form whose command string is this text (heredocs folded in).
    Shell(String),
    /// A lone heredoc with a `#!` line: the body is a file run directly, at
    /// `/dev/pipes/<name>`.
    File { name: String, content: String },
}
