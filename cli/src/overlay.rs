//! `kiln-overlay` (the `kiln` binary called by that name) and `kiln overlay mount`: kiln's
//! FUSE overlay as a *mount program*, a drop-in for fuse-overlayfs.
//!
//! - fuse-overlayfs's command line: `kiln-overlay -o lowerdir=L1:L2,upperdir=U,workdir=W
//!   [-o more] [-f] [-d] MOUNTPOINT` (leftmost lower on top; no `upperdir`: read-only);
//! - mount.fuse3's convention: `kiln-overlay SOURCE MOUNTPOINT -o OPTIONS`, so that
//!   `mount -t fuse.kiln-overlay kiln-overlay MNT -o …` works with the program on PATH.
//!
//! It returns once the mount is live and serves from a detached process (`-f`: in the
//! foreground), which exits when the filesystem is unmounted (`umount`, `fusermount3 -u`).
//! As root, or inside a user namespace, it mounts with `mount(2)`; as a plain user
//! outside one, through `fusermount3`.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kiln_snapshotter::backend::fuse::{mount_direct, mount_with_fusermount, OverlaySpec};

/// The argument that makes the binary the detached serving process.
pub const SERVE_ARG: &str = "__kiln-overlay-serve";
const READY_FD_ENV: &str = "KILN_OVERLAY_READY_FD";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub read_only: bool,
    pub foreground: bool,
    pub debug: bool,
}

/// Splits a `-o` value at commas not escaped with a backslash.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// Splits `lowerdir` at colons not escaped with a backslash.
fn split_lowers(s: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                cur.push(':');
                chars.next();
            }
            ':' => out.push(PathBuf::from(std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.push(PathBuf::from(cur));
    out.into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// Options a mount program is given that kiln-overlay has no use for.
const IGNORED: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "noacl",
    "acl",
    "sync",
    "async",
    "dirsync",
    "volatile",
    "allow_other",
    "allow_root",
    "default_permissions",
    "auto_unmount",
    "static_nlink",
    "xino",
    "index",
    "redirect_dir",
    "metacopy",
    "userxattr",
    "lazytime",
    "nolazytime",
    "debug",
    "noxattrs",
    "threaded",
    "fast_ino",
    "squash_to_root",
    "squash_to_uid",
    "squash_to_gid",
    "xattr_permissions",
    "plugins",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "fsync",
    "timeout",
    "max_idle_threads",
];

pub fn parse(args: &[String]) -> Result<Request, String> {
    let mut options = Vec::new();
    let mut positionals = Vec::new();
    let (mut foreground, mut debug) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.extend(split_options(it.next().ok_or("-o needs a value")?)),
            "-f" => foreground = true,
            "-d" | "--debug" => {
                debug = true;
                foreground = true;
            }
            "-s" => {}
            s if s.starts_with("-o") => options.extend(split_options(&s[2..])),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => positionals.push(s.to_string()),
        }
    }
    let mountpoint = match positionals.as_slice() {
        [m] | [_, m] => PathBuf::from(m),
        [] => return Err("no mount point given".into()),
        _ => return Err(format!("too many arguments: {}", positionals.join(" "))),
    };
    let mut req = Request {
        lowers: Vec::new(),
        upper: None,
        work: None,
        mountpoint,
        read_only: false,
        foreground,
        debug,
    };
    for o in options {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("lowerdir", Some(v)) => req.lowers = split_lowers(v),
            ("upperdir", Some(v)) => req.upper = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => req.work = Some(PathBuf::from(v)),
            ("ro", None) => req.read_only = true,
            ("uidmapping" | "gidmapping", _) => {
                return Err(format!(
                    "{k} is not supported: kiln-overlay serves ids as they are on disk; run it inside the user namespace that maps them (as containers/storage does without {k})"
                ))
            }
            (k, _) if IGNORED.contains(&k) => {}
            (k, _) => tracing::debug!("ignoring mount option {k}"),
        }
    }
    if req.lowers.is_empty() {
        return Err("no lowerdir given (-o lowerdir=L1:L2,...)".into());
    }
    if req.upper.is_some() != req.work.is_some() {
        return Err("upperdir and workdir go together".into());
    }
    if req.upper.is_none() {
        req.read_only = true;
    }
    Ok(req)
}

fn canonical(p: &PathBuf) -> Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Mounts and serves in this process until unmounted; `ready` hears "ok" or the error.
fn serve(req: &Request, mut ready: Option<std::fs::File>) -> i32 {
    let report = |ready: &mut Option<std::fs::File>, msg: &str| {
        if let Some(f) = ready.as_mut() {
            let _ = writeln!(f, "{msg}");
        } else if msg != "ok" {
            eprintln!("kiln-overlay: {msg}");
        }
    };
    let prepared = (|| -> Result<(OverlaySpec, Option<tempfile::TempDir>), String> {
        let lowers = req
            .lowers
            .iter()
            .map(canonical)
            .collect::<Result<Vec<_>, _>>()?;
        let (upper, work, tmp) = match (&req.upper, &req.work) {
            (Some(u), Some(w)) => (canonical(u)?, canonical(w)?, None),
            _ => {
                let t = tempfile::tempdir().map_err(|e| e.to_string())?;
                let (u, w) = (t.path().join("upper"), t.path().join("work"));
                std::fs::create_dir_all(&u).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(&w).map_err(|e| e.to_string())?;
                (u, w, Some(t))
            }
        };
        Ok((
            OverlaySpec {
                lowers,
                upper,
                work,
            },
            tmp,
        ))
    })();
    let (spec, _tmp) = match prepared {
        Ok(p) => p,
        Err(e) => {
            report(&mut ready, &e);
            return 1;
        }
    };
    let target = match canonical(&req.mountpoint) {
        Ok(t) => t,
        Err(e) => {
            report(&mut ready, &e);
            return 1;
        }
    };
    let session = if rustix::process::geteuid().is_root() {
        mount_direct(&spec, &target, req.read_only)
    } else {
        mount_with_fusermount(&spec, &target, req.read_only)
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            report(&mut ready, &format!("mounting {}: {e}", target.display()));
            return 1;
        }
    };
    report(&mut ready, "ok");
    drop(ready);
    match session.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kiln-overlay: {e}");
            1
        }
    }
}

/// `kiln-overlay ARGS…`: returns the exit code.
pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: kiln-overlay -o lowerdir=L1:L2,upperdir=U,workdir=W [-f] [-d] MOUNTPOINT\n       kiln-overlay SOURCE MOUNTPOINT -o OPTIONS   (mount.fuse3's convention)");
        return 0;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("kiln-overlay {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let req = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiln-overlay: {e}");
            return 2;
        }
    };
    if req.foreground {
        if req.debug {
            std::env::set_var("KILN_LOG", "debug,fuser=debug");
        }
        return serve(&req, None);
    }
    // Detach: a new process mounts and serves; this one returns once the mount is live.
    let (read, write) = match rustix::pipe::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln-overlay: {e}");
            return 1;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kiln-overlay: {e}");
            return 1;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg(SERVE_ARG)
        .args(args)
        .env(READY_FD_ENV, write.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is one async-signal-safe system call, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let _ = rustix::process::setsid();
                Ok(())
            });
        }
    }
    let child = cmd.spawn();
    drop(write);
    if let Err(e) = child {
        eprintln!("kiln-overlay: starting the serving process: {e}");
        return 1;
    }
    let mut line = String::new();
    let mut r = std::io::BufReader::new(std::fs::File::from(read));
    let _ = r.read_line(&mut line);
    match line.trim() {
        "ok" => 0,
        "" => {
            eprintln!("kiln-overlay: the serving process ended before the mount was live");
            1
        }
        e => {
            eprintln!("kiln-overlay: {e}");
            1
        }
    }
}

/// The detached serving process (`kiln __kiln-overlay-serve ARGS…`).
pub fn serve_main(args: &[String]) -> i32 {
    let ready = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        // SAFETY: the parent passed this fd (its pipe's write end) to us alone.
        .map(|fd| std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    std::env::remove_var(READY_FD_ENV);
    match parse(args) {
        Ok(req) => serve(&req, ready),
        Err(e) => {
            if let Some(mut f) = ready {
                let _ = writeln!(f, "{e}");
            }
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fuse_overlayfs_and_mount_fuse_conventions() {
        let r = parse(&s(&[
            "-o",
            "lowerdir=/a:/b\\:c,upperdir=/u,workdir=/w,noatime,fsync=0",
            "/mnt",
        ]))
        .unwrap();
        assert_eq!(r.lowers, [PathBuf::from("/a"), PathBuf::from("/b:c")]);
        assert_eq!(r.upper, Some(PathBuf::from("/u")));
        assert!(!r.read_only && !r.foreground);
        let r = parse(&s(&["kiln-overlay", "/mnt", "-o", "lowerdir=/a,dev,suid"])).unwrap();
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
        assert!(r.read_only, "no upperdir: read-only");
        assert!(parse(&s(&["-o", "lowerdir=/a,uidmapping=0:1:1", "/m"]))
            .unwrap_err()
            .contains("uidmapping"));
        assert!(parse(&s(&["/m"])).is_err());
        assert!(
            parse(&s(&["-f", "-o", "lowerdir=/a", "/m"]))
                .unwrap()
                .foreground
        );
    }
}
