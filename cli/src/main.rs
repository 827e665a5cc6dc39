//! `kiln`: rootless, daemonless Dockerfile builds. The binary is a thin layer over the
//! `kiln-executor` library: it parses arguments, renders results and errors, and maps them
//! to exit codes (0 ok, 1 failed, 2 usage error).

mod args;
mod bench;
mod build;
mod debug;
mod doctor;
mod images;
mod layer;
mod prune;
mod registry;
mod render;
mod root;
mod run;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Rootless, daemonless Dockerfile builds"
)]
struct Cli {
    /// Show kiln's logs in full (debug level); without it only errors are logged.
    /// KILN_LOG or RUST_LOG (a tracing filter) override either.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<build::BuildArgs>),
    /// List the images of the local store.
    Images {
        #[arg(long, env = "KILN_ROOT")]
        root: Option<std::path::PathBuf>,
    },
    /// Remove tags from the local store.
    Rmi {
        #[arg(long, env = "KILN_ROOT")]
        root: Option<std::path::PathBuf>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write an image to an archive (docker or OCI).
    Save {
        #[arg(long, env = "KILN_ROOT")]
        root: Option<std::path::PathBuf>,
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: images::SaveFormat,
        name: String,
    },
    /// Load the images of a docker or OCI archive (or OCI layout directory).
    Load {
        #[arg(long, env = "KILN_ROOT")]
        root: Option<std::path::PathBuf>,
        #[arg(short, long)]
        input: std::path::PathBuf,
    },
    /// Fetch an image from its registry into the local store.
    Pull(registry::PullArgs),
    /// Send an image of the local store to a registry.
    Push(registry::PushArgs),
    /// Save credentials for a registry (where Docker keeps them, or $REGISTRY_AUTH_FILE).
    Login(registry::LoginArgs),
    /// Remove saved credentials for a registry.
    Logout(registry::LogoutArgs),
    /// Run a command in an image of the local store, rootless, through the sandbox.
    Run(run::RunArgs),
    /// Show how much space the kiln root uses, per kind, and how much could be freed.
    Du(prune::DuArgs),
    /// Remove what nothing uses (`--all`: the build cache too); never tagged images.
    Prune(prune::PruneArgs),
    /// Benchmarks (`kiln bench snapshot`).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Look inside the frontend: how kiln reads a Dockerfile and what it would build.
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Check what this host and user allow: namespaces, id ranges, FUSE, overlayfs.
    Doctor,
    /// Probe a snapshotter backend in DIR (run by `doctor` inside namespaces).
    #[command(hide = true)]
    ProbeBackend {
        name: String,
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The same workload on every snapshotter backend (and fuse-overlayfs, a plain dir).
    Snapshot(bench::SnapshotBench),
}

/// Logs go to standard error: errors only (what a user must know arrives as progress
/// warnings), everything from debug level with `--debug`; KILN_LOG, then RUST_LOG,
/// override.
fn init_logging(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(if debug { "debug" } else { "error" }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    // The sandbox's helper processes are this binary, started with a role argument.
    let args: Vec<String> = std::env::args().collect();
    // Inside the build's namespace with subordinate ids: finish entering it (a no-op
    // otherwise). Must run while the process has one thread.
    if std::env::var_os(kiln_executor::sandbox::userns::BUILD_NAMESPACE_ENV).is_some() {
        if let Err(e) = kiln_executor::sandbox::userns::finish_entry() {
            eprintln!("error: entering the build's namespace: {e}");
            return ExitCode::from(1);
        }
    }
    if let Some(code) = kiln_executor::sandbox::helper_main(&args) {
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    let forwarder = signals::Forwarder::for_build_args(&args);
    let cli = Cli::parse();
    init_logging(cli.debug);
    let result = match cli.command {
        Command::Build(args) => match build::run(*args, forwarder) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Command::Run(args) => match run::run(args) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Command::Du(args) => match prune::du(args, &mut std::io::stdout().lock()) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Command::Prune(args) => match prune::prune(args, &mut std::io::stdout().lock()) {
            Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => Err(e),
        },
        Command::Bench(BenchCommand::Snapshot(args)) => match root::namespace() {
            Ok(root::Namespace::Exited(code)) => {
                return ExitCode::from(u8::try_from(code).unwrap_or(1))
            }
            Ok(root::Namespace::Inside(_)) => match bench::run(args, &mut std::io::stdout().lock())
            {
                Ok(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Command::Images { root } => images::images(root, &mut std::io::stdout().lock()),
        Command::Rmi { root, names } => images::rmi(root, &names, &mut std::io::stdout().lock()),
        Command::Save {
            root,
            output,
            format,
            name,
        } => images::save(root, &name, &output, format),
        Command::Load { root, input } => images::load(root, &input, &mut std::io::stdout().lock()),
        Command::Pull(args) => registry::pull(args, &mut std::io::stdout().lock()),
        Command::Push(args) => registry::push(args, &mut std::io::stdout().lock()),
        Command::Login(args) => registry::login(args, &mut std::io::stdout().lock()),
        Command::Logout(args) => registry::logout(args, &mut std::io::stdout().lock()),
        Command::Debug(cmd) => debug::run(cmd),
        Command::Doctor => doctor::run(&mut std::io::stdout().lock()),
        Command::ProbeBackend { name, dir } => doctor::probe_backend(&name, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`kiln debug parse … | head`) is not a failure.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
