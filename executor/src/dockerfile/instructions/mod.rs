//! Typed instructions: parse-tree nodes checked and turned into [`Instruction`]s grouped in
//! [`Stage`]s, as BuildKit's `instructions` package does.
//!
//! Words keep their raw text here (quotes, `$` references); they are expanded when the
//! stage is dispatched, with the stage's variables ([`Instruction::expand`]). Flags are
//! validated now ([`flags`]); `RUN --mount` values are parsed now when they hold no
//! variable and again at dispatch otherwise ([`mount`]).

mod arguments;
pub mod device;
pub mod duration;
mod expand;
pub mod flags;
pub mod mount;
pub mod run;
pub mod signal;

use std::time::Duration;

pub use arguments::ArgumentsError;
pub use device::{DeviceSpecError, RunDevice};
pub use duration::DurationError;
pub use expand::InstructionExpandError;
pub use mount::{CacheSharing, CsvError, MountKind, MountSpecError, RunMount};
pub use run::RunOptionError;
pub use signal::{parse_stop_signal, InvalidSignal};

use self::arguments::{key_values, sources_and_dest};
use self::flags::{parse_flags, FlagKind, FlagValues};
use super::ast::{Document, Heredoc, Node};
use super::source::{DockerfileError, Position, Source};
use super::suggest::suggest;

/// A Dockerfile's meta ARGs (before the first FROM) and its stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub meta_args: Vec<ArgCommand>,
    pub stages: Vec<Stage>,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The `AS` name, lower-cased and validated.
    pub name: Option<String>,
    /// The image expression as written (not expanded).
    pub base: String,
    /// `--platform` as written (not expanded).
    pub platform: Option<String>,
    pub commands: Vec<Command>,
    pub position: Position,
    /// The last line of the FROM instruction (continuations included).
    pub end_line: usize,
    /// The FROM line, trimmed.
    pub original: String,
    /// The text of a `# <name> <description>` comment right above the FROM.
    pub doc_comment: Option<String>,
}

/// One instruction inside a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub position: Position,
    pub end_line: usize,
    /// The instruction line as written (without heredoc bodies).
    pub original: String,
    pub instruction: Instruction,
}

/// A typed instruction (every instruction but FROM, which starts a [`Stage`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Arg(ArgCommand),
    Run(RunCommand),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    Shell(Vec<String>),
    Copy(CopyCommand),
    Add(AddCommand),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Onbuild(OnbuildCommand),
    Stopsignal(String),
    Healthcheck(HealthcheckCommand),
}

impl Instruction {
    /// The instruction keyword in upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Arg(_) => "ARG",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

/// `key=value` of ENV and LABEL; the value is raw (quotes kept) until expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `ARG a b=c …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCommand {
    pub position: Position,
    pub args: Vec<ArgDecl>,
}

/// One name of an ARG and its default, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    pub value: Option<String>,
    /// From a `# KEY description` comment above the ARG.
    pub doc_comment: Option<String>,
}

/// Shell form (run through the stage's SHELL) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCommand {
    pub command: ShellOrExec,
    /// Heredoc bodies named in the command (`RUN <<EOF`), raw.
    pub heredocs: Vec<Heredoc>,
    /// Mounts as read at parse time (complete unless `needs_expansion`).
    pub mounts: Vec<RunMount>,
    /// The raw `--mount` values, for expansion at dispatch.
    pub mount_specs: Vec<String>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// `--device` requests (CDI device names), in order, never expanded. BuildKit parses
    /// them everywhere, but its stable (non-labs) frontend fails the RUN at dispatch when
    /// any is present: `device feature is only supported in Dockerfile frontend
    /// 1.14.0-labs or later`.
    pub devices: Vec<RunDevice>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Default,
    None,
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

/// A heredoc used as a COPY/ADD source: a file named after its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    /// The body (tabs already stripped for `<<-`).
    pub data: String,
    /// Whether `$` references in the body are expanded.
    pub expand: bool,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    /// Path sources (heredoc sources are in `inline_files`).
    pub sources: Vec<String>,
    pub inline_files: Vec<InlineFile>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCommand {
    pub sources: Vec<String>,
    pub inline_files: Vec<InlineFile>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub excludes: Vec<String>,
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCommand {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`, as the image config stores it.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// `ONBUILD <instruction>`.
#[derive(Debug, Clone, PartialEq)]
pub struct OnbuildCommand {
    /// The trigger text as the image config stores it (heredoc bodies appended).
    pub expression: String,
    /// The trigger, parsed.
    pub trigger: Box<Command>,
}

const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// What a node became: a new stage or a command.
enum Parsed1 {
    Stage(Stage),
    Command(Command),
}

/// Turns a parsed Dockerfile into stages (BuildKit's `instructions.Parse`).
pub fn parse_document(doc: &Document) -> Result<Parsed, DockerfileError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &doc.nodes {
        match parse_node(&doc.source, doc.escape, node)? {
            Parsed1::Stage(s) => stages.push(s),
            Parsed1::Command(c) => match stages.last_mut() {
                Some(stage) => stage.commands.push(c),
                None => match c.instruction {
                    Instruction::Arg(a) => meta_args.push(a),
                    _ => {
                        return Err(doc.source.error_spanning(
                            node.start,
                            node.end_line,
                            "no build stage in current context",
                        ))
                    }
                },
            },
        }
    }
    Ok(Parsed { meta_args, stages })
}

/// Parses a single instruction node that is not FROM (e.g. an ONBUILD trigger).
pub fn parse_command(
    source: &Source,
    escape: char,
    node: &Node,
) -> Result<Command, DockerfileError> {
    match parse_node(source, escape, node)? {
        Parsed1::Command(c) => Ok(c),
        Parsed1::Stage(_) => Err(source.error(node.start, "FROM is not a command type")),
    }
}

fn doc_comment(comments: &[String], name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    comments
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
}

fn parse_node(source: &Source, escape: char, node: &Node) -> Result<Parsed1, DockerfileError> {
    let err = |msg: String| source.error_spanning(node.start, node.end_line, msg);
    let args = &node.args;
    let flags = |known: &[(&'static str, FlagKind)]| parse_flags(source, node, known);
    let command = |instruction: Instruction| {
        Parsed1::Command(Command {
            position: node.start,
            end_line: node.end_line,
            original: node.original.clone(),
            instruction,
        })
    };
    let exactly_one = |kw: &str| -> Result<String, DockerfileError> {
        match args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(err(format!("{kw} requires exactly one argument"))),
        }
    };
    let at_least_one = |kw: &str| -> Result<(), DockerfileError> {
        if args.is_empty() {
            Err(err(format!("{kw} requires at least one argument")))
        } else {
            Ok(())
        }
    };
    let shell_or_exec = |empty_as_exec: bool| -> ShellOrExec {
        if node.json {
            ShellOrExec::Exec(args.clone())
        } else if args.is_empty() && empty_as_exec {
            ShellOrExec::Exec(Vec::new())
        } else {
            ShellOrExec::Shell(args.join(" "))
        }
    };
    Ok(match node.keyword.as_str() {
        "from" => {
            let name = match args.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(err(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            super::dump::go_quote(name)
                        )));
                    }
                    Some(lower)
                }
                [_] => None,
                _ => return Err(err("FROM requires either one or three arguments".into())),
            };
            let f = flags(&[("platform", FlagKind::String)])?;
            Parsed1::Stage(Stage {
                doc_comment: name
                    .as_deref()
                    .and_then(|n| doc_comment(&node.prev_comments, n)),
                name,
                base: args[0].clone(),
                platform: f.string("platform"),
                commands: Vec::new(),
                position: node.start,
                end_line: node.end_line,
                original: node.original.trim().to_string(),
            })
        }
        "env" | "label" => {
            flags(&[])?;
            let kw = node.keyword.to_uppercase();
            let pairs = key_values(args, &kw).map_err(|e| err(e.to_string()))?;
            command(if kw == "ENV" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            })
        }
        "maintainer" => {
            let m = exactly_one("MAINTAINER")?;
            flags(&[])?;
            command(Instruction::Maintainer(m))
        }
        "arg" => {
            at_least_one("ARG")?;
            let mut decls = Vec::new();
            for a in args {
                let (key, value) = match a.split_once('=') {
                    Some(("", _)) => return Err(err("ARG names can not be blank".into())),
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (a.clone(), None),
                };
                decls.push(ArgDecl {
                    doc_comment: doc_comment(&node.prev_comments, &key),
                    key,
                    value,
                });
            }
            command(Instruction::Arg(ArgCommand {
                position: node.start,
                args: decls,
            }))
        }
        "copy" | "add" => {
            let kw = node.keyword.to_uppercase();
            if args.len() < 2 {
                return Err(err(format!(
                    "{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
                )));
            }
            let is_copy = kw == "COPY";
            let f: FlagValues = if is_copy {
                flags(&[
                    ("chown", FlagKind::String),
                    ("from", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                    ("parents", FlagKind::Bool),
                ])?
            } else {
                flags(&[
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("keep-git-dir", FlagKind::Bool),
                    ("checksum", FlagKind::String),
                    ("unpack", FlagKind::Bool),
                    ("exclude", FlagKind::Strings),
                ])?
            };
            let (sources, inline_files, dest) =
                sources_and_dest(node, &kw).map_err(|e| err(e.to_string()))?;
            if is_copy {
                if let Some(url) = sources
                    .iter()
                    .find(|s| s.starts_with("http://") || s.starts_with("https://"))
                {
                    let _ = url;
                    return Err(err("source can't be a URL for COPY".into()));
                }
            }
            let non_empty = |s: Option<String>| s.filter(|v| !v.is_empty());
            if is_copy {
                command(Instruction::Copy(CopyCommand {
                    sources,
                    inline_files,
                    dest,
                    from: non_empty(f.string("from")),
                    chown: non_empty(f.string("chown")),
                    chmod: non_empty(f.string("chmod")),
                    link: f.bool("link").unwrap_or(false),
                    parents: f.bool("parents").unwrap_or(false),
                    excludes: f.list("exclude"),
                }))
            } else {
                command(Instruction::Add(AddCommand {
                    sources,
                    inline_files,
                    dest,
                    chown: non_empty(f.string("chown")),
                    chmod: non_empty(f.string("chmod")),
                    link: f.bool("link").unwrap_or(false),
                    excludes: f.list("exclude"),
                    keep_git_dir: f.bool("keep-git-dir"),
                    checksum: non_empty(f.string("checksum")),
                    unpack: f.bool("unpack"),
                }))
            }
        }
        "onbuild" => {
            let Some(child) = node.child.as_deref() else {
                return Err(err("ONBUILD requires at least one argument".into()));
            };
            flags(&[])?;
            let trigger = child.keyword_as_written.trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(err(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()
                    ))
                }
                "MAINTAINER" | "FROM" => {
                    return Err(err(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )))
                }
                _ => {}
            }
            let mut expression = strip_onbuild_prefix(&node.original).to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            let mut child = child.clone();
            child.heredocs = node.heredocs.clone();
            let trigger = parse_command(source, escape, &child)?;
            command(Instruction::Onbuild(OnbuildCommand {
                expression,
                trigger: Box::new(trigger),
            }))
        }
        "workdir" => {
            let p = exactly_one("WORKDIR")?;
            flags(&[])?;
            command(Instruction::Workdir(p))
        }
        "run" => {
            let f = flags(&[
                ("mount", FlagKind::Strings),
                ("network", FlagKind::String),
                ("security", FlagKind::String),
                ("device", FlagKind::Strings),
            ])?;
            let run = run::run_command(node, &f, escape, shell_or_exec(false))
                .map_err(|e| err(e.to_string()))?;
            command(Instruction::Run(run))
        }
        "cmd" => {
            flags(&[])?;
            command(Instruction::Cmd(shell_or_exec(false)))
        }
        "entrypoint" => {
            flags(&[])?;
            command(Instruction::Entrypoint(shell_or_exec(true)))
        }
        "healthcheck" => {
            at_least_one("HEALTHCHECK")?;
            command(Instruction::Healthcheck(healthcheck(source, node)?))
        }
        "expose" => {
            at_least_one("EXPOSE")?;
            flags(&[])?;
            let mut ports = args.clone();
            ports.sort();
            command(Instruction::Expose(ports))
        }
        "user" => {
            let u = exactly_one("USER")?;
            flags(&[])?;
            command(Instruction::User(u))
        }
        "volume" => {
            at_least_one("VOLUME")?;
            flags(&[])?;
            let mut volumes = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(err("VOLUME specified can not be an empty string".into()));
                }
                volumes.push(v.to_string());
            }
            command(Instruction::Volume(volumes))
        }
        "stopsignal" => command(Instruction::Stopsignal(exactly_one("STOPSIGNAL")?)),
        "shell" => {
            flags(&[])?;
            if args.is_empty() {
                return Err(err("SHELL requires at least one argument".into()));
            }
            if !node.json {
                return Err(err("SHELL requires the arguments to be in JSON form".into()));
            }
            command(Instruction::Shell(args.clone()))
        }
        _ => {
            let e = err(format!("unknown instruction: {}", node.keyword_as_written));
            return Err(
                match suggest(
                    &node.keyword_as_written,
                    INSTRUCTIONS.iter().copied(),
                    false,
                ) {
                    Some(s) => e.with_hint(format!("did you mean {s}?")),
                    None => e,
                },
            );
        }
    })
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// `ONBUILD` and the whitespace after it removed from the front (case-insensitively).
fn strip_onbuild_prefix(original: &str) -> &str {
    let t = original.trim_start();
    match t.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => t[7..].trim_start(),
        _ => t,
    }
}

fn healthcheck(source: &Source, node: &Node) -> Result<HealthcheckCommand, DockerfileError> {
    let err = |msg: String| source.error_spanning(node.start, node.end_line, msg);
    let kind = node.args[0].to_uppercase();
    let rest = &node.args[1..];
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err(err("HEALTHCHECK NONE takes no arguments".into()));
        }
        return Ok(HealthcheckCommand {
            test: vec!["NONE".into()],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        });
    }
    let f = parse_flags(
        source,
        node,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(err(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            super::dump::go_quote(&kind)
        )));
    }
    let cmd: Vec<String> = if node.json {
        rest.to_vec()
    } else if rest.is_empty() {
        vec![]
    } else {
        vec![rest.join(" ")]
    };
    if cmd.is_empty() {
        return Err(err("Missing command after HEALTHCHECK CMD".into()));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(cmd);
    let interval = |name: &str| -> Result<Option<Duration>, DockerfileError> {
        let Some(v) = f.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let nanos = duration::parse_go_duration(&v).map_err(|e| err(e.to_string()))?;
        if nanos == 0 {
            return Ok(Some(Duration::ZERO));
        }
        if nanos < 1_000_000 {
            return Err(err(format!("Interval \"{name}\" cannot be less than 1ms")));
        }
        Ok(Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        )))
    };
    let retries = match f.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let n: i64 = v
                .parse()
                .ok()
                .filter(|n: &i64| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    err(format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        super::dump::go_quote(&v)
                    ))
                })?;
            if n < 0 {
                return Err(err(format!("--retries cannot be negative ({n})")));
            }
            Some(n as u32)
        }
    };
    Ok(HealthcheckCommand {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

#[cfg(test)]
mod tests;
