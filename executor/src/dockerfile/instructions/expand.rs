//! Dispatch-time word expansion: exactly the fields BuildKit expands, per instruction.
//!
//! - ENV, LABEL: keys and values; WORKDIR, USER, STOPSIGNAL, VOLUME: their words (and
//!   the expanded STOPSIGNAL must name a signal, [`super::signal`]);
//! - COPY, ADD: sources, destination, `--chown`, `--chmod` (and ADD's `--checksum`), never
//!   `--from`; heredoc files with an unquoted delimiter get `$var` expansion with quotes
//!   kept literally;
//! - EXPOSE: each word, split into several ports (`EXPOSE $PORTS`);
//! - RUN: its `--mount` values (every key but `from`), then the mount is validated;
//! - RUN/CMD/ENTRYPOINT command text, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER: never.
//!
//! ARG is not handled here: its default is expanded by the stage scope (`plan::scope`).

use super::mount::{parse_mount, MountSpecError};
use super::signal::{parse_stop_signal, InvalidSignal};
use super::{Instruction, KeyValue};
use crate::dockerfile::shell::{EnvGetter, Lexer, ShellError};

/// Why an instruction's words could not be expanded at dispatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionExpandError {
    /// A word did not expand.
    #[error(transparent)]
    Shell(#[from] ShellError),
    /// A `RUN --mount` value is not valid once expanded.
    #[error(transparent)]
    Mount(#[from] MountSpecError),
    /// A STOPSIGNAL that names no signal once expanded.
    #[error(transparent)]
    StopSignal(#[from] InvalidSignal),
}

impl Instruction {
    /// This instruction with its words expanded by `lexer` over `env`.
    pub fn expand(
        &self,
        lexer: &Lexer,
        env: &dyn EnvGetter,
    ) -> Result<Instruction, InstructionExpandError> {
        let word = |w: &str| lexer.process_word(w, env);
        let opt = |w: &Option<String>| -> Result<Option<String>, ShellError> {
            w.as_deref().map(word).transpose()
        };
        let words = |ws: &[String]| -> Result<Vec<String>, ShellError> {
            ws.iter().map(|w| word(w)).collect()
        };
        let kvs = |kv: &[KeyValue]| -> Result<Vec<KeyValue>, ShellError> {
            kv.iter()
                .map(|p| {
                    Ok(KeyValue {
                        key: word(&p.key)?,
                        value: word(&p.value)?,
                    })
                })
                .collect()
        };
        // Heredoc files: BuildKit expands them with a `\` lexer that leaves quotes alone.
        let raw_lexer = Lexer::new('\\').skip_process_quotes(true);
        let inline = |files: &[super::InlineFile]| -> Result<Vec<super::InlineFile>, ShellError> {
            files
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    if f.expand {
                        f.data = raw_lexer.process_word(&f.data, env)?;
                    }
                    Ok(f)
                })
                .collect()
        };
        Ok(match self {
            Instruction::Env(kv) => Instruction::Env(kvs(kv)?),
            Instruction::Label(kv) => Instruction::Label(kvs(kv)?),
            Instruction::Workdir(p) => Instruction::Workdir(word(p)?),
            Instruction::User(u) => Instruction::User(word(u)?),
            Instruction::Stopsignal(s) => {
                let signal = word(s)?;
                parse_stop_signal(&signal)?;
                Instruction::Stopsignal(signal)
            }
            Instruction::Volume(v) => Instruction::Volume(words(v)?),
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(lexer.process_words(p, env)?);
                }
                Instruction::Expose(out)
            }
            Instruction::Copy(c) => {
                let mut c = c.clone();
                c.chown = opt(&c.chown)?;
                c.chmod = opt(&c.chmod)?;
                c.sources = words(&c.sources)?;
                c.dest = word(&c.dest)?;
                c.inline_files = inline(&c.inline_files)?;
                Instruction::Copy(c)
            }
            Instruction::Add(a) => {
                let mut a = a.clone();
                a.chown = opt(&a.chown)?;
                a.chmod = opt(&a.chmod)?;
                a.checksum = opt(&a.checksum)?;
                a.sources = words(&a.sources)?;
                a.dest = word(&a.dest)?;
                a.inline_files = inline(&a.inline_files)?;
                Instruction::Add(a)
            }
            Instruction::Run(r) => {
                let mut r = r.clone();
                let expand = |v: &str| lexer.process_word(v, env);
                r.mounts = r
                    .mount_specs
                    .iter()
                    .map(|spec| {
                        let from = parse_mount(spec, None)?.from;
                        let mut m = parse_mount(spec, Some(&expand))?;
                        m.from = from;
                        Ok(m)
                    })
                    .collect::<Result<Vec<_>, MountSpecError>>()?;
                Instruction::Run(r)
            }
            other => other.clone(),
        })
    }
}
