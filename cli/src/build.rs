//! `kiln build`: Docker/buildx-compatible options in, an image out.
//!
//! The command runs twice: first as the caller, which checks nothing but starts itself
//! again inside the build's user and mount namespace; then inside, where the build runs
//! and mounts live and die with the process.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_executor::mounts::secret::SecretSource;
use kiln_executor::sandbox::userns;
use kiln_executor::{BackendChoice, BuildOptions, Event, NamedContext, Output};

use crate::args::{key_value, Compression};
use crate::render::{Outcome, ProgressMode};

#[derive(Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tag the image (repeatable).
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// Build argument `KEY=VALUE`, or `KEY` to take it from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Secret for RUN --mount=type=secret: `id=ID,src=PATH` or `id=ID,env=VAR`.
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// ssh agent for RUN --mount=type=ssh: `default` ($SSH_AUTH_SOCK), `ID=SOCKET`, or
    /// `ID=KEY[,KEY…]` (OpenSSH, PEM or PKCS#8 private keys served by an agent of kiln's).
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Named context `NAME=PATH`, `NAME=oci-layout://PATH[:TAG]` or `NAME=docker-image://REF`.
    #[arg(long = "build-context")]
    build_contexts: Vec<String>,
    /// Output: `type=oci|docker|local|tar,dest=PATH`, `type=image,name=REF[,push=true]` or
    /// `type=registry,name=REF` (repeatable).
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Write the image id (config digest) to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Label `KEY=VALUE` added to the image (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Target platform: stages without RUN build for any platform; RUN runs only for
    /// this machine's.
    #[arg(long)]
    platform: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    compression: Compression,
    #[arg(long)]
    compression_level: Option<i32>,
    /// How stage filesystems are mounted: auto, overlay, fuse or copy.
    #[arg(long, default_value = "auto", env = "KILN_SNAPSHOTTER")]
    snapshotter: BackendChoice,
    /// kiln's data directory (default: $KILN_ROOT, $XDG_DATA_HOME/kiln, ~/.local/share/kiln,
    /// or /var/lib/kiln for root).
    #[arg(long, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// Print only the image id (`--progress=quiet`).
    #[arg(short, long)]
    quiet: bool,
    /// How progress is shown: auto (tty on a terminal outside CI, else plain), tty,
    /// plain, rawjson (one JSON object per line) or quiet.
    #[arg(long, value_enum, value_name = "MODE")]
    progress: Option<ProgressMode>,
    /// Run every step, reusing nothing from the build cache.
    #[arg(long)]
    no_cache: bool,
    /// Run the steps of these stages (and of the stages built on or from them) instead of
    /// taking them from the cache (comma-separated or repeated).
    #[arg(long = "no-cache-filter", value_delimiter = ',', value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    /// How many stages build at once (default: the number of CPUs, at least 2).
    #[arg(short = 'j', long = "jobs", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Write the build's result (image and config digests, tags) as JSON to this file,
    /// with buildx's keys.
    #[arg(long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// Extra privileges for RUN steps: `network.host`, `security.insecure` (repeatable or
    /// comma-separated).
    #[arg(long = "allow", value_delimiter = ',')]
    allow: Vec<String>,
    /// The network of RUN steps that do not set `--network`: `default` (the host's, as
    /// rootless BuildKit), `none` (only loopback) or `host` (grants `network.host`).
    #[arg(long, value_parser = ["default", "none", "host"], default_value = "default")]
    network: String,
    /// An `/etc/hosts` entry for RUN steps, `NAME:IP` (repeatable).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_hosts: Vec<String>,
    /// Fetch every base image from its registry, even when the local store has it.
    #[arg(long)]
    pull: bool,
    /// Push the image to the registry of each `-t` name after the build.
    #[arg(long)]
    push: bool,
    /// Export the build cache: `type=registry,ref=REF[,mode=min|max]` or
    /// `type=local,dest=DIR[,mode=…]` (repeatable).
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,
    /// Import a build cache: `type=registry,ref=REF` (or `REF`) or `type=local,src=DIR`
    /// (repeatable).
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    #[command(flatten)]
    registry: crate::registry::RegistryArgs,
    /// The build context directory.
    context: PathBuf,
}

/// Runs `kiln build`; returns the process exit code. `forwarder`: the signal forwarder
/// `main` installed before parsing the arguments, if it did.
pub fn run(args: BuildArgs, forwarder: Option<crate::signals::Forwarder>) -> Result<i32> {
    let mode = progress_mode(args.quiet, args.progress);
    if args.push && args.tags.is_empty() {
        bail!("--push needs a name to push to: -t REGISTRY/NAME:TAG");
    }
    for t in &args.tags {
        kiln_executor::registry::parse_reference(t).with_context(|| format!("-t {t}"))?;
    }
    use kiln_executor::cache::transfer::CacheSpec;
    let cache_to = args
        .cache_to
        .iter()
        .map(|s| CacheSpec::parse(s, true).with_context(|| format!("--cache-to {s}")))
        .collect::<Result<Vec<_>>>()?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| CacheSpec::parse(s, false).with_context(|| format!("--cache-from {s}")))
        .collect::<Result<Vec<_>>>()?;
    let Some(mapping) = userns::build_namespace() else {
        if !args.context.is_dir() {
            bail!("context {}: not a directory", args.context.display());
        }
        let mapping = userns::IdMapping::detect();
        let forwarder = match forwarder {
            Some(f) => f,
            None => {
                crate::signals::Forwarder::install().context("installing the Ctrl-C handler")?
            }
        };
        let child = userns::spawn_build_namespace(&mapping)
            .context("entering the build's user namespace")?;
        return forwarder.wait(child).context("waiting for the build");
    };
    // Inside: a Ctrl-C or SIGTERM from here on cancels the build (also during the set-up
    // below, before the build has started: then nothing is written).
    let cancel = kiln_executor::CancelToken::new();
    let interrupts =
        crate::signals::Interrupts::install(&cancel).context("installing the Ctrl-C handler")?;
    let context = std::fs::canonicalize(&args.context)
        .with_context(|| format!("context {}", args.context.display()))?;
    let (dockerfile, dockerfile_name, dockerfile_path) = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading the Dockerfile from stdin")?;
            (b, "Dockerfile".to_string(), None)
        }
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
            Some(p.clone()),
        ),
        None => {
            // BuildKit's default name, else its lower-case form.
            let upper = context.join("Dockerfile");
            let lower = context.join("dockerfile");
            let p = if !upper.exists() && lower.exists() {
                lower
            } else {
                upper
            };
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into());
            (
                std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                name,
                Some(p),
            )
        }
    };
    let build_args = crate::args::build_args(&args.build_args)?;
    let mut allow = kiln_executor::Entitlements::default();
    for a in &args.allow {
        allow.grant(a).context("--allow")?;
    }
    use kiln_executor::dockerfile::instructions::NetworkMode;
    let network = match args.network.as_str() {
        "none" => NetworkMode::None,
        "host" => {
            allow.network_host = true;
            NetworkMode::Host
        }
        _ => NetworkMode::Default,
    };
    let add_hosts = args
        .add_hosts
        .iter()
        .map(|h| crate::args::add_host(h))
        .collect::<Result<Vec<_>>>()?;
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = key_value(l, "--label")?;
        labels.insert(k, v);
    }
    let secrets = args
        .secrets
        .iter()
        .map(|s| SecretSource::parse(s).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let mut ssh = BTreeMap::new();
    for s in &args.ssh {
        let (id, path) =
            kiln_executor::mounts::ssh::parse_ssh_spec(s).map_err(anyhow::Error::msg)?;
        ssh.insert(id, path);
    }
    let mut named_contexts = BTreeMap::new();
    for c in &args.build_contexts {
        let (name, value) = key_value(c, "--build-context")?;
        let ctx = if let Some(rest) = value.strip_prefix("oci-layout://") {
            // PATH[:TAG][@sha256:DIGEST] — the tag is after the last colon that follows
            // the last slash.
            let (rest, digest) = match rest.rsplit_once('@') {
                Some((r, d)) if d.starts_with("sha256:") => (r, Some(d.to_string())),
                Some(_) => bail!("--build-context {c}: a digest must be sha256:<hex>"),
                None => (rest, None),
            };
            let (path, tag) = match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => {
                    (&rest[..i], Some(rest[i + 1..].to_string()))
                }
                _ => (rest, None),
            };
            NamedContext::OciLayout {
                path: PathBuf::from(path),
                tag,
                digest,
            }
        } else if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if value.contains("://") {
            bail!("--build-context {c}: only local directories, oci-layout:// and docker-image:// are supported");
        } else {
            NamedContext::Dir(
                std::fs::canonicalize(&value)
                    .with_context(|| format!("--build-context {name}={value}"))?,
            )
        };
        named_contexts.insert(name, ctx);
    }
    let outputs = args
        .outputs
        .iter()
        .map(|o| Output::parse(o).with_context(|| format!("-o {o}")))
        .collect::<Result<Vec<_>>>()?;
    let docker_out = outputs.iter().any(|o| matches!(o, Output::Docker { .. }));
    // A docker archive gets gzip layers unless asked otherwise (docker cannot read zstd).
    let compression = match (args.compression, docker_out) {
        (Compression::Zstd, true) => Compression::Gzip,
        (c, _) => c,
    }
    .layer(args.compression_level);
    let source_date_epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH {s:?} is not a number"))
        })
        .transpose()?;
    let platform = args
        .platform
        .as_deref()
        .map(kiln_executor::plan::Platform::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let opts = BuildOptions {
        root: args
            .root
            .clone()
            .unwrap_or_else(kiln_executor::default_root),
        context,
        dockerfile,
        dockerfile_name,
        dockerfile_path,
        target: args.target.clone(),
        build_args,
        labels,
        tags: args.tags.clone(),
        secrets,
        ssh,
        named_contexts,
        compression,
        snapshotter: args.snapshotter,
        source_date_epoch,
        mapping,
        helper: std::env::current_exe().context("locating the kiln binary")?,
        outputs,
        allow,
        network,
        add_hosts,
        platform,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        jobs: args.jobs.map(usize::from),
        pull: args.pull,
        push: args.push,
        registry: args.registry.options(),
        cache_to,
        cache_from,
    };
    std::fs::create_dir_all(&opts.root)
        .with_context(|| format!("creating {}", opts.root.display()))?;
    let mut progress = crate::render::progress(mode);
    let build = kiln_executor::Build::new(opts).cancelled_by(cancel);
    // The tags written before an interrupt, for an honest last line.
    let mut tagged: Vec<String> = Vec::new();
    let outcome = build.run(&mut |e: Event| {
        if let Event::ImageWritten { tags, .. } = &e {
            tagged.clone_from(tags);
        }
        progress.event(e)
    });
    if let Some(code) = interrupts.exit_code() {
        let said = match (&outcome, tagged.is_empty()) {
            (_, true) => "the build was interrupted; nothing was tagged".to_string(),
            (Ok(_), false) => format!(
                "the build was interrupted as it ended: the image was written and tagged {}",
                tagged.join(", ")
            ),
            (Err(_), false) => format!(
                "the build was interrupted while exporting: the image was tagged {}; the outputs after that were not written",
                tagged.join(", ")
            ),
        };
        progress.finish(Outcome::Failed(&said));
        return Ok(code);
    }
    let result = match outcome {
        Ok(r) => {
            progress.finish(Outcome::Built);
            r
        }
        Err(e) => {
            progress.finish(Outcome::Failed(&e.to_string()));
            return Ok(1);
        }
    };
    if let Some(f) = &args.metadata_file {
        let meta = serde_json::json!({
            "containerimage.digest": result.manifest_digest,
            "containerimage.config.digest": result.config_digest,
            "image.name": args.tags.join(","),
        });
        std::fs::write(f, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &result.config_digest)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if mode == ProgressMode::Quiet {
        println!("{}", result.config_digest);
    }
    Ok(0)
}

/// The progress mode `-q` and `--progress` ask for, `auto` resolved; `-q` with another
/// mode than quiet is a usage error (exit 2).
fn progress_mode(quiet: bool, progress: Option<ProgressMode>) -> ProgressMode {
    match (quiet, progress) {
        (true, Some(p)) if p != ProgressMode::Quiet => clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "-q/--quiet cannot be used with --progress other than quiet\n",
        )
        .exit(),
        (true, _) => ProgressMode::Quiet,
        (false, p) => p.unwrap_or(ProgressMode::Auto).resolve(
            std::io::stderr().is_terminal(),
            std::env::var_os("CI").is_some(),
        ),
    }
}
