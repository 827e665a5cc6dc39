//! `kiln run`: a command in an image of the local store, through the build's sandbox.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kiln_executor::image_run::{run_image, RunImageOptions};
use kiln_executor::BackendChoice;

#[derive(Args)]
pub struct RunArgs {
    /// Accepted for Docker compatibility: the container is always removed.
    #[arg(long)]
    rm: bool,
    /// Keep stdin open and pass the terminal through.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Refused: kiln allocates no pseudo-terminal (with -i the command gets kiln's own
    /// terminal, when there is one).
    #[arg(short = 't', long)]
    tty: bool,
    /// `default` (the host's network) or `none` (only loopback).
    #[arg(long, value_parser = ["default", "none"], default_value = "default")]
    network: String,
    /// Variable `KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// User `name[:group]` or `uid[:gid]`.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Replace the image's entrypoint (`""` for none).
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(long, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// How the image's filesystem is mounted: auto, overlay, fuse or copy.
    #[arg(long, default_value = "auto", env = "KILN_SNAPSHOTTER")]
    snapshotter: BackendChoice,
    image: String,
    /// The command (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let mapping = match crate::root::namespace()? {
        crate::root::Namespace::Inside(m) => m,
        crate::root::Namespace::Exited(code) => return Ok(code),
    };
    if args.tty {
        anyhow::bail!(
            "kiln run -t: kiln allocates no pseudo-terminal; use -i, which passes kiln's own terminal through"
        );
    }
    // --rm is what kiln always does: the container's filesystem is thrown away.
    let _ = args.rm;
    let opts = RunImageOptions {
        root: args.root.unwrap_or_else(kiln_executor::default_root),
        image: args.image,
        command: args.command,
        entrypoint: args
            .entrypoint
            .map(|e| if e.is_empty() { Vec::new() } else { vec![e] }),
        env: args.env,
        user: args.user,
        workdir: args.workdir,
        isolated_network: args.network == "none",
        interactive: args.interactive,
        snapshotter: args.snapshotter,
        mapping,
        helper: std::env::current_exe().context("locating the kiln binary")?,
    };
    let mut stdout = std::io::stdout();
    let code = run_image(&opts, &mut |b| {
        let _ = stdout.write_all(b);
        let _ = stdout.flush();
    })?;
    Ok(code)
}
