//! `kiln-overlay`: kiln's FUSE overlay as a *mount program*, a drop-in for
//! fuse-overlayfs (containers/storage's `mount_program`, `mount -t fuse.kiln-overlay`).
//! The command lines it takes are in `options`.
//!
//! It returns once the mount is live and serves from a detached process (`-f`: in the
//! foreground), which exits when the filesystem is unmounted (`umount`, `fusermount3 -u`).
//! Exit codes: 0 mounted, 1 the mount failed, 2 a bad command line.

mod detach;
mod options;
mod serve;

use std::io::BufRead;
use std::process::{Command, ExitCode, Stdio};

/// The argument that makes the binary the detached serving process.
const SERVE_ARG: &str = "__kiln-overlay-serve";

const USAGE: &str =
    "usage: kiln-overlay -o lowerdir=L1:L2,upperdir=U,workdir=W [-f] [-d] MOUNTPOINT
       kiln-overlay SOURCE MOUNTPOINT -o OPTIONS   (mount.fuse3's convention)";

fn init_logging(debug: bool) {
    let filter = if debug {
        tracing_subscriber::EnvFilter::new("debug,fuser=debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kiln-overlay: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SERVE_ARG) {
        return serve_detached(&args[1..]);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("kiln-overlay {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let req = match options::parse(&args) {
        Ok(r) => r,
        Err(e) => return fail(2, e),
    };
    init_logging(req.debug);
    if req.foreground {
        return match serve::serve(&req, None) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, e),
        };
    }
    detach_and_wait(&args)
}

/// Starts the serving process and returns once it says the mount is live.
fn detach_and_wait(args: &[String]) -> ExitCode {
    let (read, write) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(1, format_args!("creating a pipe: {e}")),
    };
    if let Err(e) = detach::inherit(&write) {
        return fail(1, format_args!("passing the pipe on: {e}"));
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(1, format_args!("finding this program: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg(SERVE_ARG)
        .args(args)
        .env(
            detach::READY_FD_ENV,
            std::os::fd::AsRawFd::as_raw_fd(&write).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    detach::in_new_session(&mut cmd);
    let child = cmd.spawn();
    drop(write);
    if let Err(e) = child {
        return fail(1, format_args!("starting the serving process: {e}"));
    }
    let mut line = String::new();
    let mut r = std::io::BufReader::new(std::fs::File::from(read));
    let _ = r.read_line(&mut line);
    match line.trim() {
        "ok" => ExitCode::SUCCESS,
        "" => fail(1, "the serving process ended before the mount was live"),
        e => fail(1, e),
    }
}

/// The detached serving process (`kiln-overlay __kiln-overlay-serve ARGS…`).
fn serve_detached(args: &[String]) -> ExitCode {
    let ready = detach::take_ready_pipe();
    match options::parse(args) {
        Ok(req) => {
            init_logging(req.debug);
            match serve::serve(&req, ready) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("kiln-overlay: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            if let Some(mut f) = ready {
                let _ = std::io::Write::write_fmt(&mut f, format_args!("{e}\n"));
            }
            ExitCode::from(2)
        }
    }
}
