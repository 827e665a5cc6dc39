//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`, and the registry options they
//! share with `kiln build`.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_executor::registry::{Credentials, Registry, RegistryOptions};
use kiln_executor::store::ImageStore;
use kiln_executor::Event;

/// Options every registry command takes.
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// Speak plain http to this registry (`HOST[:PORT]`, repeatable); loopback
    /// registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    pub fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure.clone(),
            ..Default::default()
        }
    }
}

#[derive(Args)]
pub struct PullArgs {
    #[arg(long, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// The platform whose manifest an index gives (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// `NAME[:TAG|@DIGEST]`, with Docker's defaults (`docker.io/library/`, `:latest`).
    reference: String,
}

#[derive(Args)]
pub struct PushArgs {
    #[arg(long, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Write the pushed manifest's digest to this file.
    #[arg(long)]
    digestfile: Option<PathBuf>,
    /// An image of the local store.
    image: String,
    /// Where to push it (default: its own name).
    dest: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    username: Option<String>,
    /// The password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The registry host (`HOST[:PORT]`; default docker.io).
    registry: Option<String>,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The registry host (default docker.io).
    registry: Option<String>,
}

fn store(root: Option<PathBuf>) -> Result<ImageStore> {
    let root = root.unwrap_or_else(kiln_executor::default_root);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    ImageStore::open(&root).context("opening the image store")
}

fn show(out: &mut dyn Write, e: &Event) {
    if let Some(line) = crate::render::registry_line(e, false) {
        let _ = writeln!(out, "{line}");
    }
}

pub fn pull(args: PullArgs, out: &mut dyn Write) -> Result<()> {
    let images = store(args.root)?;
    let platform = match &args.platform {
        Some(p) => kiln_executor::plan::Platform::parse(p).map_err(anyhow::Error::msg)?,
        None => kiln_executor::plan::Platform::host(),
    };
    let registry = Registry::new(args.registry.options())?;
    let started = std::time::Instant::now();
    let mut err = std::io::stderr();
    let pulled = registry
        .pull(&args.reference, &platform, &images, &mut |t| {
            show(&mut err, &Event::Transfer(t))
        })
        .with_context(|| format!("pulling {}", args.reference))?;
    show(out, &Event::pulled(pulled, started.elapsed().as_secs_f64()));
    Ok(())
}

pub fn push(args: PushArgs, out: &mut dyn Write) -> Result<()> {
    let images = store(args.root)?;
    let manifest = images
        .resolve(&args.image)?
        .with_context(|| format!("{}: no such image in the local store", args.image))?;
    let dest = args.dest.as_deref().unwrap_or(&args.image);
    let registry = Registry::new(args.registry.options())?;
    let started = std::time::Instant::now();
    let mut err = std::io::stderr();
    let pushed = registry
        .push(&images, &manifest, dest, &mut |t| {
            show(&mut err, &Event::Transfer(t))
        })
        .with_context(|| format!("pushing {dest}"))?;
    if let Some(f) = &args.digestfile {
        std::fs::write(f, &pushed.digest).with_context(|| format!("writing {}", f.display()))?;
    }
    show(out, &Event::pushed(pushed, started.elapsed().as_secs_f64()));
    Ok(())
}

/// The host a login names (`docker.io` when none).
fn host(registry: Option<String>) -> Result<String> {
    let h = registry.unwrap_or_else(|| "docker.io".into());
    let h = h
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if h.is_empty() || h.contains('/') {
        bail!("{h:?}: give a registry host, HOST[:PORT]");
    }
    Ok(h)
}

pub fn login(args: LoginArgs, out: &mut dyn Write) -> Result<()> {
    let host = host(args.registry)?;
    let username = args
        .username
        .context("--username is needed (kiln does not prompt)")?;
    let secret = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    let files = RegistryOptions::default().auth;
    files.store(&host, &Credentials { username, secret })?;
    writeln!(
        out,
        "Login Succeeded ({host}, saved in {})",
        files.write.display()
    )?;
    Ok(())
}

pub fn logout(args: LogoutArgs, out: &mut dyn Write) -> Result<()> {
    let host = host(args.registry)?;
    let files = RegistryOptions::default().auth;
    if files.remove(&host)? {
        writeln!(out, "Removing login credentials for {host}")?;
    } else {
        writeln!(out, "Not logged in to {host}")?;
    }
    Ok(())
}
