//! `kiln debug parse` and `kiln debug plan`: the team's and users' window into the frontend.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use kiln_executor::dockerfile::{self, dump, Document};
use kiln_executor::plan::{self, Base, DependencyTarget, PlanOptions, Platform, StageGraph};

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Run a command in ROOTFS the way a RUN step runs (namespaces, /proc, /dev, pivot_root).
    Run {
        /// `none` gives the command its own network namespace.
        #[arg(long, default_value = "default")]
        network: String,
        /// Environment variable `KEY=VALUE` (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory inside the root.
        #[arg(long, default_value = "/")]
        cwd: String,
        /// Run as this user (`name[:group]` or `uid[:gid]`, resolved in the root's /etc).
        #[arg(long)]
        user: Option<String>,
        /// Use the single mapping (0 → you) even when subordinate ids are available.
        #[arg(long)]
        single_mapping: bool,
        /// A mount: `tmpfs:TARGET`, `bind:SOURCE:TARGET[:rw|:cache]` (rw: writes thrown away;
        /// cache: writes kept) or `secret:FILE:TARGET`
        /// (repeatable).
        #[arg(long = "mount", value_name = "KIND:…")]
        mounts: Vec<String>,
        rootfs: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Turn a directory into an OCI layer blob, or apply a layer blob to a directory.
    #[command(subcommand)]
    Layer(crate::layer::LayerCommand),
    /// Print the parsed instructions: kind, source range, flags, arguments, heredocs.
    Parse {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// The Dockerfile (`-` for standard input).
        file: PathBuf,
    },
    /// Print the stages a target needs, their dependencies, and which can run in parallel;
    /// fails on whatever a build would refuse before running a step.
    Plan {
        /// The stage to build (default: the last one).
        #[arg(long)]
        target: Option<String>,
        /// A build argument, `KEY=VALUE`, or `KEY` to take the value from the environment.
        #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
        build_args: Vec<String>,
        /// The target platform (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// The Dockerfile (`-` for standard input).
        file: PathBuf,
    },
}

pub fn run(cmd: DebugCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        DebugCommand::Layer(cmd) => crate::layer::run(cmd, &mut out)?,
        DebugCommand::Run {
            network,
            env,
            cwd,
            user,
            single_mapping,
            mounts,
            rootfs,
            argv,
        } => {
            use kiln_executor::sandbox::mounts::{MountSource, MountSpec};
            let mounts = mounts
                .iter()
                .map(|m| {
                    let parts: Vec<&str> = m.split(':').collect();
                    Ok(match parts.as_slice() {
                        ["tmpfs", target] => MountSpec {
                            target: target.to_string(),
                            source: MountSource::Tmpfs { size: None },
                        },
                        ["bind", src, target, rest @ ..] => MountSpec {
                            target: target.to_string(),
                            source: MountSource::Bind {
                                source: std::fs::canonicalize(src)
                                    .with_context(|| format!("mount source {src}"))?,
                                readonly: rest.is_empty(),
                                discard_writes: rest == ["rw"],
                            },
                        },
                        ["secret", src, target] => MountSpec {
                            target: target.to_string(),
                            source: MountSource::Secret {
                                source: std::fs::canonicalize(src)
                                    .with_context(|| format!("secret {src}"))?,
                                mode: 0o400,
                                uid: 0,
                                gid: 0,
                            },
                        },
                        _ => bail!("bad --mount {m:?}: tmpfs:TARGET, bind:SOURCE:TARGET[:rw|:cache] or secret:FILE:TARGET"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let isolated_network = match network.as_str() {
                "none" => true,
                "default" | "host" => false,
                other => bail!("unknown --network {other:?} (default, host or none)"),
            };
            let mut env = env;
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push(format!("PATH={}", kiln_executor::plan::scope::DEFAULT_PATH));
            }
            let spec = kiln_executor::sandbox::run::RunSpec {
                rootfs: std::fs::canonicalize(&rootfs)
                    .with_context(|| format!("root filesystem {}", rootfs.display()))?,
                argv,
                env,
                cwd,
                hostname: "kiln".into(),
                isolated_network,
                mounts,
                user,
                mapping: match kiln_executor::sandbox::userns::IdMapping::detect() {
                    kiln_executor::sandbox::userns::IdMapping::Full { .. } if single_mapping => {
                        kiln_executor::sandbox::userns::IdMapping::Single
                    }
                    m => m,
                },
                secret_env: Vec::new(),
                interactive: false,
                etc_dir: PathBuf::new(),
                extra_hosts: Vec::new(),
                privileged: false,
            };
            let exe = std::env::current_exe().context("locating the kiln binary")?;
            drop(out);
            let outcome = kiln_executor::sandbox::run::run(&spec, &exe, None, |chunk| {
                let _ = std::io::stdout().write_all(chunk);
            })?;
            if outcome.exit_code != 0 {
                std::process::exit(outcome.exit_code);
            }
            return Ok(());
        }
        DebugCommand::Parse { format, file } => {
            let doc = load(&file)?;
            match format {
                Format::Text => print_parse_text(&mut out, &doc)?,
                Format::Json => {
                    let value = serde_json::json!({
                        "file": doc.source.name(),
                        "directives": doc.directives,
                        "escape": doc.escape.to_string(),
                        "start_line": doc.start_line,
                        "end_line": doc.end_line,
                        "instructions": doc.nodes,
                        "warnings": doc.warnings,
                    });
                    serde_json::to_writer_pretty(&mut out, &value)?;
                    writeln!(out)?;
                }
            }
        }
        DebugCommand::Plan {
            target,
            build_args,
            platform,
            format,
            file,
        } => {
            let doc = load(&file)?;
            let opts = PlanOptions {
                target,
                build_args: crate::args::build_args(&build_args)?,
                build_platform: Platform::host(),
                target_platform: platform
                    .map(|p| Platform::parse(&p).map_err(anyhow::Error::msg))
                    .transpose()
                    .context("invalid --platform")?,
                ..Default::default()
            };
            let graph = plan::plan(&doc, &opts)?;
            refuse_what_a_build_refuses(&doc, &graph)?;
            match format {
                Format::Text => print_plan_text(&mut out, &graph)?,
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &graph)?;
                    writeln!(out)?;
                }
            }
        }
    }
    Ok(())
}

/// The checks a build makes before anything runs, past planning: every needed stage is
/// evaluated (ARG/ENV expansion, mounts, STOPSIGNAL) and lowered to steps (`--chmod`,
/// ADD sources, mount targets, refused RUN options). Base images are not looked at, so
/// their Env, WorkingDir and ONBUILD triggers are taken as empty or unknown.
fn refuse_what_a_build_refuses(doc: &Document, graph: &StageGraph) -> Result<()> {
    let evals = graph.evaluate(&doc.source, &|_| Vec::new())?;
    kiln_executor::graph::lower(graph, &evals, &doc.source, &|_| None)?;
    Ok(())
}

/// Reads and parses a Dockerfile; `-` is standard input.
fn load(file: &PathBuf) -> Result<Document> {
    let (name, bytes) = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        ("Dockerfile".to_string(), buf)
    } else {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        (file.display().to_string(), bytes)
    };
    Ok(dockerfile::parse(&name, &bytes)?)
}

fn print_parse_text(out: &mut impl Write, doc: &Document) -> Result<()> {
    if let Some(s) = &doc.directives.syntax {
        writeln!(out, "# syntax={s}")?;
    }
    if let Some(e) = doc.directives.escape {
        writeln!(out, "# escape={e}")?;
    }
    if let Some(c) = &doc.directives.check {
        writeln!(out, "# check={c}")?;
    }
    for node in &doc.nodes {
        writeln!(
            out,
            "{}:{}-{}\t({})",
            node.start.line,
            node.start.column,
            node.end_line,
            dump::dump_node(node)
        )?;
        for h in node
            .heredocs
            .iter()
            .chain(node.child.iter().flat_map(|c| c.heredocs.iter()))
        {
            writeln!(
                out,
                "\theredoc <<{}{} fd={} expand={} ({} bytes)",
                if h.chomp { "-" } else { "" },
                h.name,
                h.file_descriptor,
                h.expand,
                h.content.len()
            )?;
        }
    }
    for w in &doc.warnings {
        writeln!(
            out,
            "warning: {}:{}:{}: {}",
            doc.source.name(),
            w.position.line,
            w.position.column,
            w.message
        )?;
    }
    Ok(())
}

fn print_plan_text(out: &mut impl Write, graph: &StageGraph) -> Result<()> {
    let label = |i: usize| graph.stages[i].label.clone();
    let needed = graph.stages.iter().filter(|s| s.needed).count();
    writeln!(
        out,
        "target: {} (stage {}), platform {}",
        label(graph.target),
        graph.target,
        graph.target_platform
    )?;
    writeln!(
        out,
        "stages: {} in the file, {} needed",
        graph.stages.len(),
        needed
    )?;
    for s in &graph.stages {
        let base = match &s.base {
            Base::Scratch => "scratch".to_string(),
            Base::Stage(j) => format!("stage {}", label(*j)),
            Base::Image(r) => format!("image {r}"),
        };
        let status = match s.level {
            Some(l) => format!("level {l}"),
            None => "not needed, skipped".to_string(),
        };
        writeln!(
            out,
            "  [{}] {} FROM {} ({})",
            s.index, s.label, base, status
        )?;
        for d in &s.dependencies {
            let on = match &d.target {
                DependencyTarget::Stage(j) => format!("stage {}", label(*j)),
                DependencyTarget::Image(r) => format!("image {r}"),
            };
            let kind = serde_json::to_value(d.kind)?;
            writeln!(
                out,
                "      needs {} via {} at line {}",
                on,
                kind.as_str().unwrap_or_default(),
                d.position.line
            )?;
        }
    }
    writeln!(out, "order (stages on one level run in parallel):")?;
    for (l, stages) in graph.levels().iter().enumerate() {
        let names: Vec<String> = stages.iter().map(|&i| label(i)).collect();
        writeln!(out, "  level {l}: {}", names.join(", "))?;
    }
    let images = graph.images();
    if !images.is_empty() {
        writeln!(
            out,
            "images: {}",
            images.into_iter().collect::<Vec<_>>().join(", ")
        )?;
    }
    Ok(())
}
