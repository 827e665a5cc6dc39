//! kiln's own FUSE overlay: `lowers + upper` served at the mount point by threads of
//! kiln's process (crate `fuser`), with overlayfs's semantics and its upper-directory
//! format, so the same diff turns a step into a layer. It works where kernel overlayfs
//! cannot: inside unprivileged containers, on backing filesystems overlayfs refuses.
//!
//! - `at`: where an entry of a layer is for the system calls (a directory kept open and a
//!   path below it, never one absolute path);
//! - `layers`: resolution through the stack (whiteouts, opaque directories);
//! - `copy_up`: bringing lower entries into the upper directory before they change;
//! - `fs`: the FUSE operations (node table, attributes, namespace changes, dispatch).
//!
//! Mounting: `/dev/fuse` is opened and `mount(2)`ed here, inside the build's user and mount
//! namespace (no fusermount, no setuid helper), with `allow_other,default_permissions` so
//! the kernel checks permissions for RUN steps under any USER. When kiln dies the kernel
//! aborts the connection and the namespace takes the mount with it.

mod at;
mod copy_up;
mod fs;
mod layers;

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use super::{Backend, BackendError, BackendKind, MountGuard, ProbeError};
use crate::diff::{write_upper_diff, DiffError, DiffOptions, DiffStats};
use crate::format;

/// The FUSE overlay backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct FuseBackend;

struct FuseMount {
    root: PathBuf,
    upper: PathBuf,
    lowers: Vec<PathBuf>,
    session: Option<fuser::BackgroundSession>,
}

impl MountGuard for FuseMount {
    fn root(&self) -> &Path {
        &self.root
    }
    fn write_diff(&self, opts: &DiffOptions, out: &mut dyn Write) -> Result<DiffStats, DiffError> {
        // Pages written through mmap reach the upper directory on writeback: ask for it.
        if let Ok(f) = std::fs::File::open(&self.root) {
            let _ = rustix::fs::syncfs(&f);
        }
        write_upper_diff(&self.upper, &self.lowers, opts, out)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.root, UnmountFlags::DETACH) {
            tracing::warn!(target = %self.root.display(), "unmounting the FUSE overlay: {e}");
        }
        // The serving threads end when the kernel closes the connection (the last user of
        // the detached mount is gone); wait a little for it, then let them finish alone.
        if let Some(s) = self.session.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !s.guard.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if s.guard.is_finished() {
                let _ = s.join();
            }
        }
    }
}

fn err(context: String) -> impl FnOnce(std::io::Error) -> BackendError {
    move |source| BackendError::Io {
        backend: "fuse",
        context,
        source,
    }
}

impl Backend for FuseBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fuse
    }

    fn works_here(&self, scratch: &Path) -> Result<(), ProbeError> {
        probe_mount(scratch).map(|_| ())
    }

    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<Box<dyn MountGuard>, BackendError> {
        Ok(Box::new(mount_served(lowers, upper, work, target)?.0))
    }
}

/// Mounts the overlay at `target` and serves it from threads of this process.
fn mount_served(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(FuseMount, PassthroughCount), BackendError> {
    let spec = OverlaySpec {
        lowers: lowers.to_vec(),
        upper: upper.to_path_buf(),
        work: work.to_path_buf(),
        aufs_whiteouts: false,
    };
    let session = mount_direct(&spec, target, &FuseMountFlags::default()).map_err(err(format!(
        "mounting the FUSE overlay at {}",
        target.display()
    )))?;
    let count = session.passthrough_count();
    let session = match session.0.spawn() {
        Ok(s) => s,
        Err(e) => {
            let _ = unmount(target, UnmountFlags::DETACH);
            return Err(err("starting the FUSE session".into())(e));
        }
    };
    let mount = FuseMount {
        root: target.to_path_buf(),
        upper: upper.to_path_buf(),
        lowers: lowers.to_vec(),
        session: Some(session),
    };
    Ok((mount, count))
}

/// Mounts a one-file overlay in `scratch` and reads the file through it; returns how
/// many opens the kernel served by passthrough.
fn probe_mount(scratch: &Path) -> Result<u64, ProbeError> {
    let dirs = ["l", "u", "w", "m"].map(|d| scratch.join(d));
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(ProbeError::setup(d))?;
    }
    let [l, u, w, m] = dirs;
    let probe = l.join("probe");
    std::fs::write(&probe, b"kiln").map_err(ProbeError::setup(&probe))?;
    let (guard, count) = mount_served(&[l], &u, &w, &m).map_err(|source| ProbeError::Mount {
        hint: "it needs /dev/fuse readable and writable and a user namespace",
        source,
    })?;
    let got = std::fs::read(guard.root().join("probe")).map_err(|source| ProbeError::Read {
        kind: BackendKind::Fuse,
        source,
    })?;
    drop(guard);
    if got != b"kiln" {
        return Err(ProbeError::WrongData {
            kind: BackendKind::Fuse,
        });
    }
    Ok(count.load(std::sync::atomic::Ordering::Relaxed))
}

/// What kernel passthrough does for this process's FUSE overlay mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// Open files are read and written by the kernel on their backing files.
    Used,
    /// Not asked for: only real root may register backing files.
    NotRoot,
    /// Not asked for: `KILN_FUSE_PASSTHROUGH=0`.
    TurnedOff,
    /// Asked for, and not given: a kernel before 6.9 or without `CONFIG_FUSE_PASSTHROUGH`,
    /// or a store on a filesystem that is stacked already (an overlay).
    NotGiven,
}

/// Whether passthrough serves FUSE overlay mounts here: mounts a one-file overlay in
/// `scratch` and reads through it.
pub fn probe_passthrough(scratch: &Path) -> Result<Passthrough, ProbeError> {
    if !crate::idmap::is_real_root() {
        return Ok(Passthrough::NotRoot);
    }
    let asked = kernel_io().map_err(ProbeError::setup(scratch))?;
    if !asked.passthrough {
        return Ok(Passthrough::TurnedOff);
    }
    Ok(if probe_mount(scratch)? > 0 {
        Passthrough::Used
    } else {
        Passthrough::NotGiven
    })
}

/// What a FUSE overlay mount serves: lowers (top first), upper, work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Read AUFS-style `.wh.NAME` / `.wh..wh..opq` files in the lowers as whiteouts (stacks
    /// other tools unpacked, served by `kiln-overlay`). Off for kiln's own snapshots,
    /// which are in overlay format: there a `.wh.` name is an ordinary file (a user's ADD
    /// archive may hold one) and must never hide anything.
    pub aufs_whiteouts: bool,
}

/// A mounted FUSE overlay whose requests are not served yet.
pub struct OverlaySession(fuser::Session<fs::OverlayFs>, PassthroughCount);

impl OverlaySession {
    /// How many opens the kernel serves on their backing files (kernel passthrough), as
    /// the mount goes on.
    pub fn passthrough_count(&self) -> PassthroughCount {
        self.1.clone()
    }

    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        self.0.run()
    }
}

type NotifierCell = std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>;

/// Opens answered with a backing file so far (see [`OverlaySession::passthrough_count`]).
pub type PassthroughCount = std::sync::Arc<std::sync::atomic::AtomicU64>;

fn filesystem(
    spec: &OverlaySpec,
) -> std::io::Result<(fs::OverlayFs, NotifierCell, PassthroughCount)> {
    let fuse_work = spec.work.join("fuse");
    std::fs::create_dir_all(&fuse_work)?;
    let mut dirs = vec![spec.upper.clone()];
    dirs.extend(spec.lowers.iter().cloned());
    let notifier = NotifierCell::default();
    let count = PassthroughCount::default();
    let opaque_xattr = if crate::idmap::is_real_root() {
        format::OPAQUE_XATTR_TRUSTED
    } else {
        format::OPAQUE_XATTR_USER
    };
    let fs = fs::OverlayFs::new(
        layers::Layers::open(dirs, &fuse_work, opaque_xattr, spec.aufs_whiteouts)?,
        kernel_io()?,
        notifier.clone(),
        count.clone(),
    );
    Ok((fs, notifier, count))
}

/// What to ask the kernel for, from the environment:
/// - `KILN_FUSE_WRITEBACK` (`1`, the default, or `0`): the writeback cache. Measured:
///   untar of 30,000 files (500 MB, tar's 10 KiB writes) 5.3-6.0 s against 5.2-11.8 s
///   without, 100-byte appends 17-26x and 4 KiB writes 2-6x faster; files written in one
///   request each pay one setattr more at close (their mtime), +7 % on bench-snapshot's
///   extract.
/// - `KILN_FUSE_PASSTHROUGH` (`1`, the default, or `0`): kernel passthrough to the backing
///   files, asked for only by real root (the kernel lets no one else register a backing
///   file); where the kernel agrees it replaces the writeback cache.
///
/// Any other value is refused.
fn kernel_io() -> std::io::Result<fs::KernelIo> {
    Ok(fs::KernelIo {
        writeback: switch("KILN_FUSE_WRITEBACK")?,
        passthrough: switch("KILN_FUSE_PASSTHROUGH")? && crate::idmap::is_real_root(),
    })
}

/// An on/off environment variable: unset or `1` on, `0` off, anything else refused.
fn switch(name: &str) -> std::io::Result<bool> {
    match std::env::var(name).as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{name}={:?}: expected 0 or 1",
                other.unwrap_or("(not UTF-8)")
            ),
        )),
    }
}

fn config() -> std::io::Result<fuser::Config> {
    let mut c = fuser::Config::default();
    c.acl = fuser::SessionACL::All;
    // Serving threads: 1 by default. Measured on 2 shared cores (bench-snapshot, 30,000
    // files on tmpfs): extract 3.7-4.0 s on 1 thread, 4.1-6.1 s on 2, 5.8-9.3 s on 4; read
    // 1.2 s against 1.6-1.8 and 1.4-1.5; two untars into one mount at once were no faster
    // on 2 threads (13-17 s either way). KILN_FUSE_THREADS (1-16) overrides; any other
    // value is refused.
    let threads = match std::env::var("KILN_FUSE_THREADS") {
        Err(std::env::VarError::NotPresent) => Ok(1),
        Ok(v) => v.parse().ok().filter(|n| (1..=16).contains(n)).ok_or(v),
        Err(std::env::VarError::NotUnicode(v)) => Err(v.to_string_lossy().into_owned()),
    };
    c.n_threads = Some(threads.map_err(|v| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("KILN_FUSE_THREADS={v:?}: expected a number of serving threads from 1 to 16"),
        )
    })?);
    c.clone_fd = true;
    Ok(c)
}

/// The mount flags of a FUSE overlay mount, as `mount -o` names them: what
/// `kiln-overlay -o …` is asked for, applied by `mount(2)` or `fusermount3`. The default
/// is kiln's own mount: read-write, `nodev`, suid, exec, relatime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseMountFlags {
    pub read_only: bool,
    /// `dev` lifts the default `nodev`: only real root's mounts may have devices (the
    /// kernel keeps every mount made in a user namespace, and fusermount3 every user's
    /// mount, `nodev`), so elsewhere it is refused.
    pub dev: bool,
    pub nosuid: bool,
    /// `suid` asked for in so many words: refused through fusermount3, which makes every
    /// user's mount `nosuid`.
    pub suid: bool,
    pub noexec: bool,
    pub atime: Atime,
    pub nodiratime: bool,
    pub sync: bool,
    pub dirsync: bool,
}

/// How a mount updates access times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Atime {
    /// `relatime` (the kernel's default; also what `atime` asks for).
    #[default]
    Relative,
    /// `noatime`.
    Never,
    /// `strictatime`.
    Strict,
}

impl Default for FuseMountFlags {
    fn default() -> FuseMountFlags {
        FuseMountFlags {
            read_only: false,
            dev: false,
            nosuid: false,
            suid: false,
            noexec: false,
            atime: Atime::Relative,
            nodiratime: false,
            sync: false,
            dirsync: false,
        }
    }
}

impl FuseMountFlags {
    fn mount_flags(&self) -> std::io::Result<MountFlags> {
        let mut f = MountFlags::empty();
        if self.dev {
            if !crate::idmap::is_real_root() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "dev: only real root's FUSE mounts may hold devices (the kernel makes mounts in a user namespace nodev)",
                ));
            }
        } else {
            f |= MountFlags::NODEV;
        }
        for (on, flag) in [
            (self.read_only, MountFlags::RDONLY),
            (self.nosuid, MountFlags::NOSUID),
            (self.noexec, MountFlags::NOEXEC),
            (self.atime == Atime::Never, MountFlags::NOATIME),
            (self.atime == Atime::Strict, MountFlags::STRICTATIME),
            (self.nodiratime, MountFlags::NODIRATIME),
            (self.sync, MountFlags::SYNCHRONOUS),
            (self.dirsync, MountFlags::DIRSYNC),
        ] {
            if on {
                f |= flag;
            }
        }
        Ok(f)
    }

    fn fusermount_options(&self) -> std::io::Result<Vec<fuser::MountOption>> {
        use fuser::MountOption as O;
        let refused = |what: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{what}: fusermount3 makes every user's mount nodev and nosuid; only root may ask for {what}"),
            ))
        };
        if self.dev {
            return refused("dev");
        }
        if self.suid {
            return refused("suid");
        }
        let mut o = vec![O::NoDev, O::NoSuid];
        for (on, opt) in [
            (self.read_only, O::RO),
            (self.noexec, O::NoExec),
            (self.atime == Atime::Never, O::NoAtime),
            (self.atime == Atime::Strict, O::CUSTOM("strictatime".into())),
            (self.nodiratime, O::CUSTOM("nodiratime".into())),
            (self.sync, O::Sync),
            (self.dirsync, O::DirSync),
        ] {
            if on {
                o.push(opt);
            }
        }
        Ok(o)
    }
}

/// Mounts the overlay at `target` with `mount(2)` on a `/dev/fuse` opened here (as root,
/// or as root of a user namespace), `allow_other,default_permissions`, with `flags`.
/// Returns once the kernel's INIT is answered.
pub fn mount_direct(
    spec: &OverlaySpec,
    target: &Path,
    flags: &FuseMountFlags,
) -> std::io::Result<OverlaySession> {
    let mount_flags = flags.mount_flags()?;
    let config = config()?;
    let (fs, notifier, count) = filesystem(spec)?;
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| {
            std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("opening /dev/fuse: {e}"),
            )
        })?;
    let root_mode = rustix::fs::stat(&spec.upper)
        .map(|st| st.st_mode & 0o777)
        .unwrap_or(0o755);
    let opts = format!(
        "fd={},rootmode=4{:04o},user_id={},group_id={},allow_other,default_permissions",
        dev.as_raw_fd(),
        root_mode,
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let data = CString::new(opts).map_err(std::io::Error::other)?;
    mount(
        "kiln-overlay",
        target,
        "fuse.kiln-overlay",
        mount_flags,
        data.as_c_str(),
    )
    .map_err(|e| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("mount(2) at {}: {e}", target.display()),
        )
    })?;
    match fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, config) {
        Ok(s) => {
            let _ = notifier.set(s.notifier());
            Ok(OverlaySession(s, count))
        }
        Err(e) => {
            let _ = unmount(target, UnmountFlags::DETACH);
            Err(e)
        }
    }
}

/// Mounts the overlay through `fusermount3`, as every FUSE program does for a plain user
/// outside a user namespace (only the caller may use the mount unless /etc/fuse.conf has
/// `user_allow_other`).
pub fn mount_with_fusermount(
    spec: &OverlaySpec,
    target: &Path,
    flags: &FuseMountFlags,
) -> std::io::Result<OverlaySession> {
    let options = flags.fusermount_options()?;
    let (fs, notifier, count) = filesystem(spec)?;
    let mut c = config()?;
    c.acl = fuser::SessionACL::Owner;
    c.mount_options = vec![
        fuser::MountOption::FSName("kiln-overlay".into()),
        fuser::MountOption::Subtype("kiln-overlay".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    c.mount_options.extend(options);
    let s = fuser::Session::new(fs, target, &c)?;
    let _ = notifier.set(s.notifier());
    Ok(OverlaySession(s, count))
}
