//! The command lines kiln-overlay accepts, as fuse-overlayfs and mount.fuse3 give them:
//!
//! - `kiln-overlay -o lowerdir=L1:L2,upperdir=U,workdir=W [-o more] [-f] [-d] MOUNTPOINT`
//!   (leftmost lower on top; no `upperdir`: read-only);
//! - `kiln-overlay SOURCE MOUNTPOINT -o OPTIONS` (mount.fuse3's convention).
//!
//! Mount flags (`ro`, `nosuid`, `noexec`, `nodev`, `noatime`, `sync`, …) are applied to
//! the mount ([`FuseMountFlags`]); options that change what the mount shows and that
//! kiln-overlay does not implement (`uidmapping`, `squash_to_*`, …) are refused, and so
//! is any option it does not know; [`NO_EFFECT`] lists the ones accepted without effect
//! (the defaults they restate, and fuse-overlayfs tuning knobs for what kiln-overlay
//! does anyway or does not have).

use std::path::PathBuf;

use kiln_snapshotter::backend::fuse::{Atime, FuseMountFlags};

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub mountpoint: PathBuf,
    /// The mount's flags (read-only also when there is no upper).
    pub flags: FuseMountFlags,
    pub foreground: bool,
    pub debug: bool,
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("-o needs a value")]
    MissingValue,
    #[error("unknown option {0}")]
    UnknownFlag(String),
    #[error("no mount point given")]
    NoMountpoint,
    #[error("too many arguments: {0}")]
    TooManyArguments(String),
    #[error("{0} is not supported: kiln-overlay serves ids as they are on disk; run it inside the user namespace that maps them (as containers/storage does without {0})")]
    IdMapping(String),
    #[error("{0} is not supported: kiln-overlay serves owners as they are on disk")]
    Squash(String),
    #[error("unknown mount option {0:?} (kiln-overlay takes lowerdir, upperdir, workdir, ro and fuse-overlayfs's flags that change nothing here)")]
    UnknownOption(String),
    #[error("no lowerdir given (-o lowerdir=L1:L2,...)")]
    NoLowers,
    #[error("upperdir and workdir go together")]
    UpperWithoutWork,
}

/// Options a mount program is given that change nothing here: mount flags (the kernel,
/// or the caller's `mount`, applies them), FUSE flags kiln-overlay sets itself, and
/// fuse-overlayfs's tuning knobs.
pub const NO_EFFECT: &[&str] = &[
    "rw",
    "noacl",
    "acl",
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

/// Splits `s` at `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&sep) => {
                cur.push(sep);
                chars.next();
            }
            c if c == sep => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// Parses a command line (without the program name).
pub fn parse(args: &[String]) -> Result<Request, OptionsError> {
    let mut options = Vec::new();
    let mut positionals = Vec::new();
    let (mut foreground, mut debug) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.extend(split_unescaped(
                it.next().ok_or(OptionsError::MissingValue)?,
                ',',
            )),
            "-f" => foreground = true,
            "-d" | "--debug" => {
                debug = true;
                foreground = true;
            }
            "-s" => {}
            s if s.starts_with("-o") => options.extend(split_unescaped(&s[2..], ',')),
            s if s.starts_with('-') && s.len() > 1 => {
                return Err(OptionsError::UnknownFlag(s.to_string()))
            }
            s => positionals.push(s.to_string()),
        }
    }
    let mountpoint = match positionals.as_slice() {
        [m] | [_, m] => PathBuf::from(m),
        [] => return Err(OptionsError::NoMountpoint),
        _ => return Err(OptionsError::TooManyArguments(positionals.join(" "))),
    };
    let mut req = Request {
        lowers: Vec::new(),
        upper: None,
        work: None,
        mountpoint,
        flags: FuseMountFlags::default(),
        foreground,
        debug,
    };
    for o in options {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("lowerdir", Some(v)) => {
                req.lowers = split_unescaped(v, ':')
                    .into_iter()
                    .map(PathBuf::from)
                    .collect()
            }
            ("upperdir", Some(v)) => req.upper = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => req.work = Some(PathBuf::from(v)),
            ("ro", None) => req.flags.read_only = true,
            ("nodev", None) => req.flags.dev = false,
            ("dev", None) => req.flags.dev = true,
            ("nosuid", None) => (req.flags.nosuid, req.flags.suid) = (true, false),
            ("suid", None) => (req.flags.nosuid, req.flags.suid) = (false, true),
            ("noexec", None) => req.flags.noexec = true,
            ("exec", None) => req.flags.noexec = false,
            ("noatime", None) => req.flags.atime = Atime::Never,
            ("strictatime", None) => req.flags.atime = Atime::Strict,
            ("relatime" | "atime", None) => req.flags.atime = Atime::Relative,
            ("nodiratime", None) => req.flags.nodiratime = true,
            ("diratime", None) => req.flags.nodiratime = false,
            ("sync", None) => req.flags.sync = true,
            ("async", None) => req.flags.sync = false,
            ("dirsync", None) => req.flags.dirsync = true,
            ("uidmapping" | "gidmapping", _) => return Err(OptionsError::IdMapping(k.into())),
            (k, _) if k.starts_with("squash_to_") => return Err(OptionsError::Squash(k.into())),
            (k, _) if NO_EFFECT.contains(&k) => {}
            _ => return Err(OptionsError::UnknownOption(o.clone())),
        }
    }
    if req.lowers.is_empty() {
        return Err(OptionsError::NoLowers);
    }
    if req.upper.is_some() != req.work.is_some() {
        return Err(OptionsError::UpperWithoutWork);
    }
    if req.upper.is_none() {
        req.flags.read_only = true;
    }
    Ok(req)
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
        assert!(!r.flags.read_only && !r.foreground);
        assert_eq!(r.flags.atime, Atime::Never);
        let r = parse(&s(&["kiln-overlay", "/mnt", "-o", "lowerdir=/a,dev,suid"])).unwrap();
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
        assert!(r.flags.read_only, "no upperdir: read-only");
        assert!(r.flags.dev && r.flags.suid, "dev,suid asked for");
        let r = parse(&s(&[
            "-o",
            "lowerdir=/a,nosuid,noexec,nodev,sync,dirsync",
            "/m",
        ]))
        .unwrap();
        let f = r.flags;
        assert!(f.nosuid && !f.suid && f.noexec && !f.dev && f.sync && f.dirsync);
        assert!(parse(&s(&["/m"])).is_err());
        assert!(
            parse(&s(&["-f", "-o", "lowerdir=/a", "/m"]))
                .unwrap()
                .foreground
        );
    }

    #[test]
    fn options_that_would_change_the_view_or_are_unknown_are_refused() {
        for (opt, want) in [
            ("uidmapping=0:1:1", "uidmapping"),
            ("squash_to_root", "squash_to_root"),
            ("squash_to_uid=5", "squash_to_uid"),
            ("frobnicate", "frobnicate"),
        ] {
            let e = parse(&s(&["-o", &format!("lowerdir=/a,{opt}"), "/m"])).unwrap_err();
            assert!(e.to_string().contains(want), "{opt}: {e}");
        }
    }
}
