//! pid 1's view of the world: the root filesystem mounted, `/proc`, `/dev` and the
//! `/etc` files in place, then `pivot_root` into it. Runs inside the build's user, mount
//! and pid namespaces, so nothing here is visible outside them.

use std::ffi::{CString, NulError};
use std::fs;
use std::io;
use std::path::Path;

use rustix::mount::{mount, mount_bind, mount_bind_recursive, unmount, MountFlags, UnmountFlags};

use super::run::RunSpec;
use super::setup_error::{io_doing as ctx, sys_doing as errno, SetupError};

fn data(s: &str) -> Result<CString, NulError> {
    CString::new(s)
}

/// Makes `path` exist as an empty file (a bind-mount target).
fn touch(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path).is_err() {
        if let Some(p) = path.parent() {
            fs::create_dir_all(p)?;
        }
        fs::write(path, b"")?;
    }
    Ok(())
}

/// Prepares the root of `spec` and pivots into it.
pub(super) fn prepare(spec: &RunSpec) -> Result<(), SetupError> {
    let root = &spec.rootfs;
    let _ = rustix::system::sethostname(spec.hostname.as_bytes());
    if spec.isolated_network {
        super::loopback::up().map_err(ctx("bringing lo up".into()))?;
    }
    mount_bind_recursive(root, root)
        .map_err(errno(format!("binding {} on itself", root.display())))?;

    let proc_dir = root.join("proc");
    fs::create_dir_all(&proc_dir).map_err(ctx(format!("creating {}", proc_dir.display())))?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if mount("proc", &proc_dir, "proc", flags, None).is_err() {
        // Some containers refuse a new procfs; the host's (recursive) bind still works.
        mount_bind_recursive("/proc", &proc_dir).map_err(errno("mounting /proc".into()))?;
    }

    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(ctx(format!("creating {}", dev.display())))?;
    let mode = data("mode=755,size=65536k")?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        mode.as_c_str(),
    )
    .map_err(errno("mounting /dev".into()))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        touch(&target)?;
        let host = Path::new("/dev").join(node);
        mount_bind(&host, &target).map_err(errno(format!("binding /dev/{node}")))?;
    }
    let shm = dev.join("shm");
    fs::create_dir_all(&shm)?;
    let shm_opts = data("mode=1777,size=65536k")?;
    mount(
        "shm",
        &shm,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        shm_opts.as_c_str(),
    )
    .map_err(errno("mounting /dev/shm".into()))?;
    let pts = dev.join("pts");
    fs::create_dir_all(&pts)?;
    let pts_opts = data("newinstance,ptmxmode=0666,mode=620")?;
    if mount(
        "devpts",
        &pts,
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        pts_opts.as_c_str(),
    )
    .is_ok()
    {
        let _ = std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }

    for f in ["hosts", "resolv.conf", "hostname"] {
        let target = root.join("etc").join(f);
        // A symlink here (e.g. resolv.conf → /run/...) would be followed by the bind mount,
        // possibly out of the root: such a file is left as the image has it.
        if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        touch(&target).map_err(ctx(format!("creating /etc/{f}")))?;
        mount_bind(spec.etc_dir.join(f), &target).map_err(errno(format!("binding /etc/{f}")))?;
    }

    for (i, m) in spec.mounts.iter().enumerate() {
        super::mounts::mount_into(root, &dev, i, m)?;
    }

    rustix::process::chdir(root).map_err(errno(format!("entering {}", root.display())))?;
    rustix::process::pivot_root(".", ".").map_err(errno("pivot_root".into()))?;
    unmount(".", UnmountFlags::DETACH).map_err(errno("detaching the old root".into()))?;
    rustix::process::chdir("/").map_err(errno("chdir /".into()))?;
    Ok(())
}
