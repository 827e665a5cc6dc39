//! Starting a process in new namespaces, the rootless way.
//!
//! Three ways in:
//! - **real root**: only the other namespaces are unshared;
//! - **single mapping** (no subordinate ids): the child unshares a user namespace together
//!   with the others and maps itself: `setgroups` denied, `0 → caller` for uid and gid;
//! - **full mapping**: the child unshares only a user namespace and waits on a pipe while
//!   the parent maps `0 → caller, 1… → the subordinate range` with the setuid helpers
//!   `newuidmap`/`newgidmap`; then it re-executes itself (to regain its capabilities as
//!   root of the namespace) and unshares the other namespaces ([`finish_entry`]).
//!
//! Mount propagation is made private first, so nothing mounted inside ever shows in the
//! host's mount table, and every child dies with its parent.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use super::child;
use super::subid::{SubIdRange, SubIds};

/// Environment variable carrying the sync pipe's read end to a fully mapped child.
const SYNC_FD_ENV: &str = "KILN_SANDBOX_SYNC_FD";
/// Environment variable carrying the namespaces still to unshare after the mapping.
const UNSHARE_ENV: &str = "KILN_SANDBOX_UNSHARE";

/// `newuidmap`/`newgidmap` could not map a child's user namespace.
#[derive(Debug, thiserror::Error)]
pub enum MapHelperError {
    /// The helper ran and refused (its message).
    #[error("{} failed: {stderr}", helper.display())]
    Refused { helper: PathBuf, stderr: String },
    /// The helper could not be started.
    #[error("{} failed: {source}", helper.display())]
    NotStarted {
        helper: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the ids of the build's user namespace map to the caller's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdMapping {
    /// Real root: no user namespace.
    Root,
    /// `0 → caller` only; other ids do not exist inside.
    Single,
    /// `0 → caller`, `1..=count → start..` of the subordinate ranges.
    Full {
        uid: u32,
        gid: u32,
        uid_range: (u32, u32),
        gid_range: (u32, u32),
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// This process already is root of the build's user namespace (entered with
    /// [`enter_build_namespace`]); `single` tells whether that namespace has the single
    /// mapping. Steps unshare their other namespaces without a new user namespace.
    Entered { single: bool },
}

impl IdMapping {
    /// The best mapping this process can have.
    pub fn detect() -> IdMapping {
        if is_real_root() {
            return IdMapping::Root;
        }
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let sub = SubIds::for_user(uid);
        match (
            sub.uid_ranges.first(),
            sub.gid_ranges.first(),
            sub.newuidmap,
            sub.newgidmap,
        ) {
            (Some(u), Some(g), Some(nu), Some(ng)) => IdMapping::Full {
                uid,
                gid,
                uid_range: range(u),
                gid_range: range(g),
                newuidmap: nu,
                newgidmap: ng,
            },
            _ => IdMapping::Single,
        }
    }
}

fn range(r: &SubIdRange) -> (u32, u32) {
    (r.start, r.count)
}

pub use kiln_snapshotter::idmap::is_real_root;

fn unshare_flags(ns: Namespaces) -> rustix::thread::UnshareFlags {
    use rustix::thread::UnshareFlags as F;
    let mut flags = F::empty();
    for (on, f) in [
        (ns.mount, F::NEWNS),
        (ns.pid, F::NEWPID),
        (ns.uts, F::NEWUTS),
        (ns.ipc, F::NEWIPC),
        (ns.net, F::NEWNET),
    ] {
        if on {
            flags |= f;
        }
    }
    flags
}

/// Starts `cmd` in new namespaces with `mapping`. With [`IdMapping::Full`] the program
/// must call [`finish_entry`] first thing (the kiln binary does, through
/// [`super::helper_main`]).
pub fn spawn_in_namespaces(
    cmd: &mut Command,
    ns: Namespaces,
    mapping: &IdMapping,
) -> std::io::Result<Child> {
    if let IdMapping::Entered { .. } = mapping {
        child::enter(cmd, child::Plan::new(unshare_flags(ns), None));
        return cmd.spawn();
    }
    let IdMapping::Full {
        uid,
        gid,
        uid_range,
        gid_range,
        newuidmap,
        newgidmap,
    } = mapping
    else {
        // Root and single mapping: the child does everything itself.
        enter_namespaces(cmd, ns);
        return cmd.spawn().map_err(explain_spawn_error);
    };
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let raw = read.as_raw_fd();
    cmd.env(SYNC_FD_ENV, raw.to_string())
        .env(UNSHARE_ENV, unshare_flags(ns).bits().to_string());
    child::unshare_user_keeping(cmd, raw);
    let mut child = cmd.spawn()?;
    drop(read);
    let pid = child.id().to_string();
    for (helper, own, (start, count)) in [(newuidmap, uid, uid_range), (newgidmap, gid, gid_range)]
    {
        let out = Command::new(helper)
            .args([
                pid.as_str(),
                "0",
                &own.to_string(),
                "1",
                "1",
                &start.to_string(),
                &count.to_string(),
            ])
            .output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        if !ok {
            let _ = child.kill();
            let _ = child.wait();
            let helper = helper.clone();
            return Err(std::io::Error::other(match out {
                Ok(o) => MapHelperError::Refused {
                    helper,
                    stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
                },
                Err(source) => MapHelperError::NotStarted { helper, source },
            }));
        }
    }
    let mut w = std::fs::File::from(write);
    w.write_all(b"1")?;
    Ok(child)
}

/// The child's half of [`spawn_in_namespaces`] with a full mapping: wait for the maps,
/// re-execute to gain root's capabilities in the namespace, then unshare the other
/// namespaces. Must run while the process has a single thread; a no-op otherwise.
pub fn finish_entry() -> std::io::Result<()> {
    if let Ok(fd) = std::env::var(SYNC_FD_ENV) {
        let fd: i32 = fd.parse().map_err(std::io::Error::other)?;
        // The parent passed us this fd (the pipe's read end) and nothing else in this
        // process uses it.
        let mut pipe = child::adopt_inherited_fd(fd);
        let mut byte = [0u8; 1];
        pipe.read_exact(&mut byte)?;
        drop(pipe);
        let exe = std::env::current_exe()?;
        let err = Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env_remove(SYNC_FD_ENV)
            .exec();
        return Err(err);
    }
    if let Ok(bits) = std::env::var(UNSHARE_ENV) {
        std::env::remove_var(UNSHARE_ENV);
        // Gaining root's capabilities at the re-exec was a credential change, which
        // cleared the parent-death signal: set it again, and leave if kiln is gone already.
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        if rustix::process::getppid().is_none() {
            return Err(std::io::Error::other("kiln exited"));
        }
        let flags = rustix::thread::UnshareFlags::from_bits_retain(
            bits.parse().map_err(std::io::Error::other)?,
        );
        // Called first thing in `main`, while the process has one thread.
        child::unshare_while_single_threaded(flags)?;
        if flags.contains(rustix::thread::UnshareFlags::NEWNS) {
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )?;
        }
    }
    Ok(())
}

/// Environment variable telling a kiln process that it runs inside the build's user and
/// mount namespace, and with which mapping (`root`, `single` or `full`).
pub const BUILD_NAMESPACE_ENV: &str = "KILN_BUILD_NAMESPACE";

/// Where this process stands: `Some(mapping for the steps)` inside the build's
/// namespace, `None` outside it.
pub fn build_namespace() -> Option<IdMapping> {
    let v = std::env::var(BUILD_NAMESPACE_ENV).ok()?;
    Some(IdMapping::Entered {
        single: v == "single",
    })
}

/// Runs this program again (same arguments) inside a new user namespace (with the best
/// mapping available) and mount namespace, and returns its exit code: everything the
/// build mounts lives and dies there. The program must call [`finish_entry`] first thing
/// in `main` when [`BUILD_NAMESPACE_ENV`] is set.
pub fn enter_build_namespace(mapping: &IdMapping) -> std::io::Result<i32> {
    let mut child = spawn_build_namespace(mapping)?;
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}

/// As [`enter_build_namespace`], without waiting: the caller waits for the child (and
/// may pass signals on to it).
pub fn spawn_build_namespace(mapping: &IdMapping) -> std::io::Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    let kind = match mapping {
        IdMapping::Root | IdMapping::Entered { single: false } => "root",
        IdMapping::Single | IdMapping::Entered { single: true } => "single",
        IdMapping::Full { .. } => "full",
    };
    cmd.env(BUILD_NAMESPACE_ENV, kind);
    let ns = Namespaces {
        mount: true,
        ..Namespaces::default()
    };
    spawn_in_namespaces(&mut cmd, ns, mapping)
}

/// uid 0 without `CAP_SETFCAP` (root of a container with its capabilities dropped):
/// since Linux 5.12 a user namespace that maps uid 0 needs it, so the single mapping
/// cannot be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "uid 0 without CAP_SETFCAP cannot map itself into a user namespace (Linux 5.12+): \
     run kiln as a user other than root, or keep CAP_SETFCAP (container runtimes grant it by default)"
)]
pub struct RootWithoutSetfcap {
    #[source]
    pub source: std::io::Error,
}

/// A failure to start a child in a user namespace, explained when it is uid 0 lacking
/// `CAP_SETFCAP`.
fn explain_spawn_error(e: std::io::Error) -> std::io::Error {
    let eperm = e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error());
    if !(eperm && rustix::process::geteuid().is_root()) {
        return e;
    }
    let setfcap = rustix::thread::capabilities(None)
        .map(|c| c.effective.contains(rustix::thread::CapabilitySet::SETFCAP))
        .unwrap_or(true);
    if setfcap {
        return e;
    }
    tracing::debug!("starting a child in a user namespace: {e}; uid 0 lacks CAP_SETFCAP");
    std::io::Error::new(e.kind(), RootWithoutSetfcap { source: e })
}

/// Namespaces besides the user namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub mount: bool,
    pub pid: bool,
    pub uts: bool,
    pub ipc: bool,
    pub net: bool,
}

/// Prepares `cmd` to start in new namespaces: a user namespace with the single mapping
/// when the caller is not real root, plus `ns`.
pub fn enter_namespaces(cmd: &mut Command, ns: Namespaces) {
    let real_root = is_real_root();
    let plan = child::Plan::new(
        unshare_flags(ns),
        (!real_root).then(|| {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        }),
    );
    child::enter(cmd, plan);
}

/// Makes the process `cmd` starts receive SIGKILL when its parent dies.
pub fn die_with_parent(cmd: &mut Command) {
    child::die_with_parent(cmd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_is_root_of_its_own_namespace_and_mounts_stay_inside() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "id -u; mkdir -p \"$1\" && mount -t tmpfs tmpfs \"$1\" && grep -c \" $1 \" /proc/self/mountinfo",
            "sh",
        ]);
        let dir = tempfile_dir();
        cmd.arg(&dir);
        enter_namespaces(
            &mut cmd,
            Namespaces {
                mount: true,
                ..Namespaces::default()
            },
        );
        let out = cmd.output().expect("spawn");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().collect::<Vec<_>>(), ["0", "1"]);
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !host.contains(&dir),
            "the tmpfs leaked into the host's mount table"
        );
        let _ = std::fs::remove_dir(&dir);
    }

    fn tempfile_dir() -> String {
        let d = std::env::temp_dir().join(format!("kiln-userns-test-{}", std::process::id()));
        d.display().to_string()
    }
}
