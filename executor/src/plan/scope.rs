//! ARG and ENV scoping inside a stage, exactly as BuildKit dispatches them.
//!
//! BuildKit keeps one ordered environment per stage (its LLB state's env): it starts as the
//! base image's `Env` (or the base stage's whole environment), and both `ARG` (once it has
//! a value) and `ENV` add or replace entries in it, in instruction order. That environment
//! expands the words of later instructions and is the environment of `RUN`. The image
//! config only receives `ENV`. So:
//! - a global ARG is visible in a stage only after `ARG NAME` re-declares it;
//! - `ARG NAME` with no default and no `--build-arg` leaves NAME absent; `ARG NAME=` sets
//!   it to the empty string;
//! - a `--build-arg` replaces a default without evaluating it;
//! - an `ENV` after an `ARG` of the same name shadows it (and vice versa, in order);
//! - a stage `FROM` another stage inherits that stage's environment and declared ARGs.

use std::collections::BTreeMap;

use crate::dockerfile::instructions::InstructionExpandError;
use crate::dockerfile::instructions::{Command, Instruction};
use crate::dockerfile::shell::{Lexer, ShellError};
use crate::dockerfile::{DockerfileError, Position, Source};

/// The `PATH` a Linux stage gets when its base image sets none (BuildKit's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build arguments that reach RUN without an ARG declaration (and stay out of cache keys).
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// One command after dispatch-time expansion, with the environment in force for it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedCommand {
    pub position: Position,
    /// The last line of the instruction (for code frames showing all of it).
    pub end_line: usize,
    /// The instruction with its words expanded (ARG keeps its raw form).
    pub instruction: Instruction,
    /// The variables in force when it runs: for RUN, its environment (declared ARGs with
    /// values, ENV, the image's env); proxy build args are added by [`StageScope::run_env`].
    pub env: Vec<(String, String)>,
    /// True for an ONBUILD trigger inherited from the base stage.
    pub from_onbuild: bool,
}

/// What evaluation needs besides the scope.
pub struct EvalContext<'a> {
    pub source: &'a Source,
    pub lexer: &'a Lexer,
    pub globals: &'a [(String, String)],
    pub build_args: &'a BTreeMap<String, String>,
}

/// An ARG declared in a stage, with the value it got (`None`: declared, no value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgValue {
    pub key: String,
    pub value: Option<String>,
}

/// The variables in force at one point of a stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageScope {
    /// What expands words and what RUN sees: image env, then ARG and ENV in order.
    env: Vec<(String, String)>,
    /// What the image config's `Env` holds: the base image's env plus ENV instructions.
    image_env: Vec<(String, String)>,
    /// ARGs declared so far (inherited from a base stage first).
    args: Vec<ArgValue>,
}

impl StageScope {
    /// A scope for a stage built on an image (or scratch) whose config has `image_env`.
    pub fn from_image(image_env: Vec<(String, String)>) -> Self {
        StageScope {
            env: image_env.clone(),
            image_env,
            args: Vec::new(),
        }
    }

    /// A scope for a stage `FROM` another stage: it inherits everything the base stage had
    /// at its end.
    pub fn from_stage(base_at_end: &StageScope) -> Self {
        base_at_end.clone()
    }

    /// The environment that expands words and that RUN gets.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The image config's `Env`.
    pub fn image_env(&self) -> &[(String, String)] {
        &self.image_env
    }

    /// The ARGs declared so far, in order.
    pub fn args(&self) -> &[ArgValue] {
        &self.args
    }

    /// Looks up a variable of [`Self::env`].
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `ARG key[=default]`: a `--build-arg` wins without evaluating the default; without
    /// either, a global ARG of that name gives its value; a default is expanded with the
    /// current environment. Returns the value the ARG got.
    pub fn declare_arg(
        &mut self,
        key: &str,
        default: Option<&str>,
        build_args: &BTreeMap<String, String>,
        globals: &[(String, String)],
        lexer: &Lexer,
    ) -> Result<Option<String>, ShellError> {
        let value = if let Some(v) = build_args.get(key) {
            Some(v.clone())
        } else if let Some(d) = default {
            Some(lexer.process_word(d, &self.env)?)
        } else {
            globals
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = &value {
            super::set_var(&mut self.env, key, v.clone());
        }
        self.args.push(ArgValue {
            key: key.to_string(),
            value: value.clone(),
        });
        Ok(value)
    }

    /// `ENV key=value` (value already expanded).
    pub fn set_env(&mut self, key: &str, value: &str) {
        super::set_var(&mut self.env, key, value.to_string());
        super::set_var(&mut self.image_env, key, value.to_string());
    }
}

impl StageScope {
    /// Dispatches `commands` in order as BuildKit does: ARG and ENV change the scope, every
    /// other instruction is expanded with the scope in force before it.
    pub fn evaluate(
        &mut self,
        commands: &[(&Command, bool)],
        ctx: &EvalContext<'_>,
    ) -> Result<Vec<EvaluatedCommand>, DockerfileError> {
        let mut out = Vec::with_capacity(commands.len());
        for (cmd, from_onbuild) in commands {
            let at = |e: ShellError| {
                ctx.source
                    .error_spanning(cmd.position, cmd.end_line, e.to_string())
            };
            let at_expand = |e: InstructionExpandError| {
                ctx.source
                    .error_spanning(cmd.position, cmd.end_line, e.to_string())
            };
            let instruction = match &cmd.instruction {
                Instruction::Arg(a) => {
                    for d in &a.args {
                        self.declare_arg(
                            &d.key,
                            d.value.as_deref(),
                            ctx.build_args,
                            ctx.globals,
                            ctx.lexer,
                        )
                        .map_err(at)?;
                    }
                    cmd.instruction.clone()
                }
                Instruction::Env(_) => {
                    // All pairs are expanded with the scope before the instruction.
                    let expanded = cmd
                        .instruction
                        .expand(ctx.lexer, &self.env)
                        .map_err(at_expand)?;
                    if let Instruction::Env(kvs) = &expanded {
                        for kv in kvs {
                            self.set_env(&kv.key, &kv.value);
                        }
                    }
                    expanded
                }
                other => other.expand(ctx.lexer, &self.env).map_err(at_expand)?,
            };
            out.push(EvaluatedCommand {
                position: cmd.position,
                end_line: cmd.end_line,
                instruction,
                env: self.env.clone(),
                from_onbuild: *from_onbuild,
            });
        }
        Ok(out)
    }

    /// The environment of a RUN: the scope's, plus proxy build args it does not set.
    pub fn run_env(
        env: &[(String, String)],
        build_args: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut out = env.to_vec();
        for key in PROXY_ARGS {
            if let Some(v) = build_args.get(*key) {
                if !out.iter().any(|(k, _)| k == key) {
                    out.push((key.to_string(), v.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_args() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn global_arg_is_visible_only_after_redeclaration() {
        let lexer = Lexer::new('\\');
        let globals = vec![("VERSION".to_string(), "1.2".to_string())];
        let mut s = StageScope::from_image(vec![]);
        assert_eq!(s.get("VERSION"), None);
        let v = s
            .declare_arg("VERSION", None, &no_args(), &globals, &lexer)
            .unwrap();
        assert_eq!(v.as_deref(), Some("1.2"));
        assert_eq!(s.get("VERSION"), Some("1.2"));
    }

    #[test]
    fn arg_without_value_is_absent_and_empty_default_is_present() {
        let lexer = Lexer::new('\\');
        let mut s = StageScope::from_image(vec![]);
        s.declare_arg("FOO", None, &no_args(), &[], &lexer).unwrap();
        s.declare_arg("BAR", Some(""), &no_args(), &[], &lexer)
            .unwrap();
        assert_eq!(s.get("FOO"), None);
        assert_eq!(s.get("BAR"), Some(""));
        assert_eq!(s.args().len(), 2);
    }

    #[test]
    fn build_arg_replaces_default_without_evaluating_it() {
        let lexer = Lexer::new('\\');
        let mut s = StageScope::from_image(vec![]);
        let err = s
            .clone()
            .declare_arg("FOO", Some("${FOO:?custom error}"), &no_args(), &[], &lexer)
            .unwrap_err();
        assert!(err.to_string().contains("custom error"), "{err}");
        let mut ba = no_args();
        ba.insert("FOO".into(), "given".into());
        let v = s
            .declare_arg("FOO", Some("${FOO:?custom error}"), &ba, &[], &lexer)
            .unwrap();
        assert_eq!(v.as_deref(), Some("given"));
    }

    #[test]
    fn defaults_expand_with_earlier_args_and_env_shadows_arg() {
        let lexer = Lexer::new('\\');
        let mut s = StageScope::from_image(vec![("PATH".into(), "/bin".into())]);
        s.declare_arg("A", Some("x"), &no_args(), &[], &lexer)
            .unwrap();
        s.declare_arg("B", Some("$A-y"), &no_args(), &[], &lexer)
            .unwrap();
        assert_eq!(s.get("B"), Some("x-y"));
        s.set_env("A", "from-env");
        assert_eq!(s.get("A"), Some("from-env"));
        assert_eq!(
            s.image_env(),
            &[
                ("PATH".into(), "/bin".into()),
                ("A".into(), "from-env".into())
            ]
        );
        let child = StageScope::from_stage(&s);
        assert_eq!(child.get("B"), Some("x-y"));
    }
}
