//! The rootless sandbox: how kiln gets the privileges it needs without having them.
//!
//! - [`subid`]: the caller's subordinate id ranges (`/etc/subuid`, `/etc/subgid`) and the
//!   `newuidmap`/`newgidmap` helpers, which decide between a full and a single mapping;
//! - [`userns`]: starting a process in new user, mount (and other) namespaces with the
//!   single mapping `0 → caller`, or just a private mount namespace as real root.
//! - `child`: the only `unsafe` code: the hooks that run between `fork` and `exec`, and
//!   the raw calls sound only while single-threaded.
//!
//! - [`mounts`]: what a RUN mounts (tmpfs, binds for context, stages and caches, secrets).
//! - [`run`]: one command in a root filesystem with its own pid, mount, uts, ipc (and
//!   network) namespaces, `/proc`, `/dev` and `/etc` files, after `pivot_root`.

pub use setup_error::SetupError;
pub use user::UserError;

pub mod capabilities;
mod child;
mod loopback;
pub mod mounts;
mod rootfs;
pub mod run;
mod setup_error;
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

/// For programs that embed kiln: call first thing in `main`. `Some(code)`: this process
/// was one of the sandbox's helpers, or it was outside the build's user namespace and has
/// just run the whole program again inside it; exit with `code`. `None`: this process is
/// inside the namespace and goes on to build (with the mapping of
/// [`userns::build_namespace`]).
pub fn prelude() -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    let inside = std::env::var_os(userns::BUILD_NAMESPACE_ENV).is_some();
    if inside {
        if let Err(e) = userns::finish_entry() {
            eprintln!("entering the build's namespace: {e}");
            return Some(1);
        }
    }
    if let Some(code) = helper_main(&args) {
        return Some(code);
    }
    if inside {
        return None;
    }
    match userns::enter_build_namespace(&userns::IdMapping::detect()) {
        Ok(code) => Some(code),
        Err(e) => {
            eprintln!("entering the build's namespace: {e}");
            Some(1)
        }
    }
}
