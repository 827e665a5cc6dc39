//! The rootless sandbox: how kiln gets the privileges it needs without having them.
//!
//! - [`subid`]: the caller's subordinate id ranges (`/etc/subuid`, `/etc/subgid`) and the
//!   `newuidmap`/`newgidmap` helpers, which decide between a full and a single mapping;
//! - [`userns`]: starting a process in new user, mount (and other) namespaces with the
//!   single mapping `0 → caller`, or just a private mount namespace as real root.
//!
//! - [`mounts`]: what a RUN mounts (tmpfs, binds for context, stages and caches, secrets).
//! - [`run`]: one command in a root filesystem with its own pid, mount, uts, ipc (and
//!   network) namespaces, `/proc`, `/dev` and `/etc` files, after `pivot_root`.

pub mod capabilities;
mod loopback;
pub mod mounts;
mod rootfs;
pub mod run;
pub mod subid;
pub mod user;
pub mod userns;

/// Call first thing in `main` of a program that runs builds: when the process was started
/// as one of the sandbox's helper processes, this runs that role and returns its exit
/// code; otherwise it returns `None` and the program goes on.
pub fn helper_main(args: &[String]) -> Option<i32> {
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some(run::LAUNCH_ARG), Some(json)) => Some(run::launcher_main(json)),
        (Some(run::PID1_ARG), Some(json)) => Some(run::pid1_main(json)),
        _ => None,
    }
}
