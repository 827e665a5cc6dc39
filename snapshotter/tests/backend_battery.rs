//! The shared semantics battery, run against every backend: copy, overlay and fuse.
//!
//! Each case builds two lower layers in overlay format, mounts them with a fresh upper,
//! changes the mounted tree the way build steps do, checks the mounted view, and then
//! checks the layer the backend's diff produces: applied onto the lowers it must give
//! exactly the mounted view (names, kinds, modes, owners, second-precision times, content,
//! link targets, hard-link identity, xattrs).
//!
//! Mounting needs a mount namespace (and a user namespace when unprivileged), so the
//! binary re-executes itself under `unshare`; it has no libtest harness and ends with the
//! line `battery: N passed, M failed`. A backend that cannot mount here is reported skipped
//! on stderr (its cases not counted as passed) and fails under `CI`. The chown case gives a
//! file another owner where the namespace maps other ids (root, or the user's subordinate
//! ids, mapped when it has them); with one id (`KILN_TEST_IDS=single`) it says so on stderr
//! and checks the chown is refused.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use kiln_snapshotter::apply::{apply_layer, ApplyOptions, ApplyTarget};
use kiln_snapshotter::backend::copy::{materialize, CopyBackend};
use kiln_snapshotter::backend::fuse::FuseBackend;
use kiln_snapshotter::backend::overlay::OverlayBackend;
use kiln_snapshotter::backend::{Backend, BackendKind, ProbeError};
use kiln_snapshotter::diff::DiffOptions;
use kiln_snapshotter::format;
use kiln_snapshotter::testsuite::{describe_tree, Describe};

#[path = "backend_battery/deep_paths.rs"]
mod deep_paths;

type Step = fn(&Path);

struct Case {
    name: &'static str,
    /// Changes made to the mounted tree.
    change: Step,
    /// Checks on the mounted view after the change.
    check: Step,
}

/// Bottom lower: a small filesystem. Top lower: changes on it, incl. a whiteout and an
/// opaque directory, in the overlay format snapshots are stored in.
fn make_lowers(root: &Path) -> Vec<PathBuf> {
    let l0 = root.join("l0");
    let l1 = root.join("l1");
    fs::create_dir_all(l0.join("etc/conf.d")).unwrap();
    fs::create_dir_all(l0.join("dir/sub")).unwrap();
    fs::create_dir_all(l0.join("opq")).unwrap();
    fs::write(l0.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(l0.join("etc/conf.d/a.conf"), "a=1\n").unwrap();
    fs::write(l0.join("dir/sub/file"), "deep\n").unwrap();
    fs::write(l0.join("dir/top"), "top\n").unwrap();
    fs::write(l0.join("opq/hidden"), "hidden by the upper lower\n").unwrap();
    fs::write(l0.join("deleted-above"), "whited out in l1\n").unwrap();
    fs::write(l0.join("bin"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(l0.join("bin"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(l1.join("opq")).unwrap();
    fs::write(l1.join("opq/visible"), "v\n").unwrap();
    let opaque = if kiln_snapshotter::idmap::is_real_root() {
        format::OPAQUE_XATTR_TRUSTED
    } else {
        format::OPAQUE_XATTR_USER
    };
    rustix::fs::lsetxattr(
        l1.join("opq"),
        opaque,
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        l1.join("deleted-above"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    fs::write(l1.join("etc/hosts.extra"), "x\n").unwrap_or_else(|_| {
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::write(l1.join("etc/hosts.extra"), "x\n").unwrap();
    });
    vec![l1, l0]
}

/// What `mv` does: rename, or copy and delete when the kernel says EXDEV.
fn move_path(from: &Path, to: &Path) {
    match fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            materialize(&[from.to_path_buf()], to).unwrap();
            fs::remove_dir_all(from).unwrap();
        }
        Err(e) => panic!("rename {}: {e}", from.display()),
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "lowers merge (whiteout, opaque dir)",
            change: |_| {},
            check: |r| {
                assert!(!r.join("deleted-above").exists());
                assert!(!r.join("opq/hidden").exists());
                assert_eq!(fs::read_to_string(r.join("opq/visible")).unwrap(), "v\n");
                assert!(r.join("etc/hosts.extra").exists() && r.join("etc/hosts").exists());
            },
        },
        Case {
            name: "create, overwrite, append, truncate across layers",
            change: |r| {
                fs::write(r.join("new"), "new file\n").unwrap();
                fs::write(r.join("etc/hosts"), "overwritten\n").unwrap();
                fs::OpenOptions::new()
                    .append(true)
                    .open(r.join("dir/top"))
                    .unwrap()
                    .write_all(b"more\n")
                    .unwrap();
                fs::OpenOptions::new()
                    .write(true)
                    .open(r.join("dir/sub/file"))
                    .unwrap()
                    .set_len(2)
                    .unwrap();
            },
            check: |r| {
                assert_eq!(
                    fs::read_to_string(r.join("dir/top")).unwrap(),
                    "top\nmore\n"
                );
                assert_eq!(fs::read_to_string(r.join("dir/sub/file")).unwrap(), "de");
            },
        },
        Case {
            name: "unlink and re-create",
            change: |r| {
                fs::remove_file(r.join("etc/conf.d/a.conf")).unwrap();
                fs::remove_file(r.join("bin")).unwrap();
                fs::write(r.join("bin"), "recreated").unwrap();
            },
            check: |r| {
                assert!(!r.join("etc/conf.d/a.conf").exists());
                assert_eq!(fs::read_to_string(r.join("bin")).unwrap(), "recreated");
            },
        },
        Case {
            name: "rename files and whole directories across layers",
            change: |r| {
                fs::rename(r.join("etc/hosts"), r.join("hosts-moved")).unwrap();
                move_path(&r.join("dir"), &r.join("dir2"));
            },
            check: |r| {
                assert!(!r.join("dir").exists());
                assert_eq!(
                    fs::read_to_string(r.join("dir2/sub/file")).unwrap(),
                    "deep\n"
                );
                assert_eq!(
                    fs::read_to_string(r.join("hosts-moved")).unwrap(),
                    "127.0.0.1 localhost\n"
                );
            },
        },
        Case {
            name: "rmdir a lower directory, then re-create it (opaque)",
            change: |r| {
                fs::remove_dir_all(r.join("dir")).unwrap();
                fs::create_dir(r.join("dir")).unwrap();
                fs::write(r.join("dir/only"), "1").unwrap();
            },
            check: |r| {
                let names: Vec<_> = fs::read_dir(r.join("dir"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert_eq!(names, ["only"]);
            },
        },
        Case {
            name: "chmod, chown, utimes, xattr on lower files (metadata copy-up)",
            change: |r| {
                fs::set_permissions(r.join("etc/hosts"), fs::Permissions::from_mode(0o600))
                    .unwrap();
                // To another owner than the lowers' (this process's): only where the
                // namespace maps more ids than one (root, or subordinate ids).
                let chowned = rustix::fs::chownat(
                    rustix::fs::CWD,
                    r.join("bin"),
                    Some(rustix::fs::Uid::from_raw(OTHER_ID)),
                    Some(rustix::fs::Gid::from_raw(OTHER_ID)),
                    rustix::fs::AtFlags::empty(),
                );
                if other_id_mapped() {
                    chowned.unwrap();
                } else {
                    // The id is not mapped: the change must be refused, not faked.
                    assert_eq!(chowned, Err(rustix::io::Errno::INVAL));
                }
                set_mtime(&r.join("dir/top"), 1_234_567_890);
                rustix::fs::lsetxattr(
                    r.join("etc/conf.d/a.conf"),
                    "user.note",
                    b"hello",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap();
            },
            check: |r| {
                assert_eq!(
                    fs::metadata(r.join("etc/hosts")).unwrap().mode() & 0o777,
                    0o600
                );
                assert_eq!(
                    fs::metadata(r.join("dir/top")).unwrap().mtime(),
                    1_234_567_890
                );
                if other_id_mapped() {
                    let bin = fs::metadata(r.join("bin")).unwrap();
                    assert_eq!((bin.uid(), bin.gid()), (OTHER_ID, OTHER_ID));
                } else {
                    assert_ne!(fs::metadata(r.join("bin")).unwrap().uid(), OTHER_ID);
                }
                let mut v = [0u8; 16];
                let n = rustix::fs::lgetxattr(r.join("etc/conf.d/a.conf"), "user.note", &mut v[..])
                    .unwrap();
                assert_eq!(&v[..n], b"hello");
            },
        },
        Case {
            name: "hard links to lower files",
            change: |r| {
                fs::hard_link(r.join("etc/hosts"), r.join("hosts-link")).unwrap();
            },
            check: |r| {
                // One file under two names: written through one, read through the other;
                // one inode (and device), two links.
                fs::OpenOptions::new()
                    .append(true)
                    .open(r.join("hosts-link"))
                    .unwrap()
                    .write_all(b"# through the link\n")
                    .unwrap();
                assert!(fs::read_to_string(r.join("etc/hosts"))
                    .unwrap()
                    .ends_with("# through the link\n"));
                let (a, b) = (
                    fs::metadata(r.join("etc/hosts")).unwrap(),
                    fs::metadata(r.join("hosts-link")).unwrap(),
                );
                assert_eq!((a.nlink(), b.nlink()), (2, 2));
                // Rootless overlayfs (userxattr, which rules out index=on) reports a copied-up
                // file under its lower inode number and a new link under the upper one: the
                // kernel's, not the backend's; identity there is checked by the write above
                // and by inode in the layer's replay (run_case).
                if !userxattr_overlay(r) {
                    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "one inode");
                }
            },
        },
        Case {
            name: "symlinks: absolute, relative, dangling",
            change: |r| {
                symlink("/etc/hosts", r.join("abs")).unwrap();
                symlink("../etc/hosts", r.join("dir/rel")).unwrap();
                symlink("nowhere", r.join("dangling")).unwrap();
            },
            check: |r| {
                assert_eq!(
                    fs::read_link(r.join("dangling")).unwrap(),
                    Path::new("nowhere")
                );
                assert_eq!(
                    fs::read_to_string(r.join("dir/rel")).unwrap(),
                    "127.0.0.1 localhost\n"
                );
            },
        },
        Case {
            name: "special names: spaces, newline, unicode, 255-byte names, 4000-byte paths",
            change: |r| {
                fs::write(r.join("a b\nc ünï €"), "s").unwrap();
                fs::write(r.join("n".repeat(255)), "long name").unwrap();
                let mut deep = r.join("deep");
                while deep.as_os_str().len() < 3900 {
                    deep.push("d".repeat(200));
                }
                fs::create_dir_all(&deep).unwrap();
                fs::write(deep.join("f"), "deep").unwrap();
            },
            check: |r| {
                assert_eq!(fs::read_to_string(r.join("a b\nc ünï €")).unwrap(), "s");
            },
        },
        Case {
            name: "large sparse file",
            change: |r| {
                let mut f = fs::File::create(r.join("sparse")).unwrap();
                f.seek(SeekFrom::Start(20 << 20)).unwrap();
                f.write_all(b"end").unwrap();
            },
            check: |r| {
                assert_eq!(
                    fs::metadata(r.join("sparse")).unwrap().len(),
                    (20 << 20) + 3
                );
            },
        },
        Case {
            name: "open file deleted while open",
            change: |r| {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(r.join("dir/top"))
                    .unwrap();
                fs::remove_file(r.join("dir/top")).unwrap();
                f.write_all(b"written after unlink").unwrap();
                drop(f);
            },
            check: |r| assert!(!r.join("dir/top").exists()),
        },
        Case {
            name: "mmap write to a lower file",
            change: |r| {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(r.join("etc/hosts"))
                    .unwrap();
                let len = f.metadata().unwrap().len() as usize;
                // SAFETY: a fresh shared mapping of `len` bytes of a file we hold open; it is
                // written only within its length and unmapped before the file is closed.
                unsafe {
                    let p = rustix::mm::mmap(
                        std::ptr::null_mut(),
                        len,
                        rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                        rustix::mm::MapFlags::SHARED,
                        &f,
                        0,
                    )
                    .unwrap();
                    std::ptr::copy_nonoverlapping(b"MMAP".as_ptr(), p.cast::<u8>(), 4);
                    rustix::mm::msync(p, len, rustix::mm::MsyncFlags::SYNC).unwrap();
                    rustix::mm::munmap(p, len).unwrap();
                }
            },
            check: |r| {
                assert!(fs::read_to_string(r.join("etc/hosts"))
                    .unwrap()
                    .starts_with("MMAP0.0.1 localhost"))
            },
        },
        Case {
            name: "fifo",
            change: |r| {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    r.join("pipe"),
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o644),
                    0,
                )
                .unwrap();
            },
            check: |r| {
                assert!(fs::symlink_metadata(r.join("pipe"))
                    .unwrap()
                    .file_type()
                    .is_fifo())
            },
        },
    ]
}

/// Whether `mnt` is a kernel overlay mounted with `userxattr` (an unprivileged mount).
fn userxattr_overlay(mnt: &Path) -> bool {
    let mnt = mnt.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*mnt))
        .filter_map(|l| l.split_once(" - "))
        .any(|(_, rest)| {
            let f: Vec<&str> = rest.split(' ').collect();
            f[0] == "overlay"
                && f.get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "userxattr"))
        })
}

/// The owner `bin` is given in the chown case: not the lowers' (this process's).
const OTHER_ID: u32 = 1234;

/// Whether this namespace maps `OTHER_ID` as a user and as a group.
fn other_id_mapped() -> bool {
    let maps = |file: &str| {
        fs::read_to_string(file).unwrap().lines().any(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            f.len() == 3 && f[0] <= OTHER_ID && OTHER_ID - f[0] < f[2]
        })
    };
    maps("/proc/self/uid_map") && maps("/proc/self/gid_map")
}

/// This user's first subordinate id range in `file` (`/etc/subuid`, `/etc/subgid`).
fn subordinate_ids(file: &str) -> Option<(u32, u32)> {
    let uid = rustix::process::getuid().as_raw().to_string();
    let name = fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
    });
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        (who == uid || Some(who) == name.as_deref())
            .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
            .flatten()
    })
}

/// A description of every entry below `root`, for comparing trees.
fn tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    describe_tree(root, Describe::default())
}

/// `lowers` mounted on `backend` with an upper, work and mount directory in `scratch`;
/// returns the mount and the upper directory.
fn mount_in(
    backend: &dyn Backend,
    lowers: &[PathBuf],
    scratch: &Path,
) -> Result<(Box<dyn kiln_snapshotter::backend::MountGuard>, PathBuf), String> {
    let (upper, work, mnt) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("mnt"),
    );
    for d in [&upper, &work, &mnt] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let guard = backend
        .mount(lowers, &upper, &work, &mnt)
        .map_err(|e| e.to_string())?;
    Ok((guard, upper))
}

fn run_case(backend: &dyn Backend, case: &Case, scratch: &Path) -> Result<(), String> {
    let lowers = make_lowers(&scratch.join("lowers"));
    let (guard, _) = mount_in(backend, &lowers, scratch)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (case.change)(guard.root());
        (case.check)(guard.root());
    }));
    if let Err(p) = outcome {
        return Err(format!("mounted view: {}", panic_text(&p)));
    }
    let view = tree(guard.root());
    let mut layer = Vec::new();
    guard
        .write_diff(&DiffOptions::default(), &mut layer)
        .map_err(|e| e.to_string())?;
    drop(guard);
    // The layer, applied on the lowers, must give the mounted view.
    let replay = scratch.join("replay");
    materialize(&lowers, &replay).map_err(|e| e.to_string())?;
    let opts = ApplyOptions {
        target: ApplyTarget::Merged,
        ..ApplyOptions::default()
    };
    apply_layer(layer.as_slice(), &replay, &opts).map_err(|e| e.to_string())?;
    // Hard links are one inode after applying the layer (the hard-link case's names).
    if let (Ok(a), Ok(b)) = (
        fs::metadata(replay.join("etc/hosts")),
        fs::metadata(replay.join("hosts-link")),
    ) {
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return Err("etc/hosts and hosts-link are two inodes after the layer".into());
        }
    }
    let got = tree(&replay);
    if got != view {
        let mut diffs = Vec::new();
        for (k, v) in &view {
            if got.get(k) != Some(v) {
                diffs.push(format!(
                    "  {}: view {v:?}, layer gives {:?}",
                    String::from_utf8_lossy(k),
                    got.get(k)
                ));
            }
        }
        for k in got.keys().filter(|k| !view.contains_key(*k)) {
            diffs.push(format!(
                "  {}: only after applying the layer",
                String::from_utf8_lossy(k)
            ));
        }
        return Err(format!("layer round trip differs:\n{}", diffs.join("\n")));
    }
    Ok(())
}

/// 80 lowers with long paths: more than one mount call's options can hold.
fn deep_stack() -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut lowers = Vec::new();
    for i in 0..80 {
        let l = tmp.path().join(format!("{}-{i:03}", "layer".repeat(12)));
        fs::create_dir_all(&l).map_err(|e| e.to_string())?;
        fs::write(l.join(format!("f{i:03}")), format!("{i}")).map_err(|e| e.to_string())?;
        fs::write(l.join("shared"), format!("{i}")).map_err(|e| e.to_string())?;
        lowers.push(l);
    }
    lowers.reverse(); // top first: layer 79 on top
    let (guard, _) = mount_in(&OverlayBackend, &lowers, tmp.path())?;
    let n = fs::read_dir(guard.root())
        .map_err(|e| e.to_string())?
        .count();
    let shared = fs::read_to_string(guard.root().join("shared")).map_err(|e| e.to_string())?;
    if n != 81 || shared != "79" {
        return Err(format!("{n} entries, shared = {shared:?}"));
    }
    Ok(())
}

/// A mount program with fuse-overlayfs's command line (`kiln-overlay`): mounted by running
/// it, unmounted with umount(2).
struct ProgramBackend {
    program: PathBuf,
}

struct ProgramMount {
    root: PathBuf,
    upper: PathBuf,
    lowers: Vec<PathBuf>,
}

impl kiln_snapshotter::backend::MountGuard for ProgramMount {
    fn root(&self) -> &Path {
        &self.root
    }
    fn write_diff(
        &self,
        opts: &DiffOptions,
        out: &mut dyn Write,
    ) -> Result<kiln_snapshotter::diff::DiffStats, kiln_snapshotter::diff::DiffError> {
        if let Ok(f) = fs::File::open(&self.root) {
            let _ = rustix::fs::syncfs(&f);
        }
        kiln_snapshotter::diff::write_upper_diff(&self.upper, &self.lowers, opts, out)
    }
}

impl Drop for ProgramMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.root, rustix::mount::UnmountFlags::DETACH);
    }
}

impl Backend for ProgramBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fuse
    }
    fn name(&self) -> &'static str {
        "kiln-overlay"
    }
    fn works_here(&self, _scratch: &Path) -> Result<(), ProbeError> {
        std::fs::metadata(&self.program)
            .map(drop)
            .map_err(ProbeError::setup(&self.program))
    }
    fn mount(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<
        Box<dyn kiln_snapshotter::backend::MountGuard>,
        kiln_snapshotter::backend::BackendError,
    > {
        let lowerdir: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let st = Command::new(&self.program)
            .arg("-o")
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lowerdir.join(":"),
                upper.display(),
                work.display()
            ))
            .arg(target)
            .status();
        match st {
            Ok(s) if s.success() => Ok(Box::new(ProgramMount {
                root: target.to_path_buf(),
                upper: upper.to_path_buf(),
                lowers: lowers.to_vec(),
            })),
            other => Err(kiln_snapshotter::backend::BackendError::Io {
                backend: "kiln-overlay",
                context: format!("running {}", self.program.display()),
                source: std::io::Error::other(format!("{other:?}")),
            }),
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    if std::env::var_os("KILN_BATTERY_IN_NS").is_none() {
        let exe = std::env::current_exe().expect("own path");
        let mut cmd = Command::new("unshare");
        if !rustix::process::geteuid().is_root() {
            cmd.arg("--map-root-user");
            // Subordinate ids too, when this user has them (not with KILN_TEST_IDS=single),
            // so the chown case can give a file another owner.
            let single = std::env::var("KILN_TEST_IDS").as_deref() == Ok("single");
            if let (false, Some((u, nu)), Some((g, ng))) = (
                single,
                subordinate_ids("/etc/subuid"),
                subordinate_ids("/etc/subgid"),
            ) {
                cmd.arg(format!("--map-users={u},1,{nu}"))
                    .arg(format!("--map-groups={g},1,{ng}"));
            }
        }
        cmd.args(["--mount", "--propagation", "private"])
            .arg(exe)
            .env("KILN_BATTERY_IN_NS", "1");
        return match cmd.status() {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(s) => {
                eprintln!("battery: failed ({s})");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("battery: cannot run unshare: {e}");
                ExitCode::FAILURE
            }
        };
    }
    std::panic::set_hook(Box::new(|_| {}));
    if !other_id_mapped() {
        eprintln!(
            "skipped: chown to another id (only one id is mapped here); \
             checked that it is refused instead"
        );
        let single = std::env::var("KILN_TEST_IDS").as_deref() == Ok("single");
        if std::env::var_os("CI").is_some() && !single {
            eprintln!("battery: under CI only the single-mapping user may lack other ids");
            return ExitCode::FAILURE;
        }
    }
    let mut backends: Vec<Box<dyn Backend>> = vec![
        Box::new(CopyBackend),
        Box::new(OverlayBackend),
        Box::new(FuseBackend),
    ];
    // The FUSE overlay once more through its mount program, when one is given
    // (scripts/test.sh passes kiln-overlay).
    if let Some(p) = std::env::var_os("KILN_OVERLAY_PROGRAM") {
        backends.push(Box::new(ProgramBackend {
            program: PathBuf::from(p),
        }));
    }
    if let Ok(only) = std::env::var("KILN_BATTERY_BACKENDS") {
        backends.retain(|b| only.split(',').any(|n| n == b.name()));
    }
    let (mut passed, mut failed) = (0, 0);
    let ci = std::env::var_os("CI").is_some();
    let mut overlay_ok = false;
    for backend in &backends {
        let probe_dir = tempfile::tempdir().expect("tempdir");
        if let Err(why) = backend.works_here(probe_dir.path()) {
            eprintln!(
                "skipped: {}: cannot mount here, none of its cases run: {why}",
                backend.name()
            );
            if ci {
                failed += 1;
            }
            continue;
        }
        overlay_ok |= backend.kind() == BackendKind::Overlay;
        for case in cases() {
            let scratch = tempfile::tempdir().expect("tempdir");
            match run_case(backend.as_ref(), &case, scratch.path()) {
                Ok(()) => {
                    passed += 1;
                    println!("ok   {} / {}", backend.name(), case.name);
                }
                Err(why) => {
                    failed += 1;
                    println!("FAIL {} / {}: {why}", backend.name(), case.name);
                }
            }
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        let deep = "a path near PATH_MAX inside the mount, past it outside";
        match deep_paths::run_case(backend.as_ref(), scratch.path()) {
            Ok(()) => {
                passed += 1;
                println!("ok   {} / {deep}", backend.name());
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {} / {deep}: {why}", backend.name());
            }
        }
    }
    if !overlay_ok {
        // Not "ok": the case did not run.
        eprintln!("skipped: overlay / deep stack: overlay did not mount here");
        if ci && backends.iter().any(|b| b.kind() == BackendKind::Overlay) {
            failed += 1;
        }
    } else {
        match deep_stack() {
            Ok(()) => {
                passed += 1;
                println!("ok   overlay / a stack too long for one mount call is flattened");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL overlay / deep stack: {why}");
            }
        }
    }
    println!("battery: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
