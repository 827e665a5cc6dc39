//! Lowering: planned, evaluated stages → [`StepGraph`].

use std::collections::BTreeMap;

use super::{CopyOp, InlineFile, RunOp, RunScript, StageNode, Step, StepGraph, StepInput, StepOp};
use crate::dockerfile::ast::Heredoc;
use crate::dockerfile::chmod::Chmod;
use crate::dockerfile::dump::go_quote;
use crate::dockerfile::instructions::{
    self, Instruction, MountKind, RunCommand, RunMount, ShellOrExec,
};
use crate::dockerfile::{DockerfileError, Source};
use crate::plan::scope::EvaluatedCommand;
use crate::plan::{Base, StageEvaluation, StageGraph};

/// RUN options kiln refuses before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RunRefusal {
    #[error("device feature is only supported in Dockerfile frontend 1.14.0-labs or later")]
    Device,
    /// A bind, cache or tmpfs mount whose target is (or resolves to) `/` (BuildKit's
    /// message; it names the resolved target).
    #[error("invalid mount target {}", go_quote(.0))]
    MountTarget(String),
    #[error("ssh does not support source")]
    SshSource,
}

/// Lowers the needed stages of `plan`, evaluated as `evals`, into steps.
/// `image_workdir` gives a base image's working directory (its config's `WorkingDir`,
/// `/` when unset), or `None` when the image was not looked at; relative mount targets
/// resolve against it as BuildKit resolves them.
pub fn lower(
    plan: &StageGraph,
    evals: &BTreeMap<usize, StageEvaluation>,
    source: &Source,
    image_workdir: &dyn Fn(&str) -> Option<String>,
) -> Result<StepGraph, DockerfileError> {
    let mut stages = BTreeMap::new();
    // Each lowered stage's working directory at its end, when the file alone decides it.
    let mut end_workdirs: BTreeMap<usize, Option<String>> = BTreeMap::new();
    for planned in plan.stages.iter().filter(|s| s.needed) {
        let Some(eval) = evals.get(&planned.index) else {
            continue;
        };
        let mut workdir = match &planned.base {
            Base::Scratch => Some("/".to_string()),
            Base::Stage(j) => end_workdirs.get(j).cloned().flatten(),
            Base::Image(r) => image_workdir(r).map(|w| clean_path(&format!("/{w}"))),
        };
        let mut steps = Vec::with_capacity(eval.commands.len());
        for c in &eval.commands {
            match &c.instruction {
                Instruction::Workdir(w) => workdir = next_workdir(workdir.as_deref(), w),
                Instruction::Run(run) => check_mounts(&run.mounts, workdir.as_deref())
                    .map_err(|e| instruction_error(source, c, e.to_string()))?,
                _ => {}
            }
            steps.push(lower_step(plan, c, source)?);
        }
        end_workdirs.insert(planned.index, workdir);
        stages.insert(
            planned.index,
            StageNode {
                index: planned.index,
                label: planned.label.clone(),
                base: planned.base.clone(),
                platform: planned
                    .platform
                    .clone()
                    .unwrap_or_else(|| plan.target_platform.clone()),
                position: planned.position,
                steps,
                needs: planned.stage_dependencies(),
            },
        );
    }
    Ok(StepGraph {
        stages,
        target: plan.target,
        escape: plan.escape,
        global_args: plan.global_args.clone(),
    })
}

/// What `--from=NAME` (COPY) or `from=NAME` (RUN --mount) points at: a stage (by name,
/// case-insensitively, or 0-based index) or else a named context or image.
fn source_of(plan: &StageGraph, from: &str) -> StepInput {
    let lower = from.to_ascii_lowercase();
    plan.stages
        .iter()
        .find(|s| s.name.as_deref() == Some(lower.as_str()))
        .map(|s| s.index)
        .or_else(|| {
            from.parse::<usize>()
                .ok()
                .filter(|i| *i < plan.stages.len())
        })
        .map(StepInput::Stage)
        .unwrap_or_else(|| StepInput::Named(from.to_string()))
}

fn lower_step(
    plan: &StageGraph,
    cmd: &EvaluatedCommand,
    source: &Source,
) -> Result<Step, DockerfileError> {
    let pos = cmd.position;
    let err = |msg: String| instruction_error(source, cmd, msg);
    let mut inputs = Vec::new();
    let op = match &cmd.instruction {
        Instruction::Workdir(w) => StepOp::Workdir(w.clone()),
        Instruction::Run(run) => {
            check_run(run).map_err(|e| err(e.to_string()))?;
            let mut mount_sources = BTreeMap::new();
            for m in &run.mounts {
                match &m.from {
                    Some(f) => {
                        let input = source_of(plan, f);
                        inputs.push(input.clone());
                        mount_sources.insert(f.clone(), input);
                    }
                    None => inputs.push(StepInput::Context),
                }
            }
            StepOp::Run(Box::new(RunOp {
                script: run_script(run),
                run: run.clone(),
                mount_sources,
            }))
        }
        Instruction::Copy(cp) => {
            let from = cp.from.as_deref().map(|f| source_of(plan, f));
            inputs.push(from.clone().unwrap_or(StepInput::Context));
            StepOp::Copy(Box::new(CopyOp {
                add: false,
                sources: cp.sources.clone(),
                urls: Vec::new(),
                inline: inline_files(&cp.inline_files),
                dest: cp.dest.clone(),
                from,
                chown: cp.chown.clone(),
                chmod: parse_chmod(cp.chmod.as_deref()).map_err(|e| err(e.to_string()))?,
                excludes: cp.excludes.clone(),
                parents: cp.parents,
                checksum: None,
                unpack: None,
                link: cp.link,
                history: copy_history(
                    "COPY",
                    cp.parents,
                    cp.chown.as_deref(),
                    cp.chmod.as_deref(),
                    &cp.sources,
                    &cp.inline_files,
                    &cp.dest,
                ),
            }))
        }
        Instruction::Add(add) => {
            // URLs are downloaded when the step runs (checked against --checksum) and
            // copied like local files; git sources are not supported yet.
            let mut urls = Vec::new();
            for s in &add.sources {
                if s.starts_with("git@") || s.ends_with(".git") || s.starts_with("git://") {
                    return Err(err(format!("ADD {s}: git sources are not supported yet")));
                }
                if s.starts_with("http://") || s.starts_with("https://") {
                    urls.push(s.clone());
                } else if s.contains("://") {
                    return Err(err(format!(
                        "ADD {s}: unsupported URL scheme (http and https only)"
                    )));
                }
            }
            if add.checksum.is_some() && urls.is_empty() {
                return Err(err("checksum requires HTTP(S) or Git sources".into()));
            }
            if let Some(c) = &add.checksum {
                crate::step::copy::download::parse_checksum(c).map_err(|e| err(e.to_string()))?;
            }
            inputs.push(StepInput::Context);
            StepOp::Copy(Box::new(CopyOp {
                add: true,
                sources: add
                    .sources
                    .iter()
                    .filter(|s| !s.contains("://"))
                    .cloned()
                    .collect(),
                urls,
                inline: inline_files(&add.inline_files),
                dest: add.dest.clone(),
                from: None,
                chown: add.chown.clone(),
                chmod: parse_chmod(add.chmod.as_deref()).map_err(|e| err(e.to_string()))?,
                excludes: add.excludes.clone(),
                parents: false,
                checksum: add.checksum.clone(),
                unpack: add.unpack,
                link: add.link,
                history: copy_history(
                    "ADD",
                    false,
                    add.chown.as_deref(),
                    add.chmod.as_deref(),
                    &add.sources,
                    &add.inline_files,
                    &add.dest,
                ),
            }))
        }
        other => StepOp::Meta(other.clone()),
    };
    Ok(Step {
        position: pos,
        text: source.line(pos.line).trim().to_string(),
        env: cmd.env.clone(),
        from_onbuild: cmd.from_onbuild,
        op,
        inputs,
    })
}

/// An error about the whole instruction `cmd` (every line of it in the frame).
fn instruction_error(source: &Source, cmd: &EvaluatedCommand, msg: String) -> DockerfileError {
    source.error_spanning(cmd.position, cmd.end_line, msg)
}

/// RUN options kiln refuses, in the words users see.
fn check_run(run: &RunCommand) -> Result<(), RunRefusal> {
    if !run.devices.is_empty() {
        return Err(RunRefusal::Device);
    }
    Ok(())
}

/// BuildKit's dispatch-time mount checks. A bind, cache or tmpfs target that is not
/// absolute (an empty one included) is joined to the working directory; the result must
/// not be `/`. When the working directory is unknown (a base image that was not looked
/// at, as in `kiln debug`), only a target written as `/` is refused here.
fn check_mounts(mounts: &[RunMount], workdir: Option<&str>) -> Result<(), RunRefusal> {
    for m in mounts {
        match m.kind {
            MountKind::Secret => {}
            MountKind::Ssh => {
                if m.source.as_deref().is_some_and(|s| !s.is_empty()) {
                    return Err(RunRefusal::SshSource);
                }
            }
            MountKind::Bind | MountKind::Cache | MountKind::Tmpfs => {
                let target = m.target.as_deref().unwrap_or("");
                let resolved = if clean_path(target).starts_with('/') {
                    Some(target.to_string())
                } else {
                    workdir.map(|w| clean_path(&format!("/{w}/{target}")))
                };
                if resolved.as_deref() == Some("/") {
                    return Err(RunRefusal::MountTarget("/".into()));
                }
            }
        }
    }
    Ok(())
}

/// The working directory after `WORKDIR path` (BuildKit: a relative path is joined to
/// the current one), or `None` while it is unknown.
fn next_workdir(current: Option<&str>, path: &str) -> Option<String> {
    if path.starts_with('/') {
        Some(clean_path(path))
    } else {
        current.map(|c| clean_path(&format!("/{c}/{path}")))
    }
}

/// Go's `path.Clean`: `.` and empty parts removed, `..` resolved, no trailing `/`; an
/// empty path is `.`.
fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A heredoc's body as the step uses it (`<<-` strips leading tabs).
fn heredoc_body(h: &Heredoc) -> String {
    if h.chomp {
        h.content
            .lines()
            .map(|l| format!("{}\n", l.trim_start_matches('\t')))
            .collect()
    } else {
        h.content.clone()
    }
}

/// BuildKit's rule: a shell-form RUN that is only `<<EOF` runs the body (directly when
/// it starts with `#!`); otherwise the heredocs are appended to the command line with
/// their terminators, and the shell reads them.
fn run_script(run: &RunCommand) -> RunScript {
    let ShellOrExec::Shell(line) = &run.command else {
        return RunScript::AsWritten;
    };
    if run.heredocs.is_empty() {
        return RunScript::AsWritten;
    }
    let lone = run.heredocs.len() == 1
        && crate::dockerfile::parser::parse_heredoc_word(line.trim())
            .ok()
            .flatten()
            .is_some();
    if lone {
        let h = &run.heredocs[0];
        let text = heredoc_body(h);
        if text.starts_with("#!") {
            return RunScript::File {
                name: h.name.clone(),
                content: text,
            };
        }
        return RunScript::Shell(text);
    }
    let mut script = line.clone();
    script.push('\n');
    for h in &run.heredocs {
        script.push_str(&heredoc_body(h));
        script.push_str(&h.name);
        script.push('\n');
    }
    RunScript::Shell(script)
}

fn parse_chmod(s: Option<&str>) -> Result<Option<Chmod>, crate::dockerfile::chmod::ChmodError> {
    s.map(Chmod::parse).transpose()
}

fn inline_files(files: &[instructions::InlineFile]) -> Vec<InlineFile> {
    files
        .iter()
        .map(|f| InlineFile {
            name: f.name.clone(),
            data: f.data.clone().into_bytes(),
        })
        .collect()
}

/// The history text of a COPY/ADD, as BuildKit writes it (before ` # buildkit`).
fn copy_history(
    name: &str,
    parents: bool,
    chown: Option<&str>,
    chmod: Option<&str>,
    sources: &[String],
    inline: &[instructions::InlineFile],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::Position;
    use crate::plan::{plan, PlanOptions};

    fn graph_of(text: &str) -> Result<StepGraph, DockerfileError> {
        let doc = crate::dockerfile::parse("Dockerfile", text.as_bytes())?;
        let p = plan(&doc, &PlanOptions::default()).map_err(|e| match e {
            crate::plan::PlanError::Dockerfile(d) => d,
            other => doc.source.error(Position::default(), other.to_string()),
        })?;
        let evals = p.evaluate(&doc.source, &|_| Vec::new())?;
        lower(&p, &evals, &doc.source, &|_| None)
    }

    #[test]
    fn heredocs_are_settled_when_lowering() {
        let g = graph_of(
            "FROM scratch\nRUN <<EOF\necho hi\nEOF\nRUN <<EOF\n#!/bin/sh\necho x\nEOF\nRUN cat <<A && cat <<B\na\nA\nb\nB\n",
        )
        .unwrap();
        let steps = &g.stages[&0].steps;
        let scripts: Vec<RunScript> = steps
            .iter()
            .map(|s| match &s.op {
                StepOp::Run(r) => r.script.clone(),
                _ => panic!("not a RUN"),
            })
            .collect();
        assert_eq!(scripts[0], RunScript::Shell("echo hi\n".into()));
        assert_eq!(
            scripts[1],
            RunScript::File {
                name: "EOF".into(),
                content: "#!/bin/sh\necho x\n".into()
            }
        );
        assert_eq!(
            scripts[2],
            RunScript::Shell("cat <<A && cat <<B\na\nA\nb\nB\n".into())
        );
    }

    #[test]
    fn from_names_a_stage_or_another_source() {
        let g = graph_of(
            "FROM scratch AS Build\nFROM scratch\nCOPY --from=build /a /a\nCOPY --from=0 /a /b\nCOPY --from=other /a /c\nCOPY x /d\n",
        )
        .unwrap();
        let froms: Vec<StepInput> = g.stages[&1]
            .steps
            .iter()
            .map(|s| s.inputs[0].clone())
            .collect();
        assert_eq!(
            froms,
            [
                StepInput::Stage(0),
                StepInput::Stage(0),
                StepInput::Named("other".into()),
                StepInput::Context
            ]
        );
        assert!(g.stages[&1].needs.contains(&0));
        assert_eq!(g.order(), [0, 1]);
    }

    #[test]
    fn clean_path_is_gos() {
        for (p, want) in [
            ("", "."),
            ("/", "/"),
            ("/a/../..", "/"),
            ("a/./b/", "a/b"),
            ("../a", "../a"),
            ("//x//", "/x"),
        ] {
            assert_eq!(clean_path(p), want, "{p:?}");
        }
    }

    #[test]
    fn mount_target_must_not_be_the_root() {
        let refused = |df: &str| graph_of(df).err().map(|e| e.to_string());
        for df in [
            "FROM scratch\nRUN --mount=type=cache true\n",
            "FROM scratch\nRUN --mount=type=tmpfs,target=/ true\n",
            "FROM scratch\nRUN --mount=target=. true\n",
            "FROM scratch\nWORKDIR /a\nRUN --mount=type=cache,target=.. true\n",
            "FROM scratch AS base\nFROM base\nRUN --mount=type=cache true\n",
            "FROM busybox\nRUN --mount=type=bind,dst=/ true\n",
            "FROM scratch\nARG T=/\nRUN --mount=type=cache,target=$T true\n",
        ] {
            let e = refused(df).unwrap_or_else(|| panic!("accepted: {df}"));
            assert!(e.contains(": invalid mount target \"/\"\n"), "{e}");
        }
        for df in [
            "FROM scratch\nWORKDIR /app\nRUN --mount=type=cache true\n",
            "FROM scratch\nRUN --mount=type=cache,target=c true\n",
            "FROM scratch AS app\nWORKDIR /app\nFROM app\nRUN --mount=type=cache true\n",
            "FROM busybox\nRUN --mount=type=cache true\n",
            "FROM busybox\nRUN --mount=type=secret,id=x --mount=type=ssh true\n",
        ] {
            assert_eq!(refused(df), None, "{df}");
        }
        let e = refused("FROM scratch\nRUN --mount=type=ssh,src=/x true\n").unwrap_or_default();
        assert!(e.contains("ssh does not support source"), "{e}");
    }

    #[test]
    fn bad_chmod_and_add_sources_fail_before_anything_runs() {
        let e = graph_of("FROM scratch\nCOPY --chmod=u*x a /b\n").unwrap_err();
        assert!(e.to_string().contains("invalid chmod parameter"), "{e}");
        let e = graph_of("FROM scratch\nADD git://example.invalid/x.git /b\n").unwrap_err();
        assert!(
            e.to_string().contains("git sources are not supported"),
            "{e}"
        );
        let e = graph_of("FROM scratch\nADD --checksum=sha256:00 a /b\n").unwrap_err();
        assert!(e.to_string().contains("checksum requires"), "{e}");
    }
}
