//! Cache keys of a stage's steps, and replaying a cached step onto the stage's state.

use super::{meta, shell_argv, StepContext};
use crate::cache::{CachedStep, KeyHasher, StepKey};
use crate::dockerfile::instructions::{Instruction, MountKind};
use crate::error::StepError;
use crate::graph::{StageNode, Step, StepInput, StepOp};
use crate::image::history;
use crate::image::state::StageState;
use crate::options::NamedContext;
use crate::plan::Base;

/// After a step that cannot be keyed (ADD of a URL), later steps key on the content it
/// produced: the snapshot chain is content-addressed.
pub(super) fn reanchor(parent: &StepKey, st: &StageState) -> StepKey {
    KeyHasher::new("reanchor")
        .key("parent", parent)
        .field(
            "chain",
            st.chain
                .as_ref()
                .map(|c| c.as_str())
                .unwrap_or("")
                .as_bytes(),
        )
        .finish()
}

/// An image's (or a stage start's) layers and config, into a key.
fn image_fields(h: &mut KeyHasher, st: &StageState) {
    h.field(
        "chain",
        st.chain
            .as_ref()
            .map(|c| c.as_str())
            .unwrap_or("")
            .as_bytes(),
    );
    h.field(
        "config",
        &serde_json::to_vec(&st.config).unwrap_or_default(),
    );
}

impl StepContext<'_> {
    /// The key a stage starts from: its base stage's last key, a base image's layers and
    /// config, or scratch on this platform.
    pub(super) fn stage_key(&self, node: &StageNode, st: &StageState) -> StepKey {
        let mut h = KeyHasher::new("stage");
        match &node.base {
            Base::Stage(j) => match self.result(*j).and_then(|r| r.key) {
                Some(k) => {
                    h.key("stage", &k);
                }
                None => {
                    h.field("stage-without-key", j.to_string().as_bytes());
                }
            },
            Base::Image(_) | Base::Scratch => {
                h.field("platform", node.platform.to_string().as_bytes());
                image_fields(&mut h, st);
            }
        }
        h.finish()
    }

    /// The key of `step` after `parent`, or `None` when its result cannot be known
    /// before it runs (ADD of a URL).
    pub(super) fn step_key(
        &self,
        parent: &StepKey,
        step: &Step,
        st: &StageState,
    ) -> Result<Option<StepKey>, StepError> {
        let mut h = KeyHasher::new("step");
        h.key("parent", parent);
        h.field("op", format!("{:?}", step.op).as_bytes());
        h.field("env", format!("{:?}", step.env).as_bytes());
        match &step.op {
            StepOp::Meta(Instruction::Arg(_)) => {
                h.field(
                    "build-args",
                    format!("{:?}", self.opts.build_args).as_bytes(),
                );
            }
            StepOp::Meta(_) => {}
            StepOp::Workdir(_) => {
                h.field("user", st.config.config.user.as_bytes());
            }
            StepOp::Copy(op) => {
                if !op.urls.is_empty() {
                    return Ok(None);
                }
                let d = match &op.from {
                    None => {
                        self.digests
                            .sources(&self.opts.context, &op.sources, Some(&self.ignore))?
                    }
                    Some(input) => self.source_key(input, Some(&op.sources))?,
                };
                h.key("sources", &d);
            }
            StepOp::Run(op) => {
                for m in &op.run.mounts {
                    let input = match &m.from {
                        Some(f) => op.mount_sources.get(f).cloned(),
                        None if m.kind == MountKind::Bind => Some(StepInput::Context),
                        None => None,
                    };
                    if let Some(input) = input {
                        let src = m.source.clone().unwrap_or_else(|| ".".into());
                        let d = self.source_key(&input, Some(std::slice::from_ref(&src)))?;
                        h.key("mount", &d);
                    }
                }
                h.field("user", st.config.config.user.as_bytes());
                h.field("shell", format!("{:?}", st.config.config.shell).as_bytes());
                h.field("workdir", st.config.config.working_dir.as_bytes());
            }
        }
        if !matches!(step.op, StepOp::Meta(_)) {
            h.field(
                "layer",
                format!(
                    "{:?} {:?}",
                    self.opts.compression, self.opts.source_date_epoch
                )
                .as_bytes(),
            );
        }
        Ok(Some(h.finish()))
    }

    /// The key of what `input` names: a stage's last key, a directory's (selected)
    /// content, or an image's layers and config.
    fn source_key(
        &self,
        input: &StepInput,
        sources: Option<&[String]>,
    ) -> Result<StepKey, StepError> {
        let all = [".".to_string()];
        let sources = sources.unwrap_or(&all);
        match input {
            StepInput::Context => {
                Ok(self
                    .digests
                    .sources(&self.opts.context, sources, Some(&self.ignore))?)
            }
            StepInput::Stage(j) => Ok(self.result(*j).and_then(|r| r.key).unwrap_or_else(|| {
                KeyHasher::new("unbuilt-stage")
                    .field("stage", j.to_string().as_bytes())
                    .finish()
            })),
            StepInput::Named(name) => {
                if let Some(NamedContext::Dir(d)) = self.opts.named_contexts.get(name) {
                    return Ok(self.digests.sources(d, sources, None)?);
                }
                let st = self.base(name, &self.target_platform())?;
                let mut h = KeyHasher::new("image");
                image_fields(&mut h, &st);
                Ok(h.finish())
            }
        }
    }

    /// Puts a cached step's result onto `st`, with the config change and history entry
    /// the step would have made.
    pub(super) fn replay(&self, st: &mut StageState, step: &Step, hit: CachedStep) {
        let made = hit.layer.is_some();
        match &step.op {
            StepOp::Workdir(w) => {
                let wd = meta::workdir_path(st, w);
                st.config.config.working_dir = wd.clone();
                st.push_cached(hit.chain, hit.layer);
                self.history(st, format!("WORKDIR {wd}"), made);
            }
            StepOp::Copy(op) => {
                st.push_cached(hit.chain, hit.layer);
                self.history(st, format!("{} # buildkit", op.history), made);
            }
            StepOp::Run(op) => {
                let text = history::run(&shell_argv(&st.config, &op.run.command), &st.build_args);
                st.push_cached(hit.chain, hit.layer);
                self.history(st, text, made);
            }
            StepOp::Meta(_) => {}
        }
    }
}
