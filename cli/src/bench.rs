//! `kiln bench snapshot`: one workload, run against every snapshotter backend that works
//! here (and Debian's `fuse-overlayfs` and a plain directory for comparison), phase by
//! phase, with the ratios people benchmarking snapshot performance look for.
//!
//! Phases: `extract` (write a tree of N files into an empty mount), `stat` and `read`
//! (every file, on a fresh mount with that tree as its lower layer), `meta` (copy a tenth
//! of the tree inside the mount and chmod it), `modify` (append to 1 % of the files,
//! delete 1 %), `commit` (the step's changes into a zstd layer), and with `--layers N`
//! `depth`: a stack of N lower layers (each adding a file and replacing one shared file,
//! as a long Dockerfile's steps do) mounted, and every name looked up and the shared file
//! read through it (kernel overlayfs takes a mount option of one page at most, so kiln's
//! overlay backend flattens the bottom lowers of a long stack into one directory first;
//! a FUSE overlay has no such limit). A backend that cannot mount the stack shows `-`
//! there, and why on stderr.
//!
//! Beside each phase's time, the peak resident memory of the side serving the mount
//! during that phase: this process for kiln's FUSE overlay (served by its threads; the
//! whole process's VmHWM), the daemon for a mount program (kiln-overlay,
//! fuse-overlayfs); none for kernel overlayfs, copies and the plain directory. The peak
//! is reset before each phase (`5` written to `/proc/PID/clear_refs`) and read after it
//! (`VmHWM` in `/proc/PID/status`).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_snapshotter::backend::choice::backend_for;
use kiln_snapshotter::backend::MountGuard;
use kiln_snapshotter::diff::write_upper_diff;
use kiln_snapshotter::layer::LayerWriter;
use kiln_snapshotter::{BackendKind, DiffOptions, LayerCompression};

#[derive(Args)]
pub struct SnapshotBench {
    /// Backends to run: fuse, kiln-overlay (the mount program), overlay, copy,
    /// fuse-overlayfs, plain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fuse,kiln-overlay,overlay,copy,fuse-overlayfs,plain"
    )]
    backends: Vec<Subject>,
    /// Files in the tree.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Total size of the tree in MB.
    #[arg(long, default_value_t = 100)]
    size: u64,
    /// Where to work (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Lower layers in the stack-depth phase (`depth`; 0: not run).
    #[arg(long, default_value_t = 0)]
    layers: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What the workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// One of kiln's backends, in this process.
    Kiln(BackendKind),
    /// kiln's FUSE overlay through its mount program, `kiln-overlay`.
    KilnOverlayProgram,
    /// Debian's fuse-overlayfs.
    FuseOverlayfs,
    /// A plain directory (no snapshots at all).
    Plain,
}

impl std::str::FromStr for Subject {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kiln-overlay" => Ok(Subject::KilnOverlayProgram),
            "fuse-overlayfs" => Ok(Subject::FuseOverlayfs),
            "plain" => Ok(Subject::Plain),
            other => other.parse::<BackendKind>().map(Subject::Kiln).map_err(|_| {
                format!(
                    "unknown backend {other:?} (valid: fuse, kiln-overlay, overlay, copy, fuse-overlayfs, plain)"
                )
            }),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Kiln(k) => write!(f, "{k}"),
            Subject::KilnOverlayProgram => f.write_str("kiln-overlay"),
            Subject::FuseOverlayfs => f.write_str("fuse-overlayfs"),
            Subject::Plain => f.write_str("plain"),
        }
    }
}

/// The `kiln-overlay` mount program: next to this binary (both are built and installed
/// together), else on PATH.
fn kiln_overlay_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("kiln-overlay"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("kiln-overlay"))
}

/// One phase's figures.
#[derive(Debug, Clone, Copy)]
struct Phase {
    seconds: f64,
    /// The serving side's peak resident memory during the phase, KiB (`None`: the
    /// kernel serves it).
    peak_rss_kib: Option<u64>,
}

/// Each phase (`None`: not applicable), or why the backend was skipped.
type BackendOutcome = Result<Vec<Option<Phase>>, String>;

/// Whose memory serves a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// This process (kiln's FUSE overlay serves from its threads).
    This,
    /// A mount program's daemon.
    Daemon(u32),
}

impl Server {
    fn proc_dir(self) -> PathBuf {
        match self {
            Server::This => PathBuf::from("/proc/self"),
            Server::Daemon(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// Resets the peak resident memory (VmHWM) to the current one.
    fn reset_peak(self) -> Result<()> {
        let f = self.proc_dir().join("clear_refs");
        fs::write(&f, "5").with_context(|| format!("resetting the peak RSS: {}", f.display()))
    }

    /// The peak resident memory since the last reset, KiB.
    fn peak_kib(self) -> Result<u64> {
        let f = self.proc_dir().join("status");
        let status = fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in {}", f.display()))
    }
}

/// The daemon serving the mount at `target`: the process (not this one) with `target`
/// among its arguments, as a mount program has after it detached.
fn daemon_serving(target: &Path) -> Result<u32> {
    let want = target.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    for e in fs::read_dir("/proc")? {
        let e = e?;
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A process may end while the table is read: skip it.
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).skip(1).any(|a| a == want) {
            return Ok(pid);
        }
    }
    bail!("no process serving {} found", target.display())
}

/// Runs `f` as one phase: its seconds and, when `server` is given, the server's peak
/// resident memory during it.
fn phase(server: Option<Server>, f: &mut dyn FnMut() -> Result<()>) -> Result<Phase> {
    if let Some(s) = server {
        s.reset_peak()?;
    }
    let start = Instant::now();
    f()?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Phase {
        seconds,
        peak_rss_kib: server.map(|s| s.peak_kib()).transpose()?,
    })
}

const PHASES: [&str; 7] = [
    "extract", "stat", "read", "meta", "modify", "commit", "depth",
];

/// The source tree: `files` files over 100-file directories, sizes spread around the mean.
fn make_source(dir: &Path, files: usize, size_mb: u64) -> Result<()> {
    let mean = (size_mb * 1_000_000 / files.max(1) as u64).max(1);
    let mut buf = Vec::new();
    for i in 0..files {
        let d = dir.join(format!("d{:04}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&d)?;
        }
        // 1/4, 1/2, 1, 2x the mean, so the total stays near size_mb.
        let len = match i % 4 {
            0 => mean / 4,
            1 => mean / 2,
            2 => mean,
            _ => mean * 2 + mean / 4,
        } as usize;
        buf.resize(len, 0);
        for (j, b) in buf.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31).wrapping_add(j) % 251) as u8;
        }
        fs::write(d.join(format!("f{i:06}")), &buf)?;
    }
    Ok(())
}

fn walk_files(root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(root)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk_files(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &t)?;
        } else {
            fs::copy(e.path(), &t)?;
        }
    }
    Ok(())
}

/// A mounted tree to work in, however it is provided.
enum Mounted {
    /// One of kiln's backends, in this process.
    Kiln(Box<dyn MountGuard>, BackendKind),
    /// A mount program's mount, and its serving daemon.
    Program(PathBuf, u32),
    Plain(PathBuf),
}

impl Mounted {
    fn root(&self) -> &Path {
        match self {
            Mounted::Kiln(g, _) => g.root(),
            Mounted::Program(p, _) | Mounted::Plain(p) => p,
        }
    }

    /// Whose memory serves it (`None`: the kernel, or nothing).
    fn server(&self) -> Option<Server> {
        match self {
            Mounted::Kiln(_, BackendKind::Fuse) => Some(Server::This),
            Mounted::Kiln(..) | Mounted::Plain(_) => None,
            Mounted::Program(_, pid) => Some(Server::Daemon(*pid)),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Mounted::Program(p, _) = self {
            let _ = rustix::mount::unmount(p.as_path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn mount(
    subject: Subject,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<Mounted> {
    for d in [upper, work, target] {
        fs::create_dir_all(d)?;
    }
    match subject {
        Subject::Kiln(kind) => Ok(Mounted::Kiln(
            backend_for(kind).mount(lowers, upper, work, target)?,
            kind,
        )),
        Subject::FuseOverlayfs | Subject::KilnOverlayProgram => {
            let lowerdir = if lowers.is_empty() {
                let empty = work.join("empty");
                fs::create_dir_all(&empty)?;
                empty.display().to_string()
            } else {
                lowers
                    .iter()
                    .map(|l| l.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let mut cmd = if subject == Subject::KilnOverlayProgram {
                std::process::Command::new(kiln_overlay_program())
            } else {
                std::process::Command::new("fuse-overlayfs")
            };
            let st = cmd
                .arg("-o")
                .arg(format!(
                    "lowerdir={lowerdir},upperdir={},workdir={}",
                    upper.display(),
                    work.display()
                ))
                .arg(target)
                .status()
                .with_context(|| format!("running {subject}"))?;
            if !st.success() {
                bail!("{subject} failed: {st}");
            }
            let pid = match daemon_serving(target) {
                Ok(pid) => pid,
                Err(e) => {
                    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
                    return Err(e.context(format!("{subject}'s daemon")));
                }
            };
            Ok(Mounted::Program(target.to_path_buf(), pid))
        }
        Subject::Plain => Ok(Mounted::Plain(target.to_path_buf())),
    }
}

/// The stack-depth phase: `layers` lowers (`l0` at the bottom), each with a file of its
/// own and its version of `shared`, mounted on `subject`; the seconds it takes to look
/// up every name and read `shared` (the top layer's) through the mount, ten times over.
/// `None` (and why, on stderr) when the backend cannot mount such a stack.
fn depth_phase(subject: Subject, base: &Path, layers: usize) -> Result<Option<Phase>> {
    if layers == 0 || subject == Subject::Plain {
        return Ok(None);
    }
    let stack = base.join("stack");
    let mut lowers = Vec::new();
    for i in 0..layers {
        let l = stack.join(format!("l{i}"));
        fs::create_dir_all(&l)?;
        fs::write(l.join(format!("f{i}")), format!("{i}\n"))?;
        fs::write(l.join("shared"), format!("layer {i}\n"))?;
        lowers.push(l);
    }
    lowers.reverse(); // top first
    let (u, w, m) = (base.join("u3"), base.join("w3"), base.join("m3"));
    let mounted = match mount(subject, &lowers, &u, &w, &m) {
        Ok(mounted) => mounted,
        Err(e) => {
            eprintln!("depth: {subject} cannot mount {layers} lowers: {e:#}");
            return Ok(None);
        }
    };
    let root = mounted.root().to_path_buf();
    let want = format!("layer {}\n", layers - 1);
    let p = phase(mounted.server(), &mut || {
        for _ in 0..10 {
            for i in 0..layers {
                fs::symlink_metadata(root.join(format!("f{i}")))?;
            }
            let got = fs::read_to_string(root.join("shared"))?;
            if got != want {
                bail!("depth: {subject} shows {got:?} for the top layer's file, not {want:?}");
            }
        }
        Ok(())
    })?;
    Ok(Some(p))
}

/// Runs the workload on `subject`; each phase (`None`: not applicable).
fn run_backend(
    subject: Subject,
    source: &Path,
    scratch: &Path,
    layers: usize,
) -> Result<Vec<Option<Phase>>> {
    let base = scratch.join(subject.to_string());
    let _ = fs::remove_dir_all(&base);
    let (u1, w1, m1) = (base.join("u1"), base.join("w1"), base.join("m1"));
    let mut times = Vec::new();
    // Phase 1: the tree written into an empty mount.
    let plain = subject == Subject::Plain;
    {
        let m = mount(subject, &[], &u1, &w1, &m1)?;
        times.push(Some(phase(m.server(), &mut || {
            copy_tree(source, &m.root().join("tree"))
        })?));
    }
    // The rest on a new mount over what phase 1 wrote.
    let (u2, w2, m2) = (base.join("u2"), base.join("w2"), base.join("m2"));
    // The copy backend writes into its mount point, not an upper directory.
    let in_mount_point = match subject {
        Subject::Kiln(kind) => !backend_for(kind).changes_in_upper(),
        Subject::Plain => true,
        Subject::KilnOverlayProgram | Subject::FuseOverlayfs => false,
    };
    let lower = if in_mount_point {
        m1.clone()
    } else {
        u1.clone()
    };
    let m = if plain {
        Mounted::Plain(m1.clone())
    } else {
        mount(subject, std::slice::from_ref(&lower), &u2, &w2, &m2)?
    };
    let root = m.root().join("tree");
    let server = m.server();
    let t = |f: &mut dyn FnMut() -> Result<()>| phase(server, f);
    let mut files = Vec::new();
    walk_files(&root, &mut files)?;
    times.push(Some(t(&mut || {
        for f in &files {
            fs::symlink_metadata(f)?;
        }
        Ok(())
    })?));
    times.push(Some(t(&mut || {
        let mut buf = vec![0u8; 1 << 16];
        for f in &files {
            let mut h = fs::File::open(f)?;
            while h.read(&mut buf)? > 0 {}
        }
        Ok(())
    })?));
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.sort();
    let tenth: Vec<PathBuf> = dirs
        .iter()
        .take((dirs.len() / 10).max(1))
        .cloned()
        .collect();
    times.push(Some(t(&mut || {
        for d in &tenth {
            let to = m
                .root()
                .join("copied")
                .join(d.file_name().unwrap_or_default());
            copy_tree(d, &to)?;
            let mut fs_ = Vec::new();
            walk_files(&to, &mut fs_)?;
            for f in fs_ {
                fs::set_permissions(&f, fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(())
    })?));
    times.push(Some(t(&mut || {
        for (i, f) in files.iter().enumerate() {
            if i % 100 == 0 {
                fs::OpenOptions::new()
                    .append(true)
                    .open(f)?
                    .write_all(b"changed")?;
            } else if i % 100 == 1 {
                fs::remove_file(f)?;
            }
        }
        Ok(())
    })?));
    let commit = if plain {
        None
    } else {
        let blobs = base.join("blobs");
        fs::create_dir_all(&blobs)?;
        Some(t(&mut || {
            if let Ok(f) = fs::File::open(m.root()) {
                let _ = rustix::fs::syncfs(&f);
            }
            let mut w = LayerWriter::new(&blobs, LayerCompression::default())?;
            match &m {
                Mounted::Kiln(g, _) => {
                    g.write_diff(&DiffOptions::default(), &mut w)?;
                }
                _ => {
                    write_upper_diff(
                        &u2,
                        std::slice::from_ref(&lower),
                        &DiffOptions::default(),
                        &mut w,
                    )?;
                }
            }
            w.finish()?;
            Ok(())
        })?)
    };
    times.push(commit);
    drop(m);
    times.push(depth_phase(subject, &base, layers)?);
    let _ = fs::remove_dir_all(&base);
    Ok(times)
}

pub fn run(args: SnapshotBench, out: &mut dyn Write) -> Result<i32> {
    let scratch_holder;
    let scratch = match &args.dir {
        Some(d) => d.clone(),
        None => {
            scratch_holder = tempfile::Builder::new()
                .prefix("kiln-bench-")
                .tempdir_in(
                    std::env::var_os("KILN_ROOT")
                        .map(PathBuf::from)
                        .unwrap_or_else(std::env::temp_dir),
                )
                .or_else(|_| tempfile::tempdir())?;
            scratch_holder.path().to_path_buf()
        }
    };
    fs::create_dir_all(&scratch)?;
    let source = scratch.join("source");
    make_source(&source, args.files, args.size)?;
    let mut results: Vec<(Subject, BackendOutcome)> = Vec::new();
    for b in &args.backends {
        let r = run_backend(*b, &source, &scratch, args.layers).map_err(|e| format!("{e:#}"));
        results.push((*b, r));
    }
    let get = |subject: Subject, i: usize| -> Option<f64> {
        results
            .iter()
            .find(|(n, _)| *n == subject)
            .and_then(|(_, r)| r.as_ref().ok())
            .and_then(|v| v[i])
            .map(|p| p.seconds)
    };
    if args.json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|(n, r)| match r {
                Ok(t) => {
                    let by_phase = |f: &dyn Fn(&Phase) -> serde_json::Value| {
                        PHASES
                            .iter()
                            .zip(t)
                            .map(|(p, s)| {
                                (p.to_string(), s.as_ref().map_or(serde_json::Value::Null, f))
                            })
                            .collect::<serde_json::Map<_, _>>()
                    };
                    serde_json::json!({
                        "backend": n.to_string(),
                        "seconds": by_phase(&|p| serde_json::json!(p.seconds)),
                        "peak_rss_kib": by_phase(&|p| serde_json::json!(p.peak_rss_kib)),
                    })
                }
                Err(e) => serde_json::json!({"backend": n.to_string(), "skipped": e}),
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"files": args.files, "size_mb": args.size, "layers": args.layers, "results": v})
        )?;
        return Ok(0);
    }
    writeln!(
        out,
        "snapshot benchmark: {} files, {} MB (seconds per phase)",
        args.files, args.size
    )?;
    write!(out, "{:<16}", "backend")?;
    for p in PHASES {
        write!(out, "{p:>9}")?;
    }
    writeln!(out)?;
    for (n, r) in &results {
        write!(out, "{:<16}", n.to_string())?;
        match r {
            Ok(t) => {
                for s in t {
                    match s {
                        Some(s) => write!(out, "{:>9.3}", s.seconds)?,
                        None => write!(out, "{:>9}", "-")?,
                    }
                }
                writeln!(out)?;
            }
            Err(e) => writeln!(out, "skipped: {e}")?,
        }
    }
    let fuse = Subject::Kiln(BackendKind::Fuse);
    for (a, b) in [
        (fuse, Subject::FuseOverlayfs),
        (fuse, Subject::Kiln(BackendKind::Overlay)),
        (Subject::KilnOverlayProgram, Subject::FuseOverlayfs),
    ] {
        if results.iter().any(|(n, r)| *n == a && r.is_ok())
            && results.iter().any(|(n, r)| *n == b && r.is_ok())
        {
            write!(out, "{:<16}", format!("{a}/{b}"))?;
            for i in 0..PHASES.len() {
                match (get(a, i), get(b, i)) {
                    (Some(x), Some(y)) if y > 0.0 => write!(out, "{:>9.2}", x / y)?,
                    _ => write!(out, "{:>9}", "-")?,
                }
            }
            writeln!(out)?;
        }
    }
    writeln!(
        out,
        "peak RSS of the serving side, MiB (kiln's FUSE overlay: this process; a mount program: its daemon; -: the kernel)"
    )?;
    for (n, r) in &results {
        let Ok(t) = r else { continue };
        write!(out, "{:<16}", n.to_string())?;
        for s in t {
            match s.and_then(|p| p.peak_rss_kib) {
                Some(kib) => write!(out, "{:>9.1}", kib as f64 / 1024.0)?,
                None => write!(out, "{:>9}", "-")?,
            }
        }
        writeln!(out)?;
    }
    Ok(0)
}
