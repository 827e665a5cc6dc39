//! Starting a process in new namespaces, the rootless way.
//!
//! As an unprivileged user the child unshares a user namespace together with the others
//! it needs, and maps itself: `setgroups` is denied, then `0 → caller` is written to its own
//! uid and gid maps (the single mapping; a full mapping through `newuidmap` needs a
//! second process to write the maps and comes with the RUN executor). As real root only the
//! other namespaces are unshared. Either way mount propagation is made private first, so
//! nothing mounted inside ever shows in the host's mount table.

use std::os::unix::process::CommandExt;
use std::process::Command;

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
    let real_root = rustix::process::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(false);
    let plan = child::Plan::new(
        ns,
        (!real_root).then(|| {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        }),
    );
    // SAFETY: see `child::Plan::run`: between fork and exec it only makes system calls on
    // buffers prepared before the fork; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || plan.run());
    }
}

/// Makes the process `cmd` starts receive SIGKILL when its parent dies.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is a single async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
}

/// The code that runs in the child between `fork` and `exec`.
mod child {
    use std::io;

    use rustix::fs::{Mode, OFlags};
    use rustix::thread::UnshareFlags;

    use super::Namespaces;

    /// Everything the child needs, formatted before the fork.
    pub(super) struct Plan {
        flags: UnshareFlags,
        /// `Some((uid_map line, gid_map line))` when a user namespace is made.
        maps: Option<(Vec<u8>, Vec<u8>)>,
    }

    impl Plan {
        pub(super) fn new(ns: Namespaces, caller: Option<(u32, u32)>) -> Plan {
            let mut flags = UnshareFlags::empty();
            for (on, f) in [
                (ns.mount, UnshareFlags::NEWNS),
                (ns.pid, UnshareFlags::NEWPID),
                (ns.uts, UnshareFlags::NEWUTS),
                (ns.ipc, UnshareFlags::NEWIPC),
                (ns.net, UnshareFlags::NEWNET),
            ] {
                if on {
                    flags |= f;
                }
            }
            if caller.is_some() {
                flags |= UnshareFlags::NEWUSER;
            }
            Plan {
                flags,
                maps: caller.map(|(u, g)| {
                    (
                        format!("0 {u} 1\n").into_bytes(),
                        format!("0 {g} 1\n").into_bytes(),
                    )
                }),
            }
        }

        fn write(path: &str, data: &[u8]) -> io::Result<()> {
            let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
            rustix::io::write(&fd, data)?;
            Ok(())
        }

        /// Runs in the forked child. Invariants: the child has one thread (fork copies only
        /// the caller's), and this function makes only system calls on data owned by
        /// `self`, so it is async-signal-safe.
        pub(super) fn run(&self) -> io::Result<()> {
            // Die with kiln: a killed build leaves no step running.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // SAFETY: the child is single-threaded, so no other thread shares the fd
            // table or namespaces being replaced.
            unsafe { rustix::thread::unshare_unsafe(self.flags) }?;
            if let Some((uid_map, gid_map)) = &self.maps {
                Self::write("/proc/self/setgroups", b"deny")?;
                Self::write("/proc/self/uid_map", uid_map)?;
                Self::write("/proc/self/gid_map", gid_map)?;
            }
            if self.flags.contains(UnshareFlags::NEWNS) {
                rustix::mount::mount_change(
                    "/",
                    rustix::mount::MountPropagationFlags::PRIVATE
                        | rustix::mount::MountPropagationFlags::REC,
                )?;
            }
            Ok(())
        }
    }
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
