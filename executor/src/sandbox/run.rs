//! Running one command in a root filesystem, isolated like a container, as an
//! unprivileged user.
//!
//! Process model (three processes, because a new pid namespace takes effect for the
//! children of the process that creates it):
//! ```text
//! kiln ──spawn, unsharing user+mount+uts+ipc(+net)──▶ launcher (__kiln-sandbox-launch)
//!          launcher ──spawn──▶ pid 1 (__kiln-sandbox-pid1): mounts, pivot_root, reaper
//!                                 pid 1 ──spawn──▶ the command
//! ```
//! pid 1 sets up the root: the root directory bind-mounted on itself, a new `/proc` (a
//! recursive bind of the host's when procfs may not be mounted, as inside some
//! containers), a tmpfs `/dev` with null, zero, full, random, urandom and tty bound from
//! the host plus `/dev/shm` and `/dev/pts`, and `/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname` bound from files outside the root, so they never reach a layer. It then
//! pivots into the root, runs the command and reaps every process until the command exits;
//! leaving pid 1 ends the namespace, which kills whatever the command left running.
//!
//! The command keeps Docker's default capabilities ([`super::capabilities`]); every
//! process of the chain dies with its parent, so killing kiln ends the step.
//!
//! With `isolated_network`, the command gets a network namespace whose only interface,
//! `lo`, is up.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::userns::{spawn_in_namespaces, IdMapping, Namespaces};
use crate::cancel::CancelToken;

/// What to run and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    /// The root filesystem (a directory, typically the stage's mount).
    pub rootfs: PathBuf,
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs: the command's whole environment.
    pub env: Vec<String>,
    /// Working directory inside the root, created if missing.
    pub cwd: String,
    pub hostname: String,
    /// Give the command its own network namespace (only loopback).
    pub isolated_network: bool,
    /// `USER` of the step: `name`, `uid`, `name:group` or `uid:gid`, resolved in the root's
    /// /etc/passwd and /etc/group; root when `None`.
    #[serde(default)]
    pub user: Option<String>,
    /// How ids map; [`IdMapping::detect`] gives the best one.
    pub mapping: IdMapping,
    /// What the step mounts (RUN --mount), in order.
    #[serde(default)]
    pub mounts: Vec<super::mounts::MountSpec>,
    /// Give the command kiln's own stdin, stdout and stderr (`kiln run -i`) instead of
    /// capturing its output.
    #[serde(default)]
    pub interactive: bool,
    /// Variables whose values are read from files (secrets) by pid 1, so that they never
    /// appear in a command line or a log.
    #[serde(default)]
    pub secret_env: Vec<(String, PathBuf)>,
    /// Directory holding `hosts`, `resolv.conf` and `hostname` for the command: given
    /// to [`run`], the directory to make it in (the temporary directory when empty);
    /// then set by it to the one it made.
    #[serde(default)]
    pub etc_dir: PathBuf,
    /// `--add-host` entries for `/etc/hosts`: name and address.
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `RUN --security=insecure` with the entitlement: the command keeps every
    /// capability the build's user namespace has, instead of Docker's default set.
    #[serde(default)]
    pub privileged: bool,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Exit status, or 128 + signal number.
    pub exit_code: i32,
    /// The last lines of its combined output.
    pub output_tail: String,
    /// It was killed because the build was cancelled.
    pub cancelled: bool,
}

/// Why a command could not be run (not: why it failed — that is its exit code).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// The argument that makes the kiln binary act as the launcher.
pub const LAUNCH_ARG: &str = "__kiln-sandbox-launch";
/// The argument that makes the kiln binary act as pid 1.
pub const PID1_ARG: &str = "__kiln-sandbox-pid1";

const TAIL: usize = 4096;

/// Runs `spec` with `helper` (the kiln binary, or any program that calls
/// [`super::helper_main`] first) and streams the command's output to `on_output`.
/// When `cancel` is set while the command runs, the sandbox is killed (every process of
/// the step dies with its pid namespace) and the outcome says so.
pub fn run(
    spec: &RunSpec,
    helper: &Path,
    cancel: Option<&CancelToken>,
    mut on_output: impl FnMut(&[u8]),
) -> Result<RunOutcome, SandboxError> {
    let etc = match spec.etc_dir.as_os_str().is_empty() {
        true => tempfile::tempdir(),
        false => tempfile::tempdir_in(&spec.etc_dir),
    }
    .map_err(io("creating the /etc files"))?;
    let mut spec = spec.clone();
    spec.etc_dir = etc.path().to_path_buf();
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        spec.hostname
    );
    for (name, addr) in &spec.extra_hosts {
        hosts.push_str(&format!("{addr}\t{name}\n"));
    }
    std::fs::write(etc.path().join("hosts"), hosts).map_err(io("writing hosts"))?;
    let resolv = if spec.isolated_network {
        String::new()
    } else {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    };
    std::fs::write(etc.path().join("resolv.conf"), resolv).map_err(io("writing resolv.conf"))?;
    std::fs::write(etc.path().join("hostname"), format!("{}\n", spec.hostname))
        .map_err(io("writing hostname"))?;
    // The files are bind-mounted read by the command's root user: world-readable.
    for f in ["hosts", "resolv.conf", "hostname"] {
        use std::os::unix::fs::PermissionsExt;
        let _ =
            std::fs::set_permissions(etc.path().join(f), std::fs::Permissions::from_mode(0o644));
    }

    // Mount points pid 1 will have to create; removed again afterwards, so that nothing of
    // the sandbox's own reaches the root filesystem (and so a layer).
    let mut stubs: Vec<PathBuf> = Vec::new();
    for m in &spec.mounts {
        stubs.extend(super::mounts::missing_components(&spec.rootfs, &m.target));
    }
    stubs.reverse(); // deepest first
    stubs.extend(
        STUBS
            .iter()
            .map(|s| spec.rootfs.join(s))
            .filter(|p| std::fs::symlink_metadata(p).is_err()),
    );
    // The parents of the stubs get their times back afterwards, so that a step that
    // changed nothing leaves their directories as they were (as BuildKit's stub cleaner).
    let mut parents: Vec<(PathBuf, rustix::fs::Stat)> = Vec::new();
    for p in &stubs {
        if let Some(parent) = p.parent() {
            if parents.iter().all(|(q, _)| q != parent) {
                if let Ok(st) = rustix::fs::lstat(parent) {
                    parents.push((parent.to_path_buf(), st));
                }
            }
        }
    }
    let outcome = spawn_and_wait(&spec, helper, cancel, &mut on_output);
    for p in &stubs {
        let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
    }
    // Deepest first, so restoring a child does not touch its parent's times again.
    parents.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dir, st) in &parents {
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            let ts = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime as _,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                dir,
                &ts,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
        }
    }
    outcome
}

/// Mount points in the root, files before the directories that hold them.
const STUBS: &[&str] = &[
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
    "etc",
    "proc",
    "dev",
];

fn spawn_and_wait(
    spec: &RunSpec,
    helper: &Path,
    cancel: Option<&CancelToken>,
    on_output: &mut impl FnMut(&[u8]),
) -> Result<RunOutcome, SandboxError> {
    let json = serde_json::to_string(&spec).map_err(|e| io("encoding the run spec")(e.into()))?;
    let mut cmd = Command::new(helper);
    cmd.arg(LAUNCH_ARG).arg(json);
    // One pipe for stdout and stderr: the output then arrives in the order the command
    // wrote it (two pipes read by two threads may swap an error and the line before it).
    let output = if spec.interactive {
        cmd.stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        None
    } else {
        let (reader, writer) = std::io::pipe().map_err(io("creating the output pipe"))?;
        let writer2 = writer.try_clone().map_err(io("creating the output pipe"))?;
        cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
        Some(reader)
    };
    let ns = Namespaces {
        mount: true,
        pid: true,
        uts: true,
        ipc: true,
        net: spec.isolated_network,
    };
    let mut child = spawn_in_namespaces(&mut cmd, ns, &spec.mapping).map_err(io(format!(
        "starting {} in new namespaces",
        helper.display()
    )))?;
    // The command holds the pipe's write ends until dropped: the reader sees the end of
    // the output only once the child's copies are the last.
    drop(cmd);
    let Some(mut output) = output else {
        // Interactive: the command has kiln's own terminal.
        let status = child.wait().map_err(io("waiting for the command"))?;
        return Ok(RunOutcome {
            exit_code: exit_code(status),
            output_tail: String::new(),
            cancelled: false,
        });
    };
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || pump(&mut output, tx));
    let mut tail: Vec<u8> = Vec::new();
    let mut cancelled = false;
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(chunk) => {
                on_output(&chunk);
                tail.extend_from_slice(&chunk);
                if tail.len() > 2 * TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !cancelled && cancel.is_some_and(CancelToken::is_cancelled) {
            // The launcher's death takes pid 1 (parent-death signal) and with it the
            // step's whole pid namespace; the pipes then close.
            let _ = child.kill();
            cancelled = true;
        }
    }
    let _ = reader.join();
    let status = child.wait().map_err(io("waiting for the command"))?;
    let exit_code = exit_code(status);
    if tail.len() > TAIL {
        tail.drain(..tail.len() - TAIL);
    }
    Ok(RunOutcome {
        exit_code,
        output_tail: String::from_utf8_lossy(&tail).into_owned(),
        cancelled,
    })
}

fn pump(r: &mut impl Read, tx: std::sync::mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// The launcher: starts pid 1 of the new pid namespace and passes on its exit status.
pub(super) fn launcher_main(json: &str) -> i32 {
    if let Err(e) = super::userns::finish_entry() {
        eprintln!("kiln sandbox: entering the build's namespaces: {e}");
        return 125;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kiln sandbox: {e}");
            return 125;
        }
    };
    let mut pid1 = Command::new(exe);
    pid1.arg(PID1_ARG).arg(json);
    super::userns::die_with_parent(&mut pid1);
    match pid1.status() {
        Ok(s) => exit_code(s),
        Err(e) => {
            eprintln!("kiln sandbox: starting pid 1: {e}");
            125
        }
    }
}

/// pid 1: prepares the root, runs the command, reaps until it exits.
pub(super) fn pid1_main(json: &str) -> i32 {
    let spec: RunSpec = match serde_json::from_str(json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln sandbox: bad run spec: {e}");
            return 125;
        }
    };
    let mut secret_env = Vec::new();
    for (name, file) in &spec.secret_env {
        match std::fs::read(file) {
            Ok(v) => secret_env.push((name.clone(), v)),
            Err(e) => {
                eprintln!("kiln sandbox: reading secret for ${name}: {e}");
                return 125;
            }
        }
    }
    if let Err(e) = super::rootfs::prepare(&spec) {
        eprintln!("kiln sandbox: preparing the root filesystem: {e}");
        return 125;
    }
    let Some((program, args)) = spec.argv.split_first() else {
        eprintln!("kiln sandbox: empty command");
        return 125;
    };
    if !spec.privileged {
        if let Err(e) =
            super::capabilities::restrict_bounding_set(super::capabilities::DOCKER_DEFAULT)
        {
            eprintln!("kiln sandbox: dropping capabilities: {e}");
            return 125;
        }
    }
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    let _ = std::fs::create_dir_all(cwd);
    let ids = match spec.user.as_deref().filter(|u| !u.is_empty()) {
        None => None,
        Some(user) => match super::user::resolve(user, Path::new("/etc")) {
            Ok(ids) => Some(ids),
            Err(e) => {
                eprintln!("kiln sandbox: USER {user}: {e}");
                return 125;
            }
        },
    };
    if let (Some(ids), IdMapping::Single | IdMapping::Entered { single: true }) =
        (&ids, &spec.mapping)
    {
        if ids.uid != 0 || ids.groups.iter().chain([&ids.gid]).any(|g| *g != 0) {
            eprintln!(
                "kiln sandbox: USER {} needs ids other than 0, which exist only with subordinate ids \
                 (ranges in /etc/subuid and /etc/subgid, and newuidmap/newgidmap); kiln runs with the \
                 single mapping 0 → your uid",
                spec.user.as_deref().unwrap_or_default()
            );
            return 125;
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().current_dir(cwd);
    // With the single mapping the ids were checked to be root's, which the command already
    // has; setgroups is denied there, so there is nothing to switch.
    let single = matches!(
        spec.mapping,
        IdMapping::Single | IdMapping::Entered { single: true }
    );
    if let (Some(ids), false) = (ids, single) {
        super::user::switch_to(&mut cmd, ids);
    }
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    // What the runtime adds when the image's environment does not say (as runc and
    // BuildKit): HOME of the step's user (`/` without a passwd entry) and HOSTNAME.
    let has = |key: &str| spec.env.iter().any(|kv| kv.split('=').next() == Some(key));
    if !has("HOME") {
        let user = spec.user.as_deref().unwrap_or("");
        cmd.env("HOME", super::user::home_of(user, Path::new("/etc")));
    }
    if !has("HOSTNAME") {
        cmd.env("HOSTNAME", &spec.hostname);
    }
    for (k, v) in &secret_env {
        use std::os::unix::ffi::OsStrExt;
        cmd.env(k, std::ffi::OsStr::from_bytes(v));
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln sandbox: starting {program:?}: {e}");
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let main = rustix::process::Pid::from_raw(child.id() as i32);
    // Reap every child (orphans are re-parented to pid 1) until the command exits.
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if Some(pid) == main => {
                return status
                    .exit_status()
                    .or_else(|| status.terminating_signal().map(|s| 128 + s))
                    .unwrap_or(255);
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                eprintln!("kiln sandbox: waiting: {e}");
                return 125;
            }
        }
    }
}
