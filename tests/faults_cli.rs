//! Faults at every phase of a build, on a real root: SIGKILL, SIGINT and SIGTERM while a
//! RUN runs, while a large layer's blob is being written, right after it is stored (the
//! snapshot commit and the cache entry), during the export to each output type (OCI tar
//! and directory, docker tar, filesystem tar, local directory), at moments spread over a
//! whole build (which also land in the writes of `index.json`), mid-pull of a base image
//! from a real registry, and a second Ctrl-C during cleanup; and a full disk under the
//! root and under an output.
//!
//! Each phase is reached by watching the root's files (a layer's temporary blob growing,
//! the stored blob appearing, an output's temporary file), not by guessing a delay. After
//! each fault, read from the files with no kiln code ([`kiln_tests::store`]):
//! - no process of the build is left and no mount under the root is left in any mount
//!   namespace (every process's `/proc/PID/mountinfo`, not only the test's own);
//! - the root verifies: every tag's manifest, config and layers whole and hashing to
//!   their digests, every committed snapshot complete with a committed parent; the image
//!   tagged before is intact;
//! - SIGINT/SIGTERM exit 130/143 and leave no unfinished write; SIGKILL may leave some,
//!   which the next build removes once they are old (their times are set back);
//! - an output is there whole or not at all (never a truncated file under its name);
//! - the next build succeeds.
//!
//! Runs as root and (scripts/test.sh) as `kiln-ci` and `kiln-ci-single`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::registry::TestRegistry;
use kiln_tests::{busybox_context, combined, kiln_at, kiln_bin, store, BUSYBOX_BASE};

/// The big layer's size: large enough that its write takes a while, small enough for CI.
const BIG: u64 = 16_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sig {
    Kill,
    Int,
    Term,
}

impl Sig {
    fn send(self, pid: u32) {
        let sig = match self {
            Sig::Kill => rustix::process::Signal::KILL,
            Sig::Int => rustix::process::Signal::INT,
            Sig::Term => rustix::process::Signal::TERM,
        };
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        let _ = rustix::process::kill_process(pid, sig);
    }

    /// The exit code kiln gives for it (`None`: killed, no code).
    fn code(self) -> Option<i32> {
        match self {
            Sig::Kill => None,
            Sig::Int => Some(130),
            Sig::Term => Some(143),
        }
    }
}

/// Where the fault lands.
#[derive(Clone, Debug)]
enum Phase {
    /// The RUN's shell is running.
    Run,
    /// The big layer's temporary blob has grown past a megabyte.
    LayerWrite,
    /// The big layer's blob has just been stored under its digest.
    LayerStored,
    /// An output's file or directory is being written (`-o SPEC`, watched at `watch`).
    Export { spec: String, watch: PathBuf },
    /// A fixed time after the build started.
    After(Duration),
}

struct Scene {
    ctx: tempfile::TempDir,
    root: tempfile::TempDir,
    out: tempfile::TempDir,
    /// The image built first, which every fault must leave as it is.
    kept: (String, String),
}

fn dockerfile(base: &str, nonce: &str) -> String {
    format!(
        "{base}RUN echo nonce-{nonce} && sleep 0.1 && head -c {BIG} /dev/urandom > /big && echo wrote\nRUN echo after-{nonce} > /after\n"
    )
}

impl Scene {
    /// A context, an empty root and an output directory.
    fn bare() -> Option<Scene> {
        Some(Scene {
            ctx: busybox_context()?,
            root: tempfile::tempdir().expect("root"),
            out: tempfile::tempdir().expect("out"),
            kept: (String::new(), String::new()),
        })
    }

    /// [`Scene::bare`] with the image `kept:1` built in its root.
    fn new() -> Option<Scene> {
        let mut scene = Scene::bare()?;
        let df = scene.write_dockerfile("kept", &dockerfile(BUSYBOX_BASE, "kept"));
        let built = kiln_at(
            scene.root(),
            &[
                "build",
                "-q",
                "-f",
                &df.to_string_lossy(),
                "-t",
                "kept:1",
                &scene.ctx.path().to_string_lossy(),
            ],
        );
        assert!(built.status.success(), "{}", combined(&built));
        let tags = store::verify(scene.root()).expect("the first build's root verifies");
        scene.kept = ("kept:1".into(), tags["kept:1"].clone());
        Some(scene)
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn write_dockerfile(&self, name: &str, body: &str) -> PathBuf {
        let p = self.out.path().join(format!("{name}.Dockerfile"));
        std::fs::write(&p, body).expect("Dockerfile");
        p
    }

    fn spawn(&self, df: &Path, extra: &[&str], log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("log");
        Command::new(kiln_bin())
            .args(["build", "--progress", "plain", "-f"])
            .arg(df)
            .args(extra)
            .arg(self.ctx.path())
            .env("KILN_ROOT", self.root())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln build")
    }

    /// Builds with `nonce` (a new RUN, unless it is "kept": then the steps are cached),
    /// sends `sig` once `phase` is reached, and checks everything after. Whether the
    /// signal landed in the phase (the build may end first for `After`).
    fn fault(&self, phase: &Phase, sig: Sig, nonce: &str, twice: bool) -> bool {
        let df = self.write_dockerfile(nonce, &dockerfile(BUSYBOX_BASE, nonce));
        let tag = format!("fault:{nonce}");
        let mut args = vec!["-t".to_string(), tag.clone()];
        if let Phase::Export { spec, .. } = phase {
            args.extend(["-o".to_string(), spec.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.out.path().join(format!("{nonce}.log"));
        let blobs_before = big_blobs(self.root());
        let mut child = self.spawn(&df, &args, &log);
        let child_pid = child.id();
        if let Phase::After(_) = phase {
            // The clock starts once kiln handles the signal: before that (the binary
            // loading, on a loaded machine) its default action ends any program.
            wait_for(&mut child, |_| catches_sigterm(child_pid));
        }
        let landed = wait_for(&mut child, |elapsed| match phase {
            Phase::Run => !processes_with(&format!("nonce-{nonce}"), None).is_empty(),
            Phase::LayerWrite => growing_temporary(self.root()),
            Phase::LayerStored => big_blobs(self.root()).len() > blobs_before.len(),
            Phase::Export { watch, .. } => export_started(watch),
            Phase::After(d) => elapsed >= *d,
        });
        // Every process of the build at the moment of the fault (kiln's inner process
        // and the RUN's), to see them gone after.
        let pids: Vec<u32> = processes_with(&format!("nonce-{nonce}"), Some(self.root()))
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        if landed {
            sig.send(child.id());
            if twice {
                std::thread::sleep(Duration::from_millis(20));
                sig.send(child.id());
            }
        }
        let status = wait_exit(&mut child, Duration::from_secs(60));
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let what = format!("{sig:?} at {phase:?} ({nonce})");
        if landed {
            assert_eq!(status.code(), sig.code(), "{what}: {said}");
            // A second signal exits at once, without a word.
            if sig != Sig::Kill && !twice {
                assert!(said.contains("interrupted"), "{what}: {said}");
            }
        } else {
            assert!(
                status.success(),
                "{what}: the build ended first but failed: {said}"
            );
        }
        let cleaned = landed && sig != Sig::Kill && !twice;
        self.check_after(&what, &said, &tag, cleaned, phase, nonce, &pids);
        landed
    }

    #[allow(clippy::too_many_arguments)]
    fn check_after(
        &self,
        what: &str,
        said: &str,
        tag: &str,
        cleaned: bool,
        phase: &Phase,
        nonce: &str,
        pids: &[u32],
    ) {
        no_leftovers(self.root(), &format!("nonce-{nonce}"), what, pids);
        let tags = store::verify(self.root()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            tags.get(&self.kept.0),
            Some(&self.kept.1),
            "{what}: the image tagged before changed"
        );
        if said.contains("nothing was tagged") {
            assert!(!tags.contains_key(tag), "{what}: {tag} was tagged: {said}");
        }
        if cleaned {
            // A cancelled build cleans up after itself.
            let left = store::temporaries(self.root());
            assert!(left.is_empty(), "{what}: left unfinished writes {left:?}");
        }
        if let Phase::Export { watch, .. } = phase {
            output_whole_or_absent(watch, what);
            // A kill's temporary output is named for its destination.
            for e in std::fs::read_dir(self.out.path()).expect("out").flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".kiln-") {
                    assert!(!cleaned, "{what}: a cancelled export left {name}");
                    std::fs::remove_file(e.path()).expect("remove");
                }
            }
            let _ = std::fs::remove_dir_all(watch);
            let _ = std::fs::remove_file(watch);
        }
        // What a kill left goes at the next start once it is old; the next build runs.
        store::age(&store::temporaries(self.root()), 2);
        let df = self.write_dockerfile(
            &format!("{nonce}-next"),
            &format!("{BUSYBOX_BASE}RUN echo next-{nonce} > /next\n"),
        );
        let next = kiln_at(
            self.root(),
            &[
                "build",
                "-q",
                "-f",
                &df.to_string_lossy(),
                &self.ctx.path().to_string_lossy(),
            ],
        );
        assert!(
            next.status.success(),
            "{what}: next build: {}",
            combined(&next)
        );
        let left = store::temporaries(self.root());
        let owners: Vec<String> = left
            .iter()
            .map(|p| std::fs::read_to_string(p.join("owner")).unwrap_or_default())
            .collect();
        assert!(
            left.is_empty(),
            "{what}: not swept: {left:?} (owners {owners:?}; next build: {})",
            combined(&next)
        );
        store::verify(self.root()).unwrap_or_else(|e| panic!("{what}: after the next build: {e}"));
    }
}

/// Whether process `pid` has a handler for SIGTERM (`SigCgt` in its status).
fn catches_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|m| m & (1 << (15 - 1)) != 0)
}

/// Polls (every half millisecond) until `reached(elapsed)`; false when the child exits
/// first.
fn wait_for(child: &mut Child, mut reached: impl FnMut(Duration) -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if reached(t0.elapsed()) {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the phase was never reached"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("kiln did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Blobs over half the big layer's size (the big layers, stored).
fn big_blobs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let big = e.metadata().is_ok_and(|m| m.len() > BIG / 2);
        if name.len() == 64 && big {
            out.push(name);
        }
    }
    out
}

/// A temporary blob (a layer being written, a blob being pulled) past a megabyte.
fn growing_temporary(root: &Path) -> bool {
    store::temporaries(root).iter().any(|p| {
        p.parent().is_some_and(|d| d.ends_with("blobs/sha256"))
            && std::fs::metadata(p).is_ok_and(|m| m.len() > 1 << 20)
    })
}

/// An output has started: its temporary file past a megabyte, or its directory made.
fn export_started(watch: &Path) -> bool {
    if watch.is_dir() {
        return true;
    }
    let (Some(dir), Some(name)) = (watch.parent(), watch.file_name()) else {
        return false;
    };
    let prefix = format!(".{}.kiln-", name.to_string_lossy());
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().starts_with(&prefix)
                && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
        })
}

/// An output file that exists is a whole tar (every entry readable to its end).
fn output_whole_or_absent(watch: &Path, what: &str) {
    if !watch.is_file() {
        return;
    }
    let file = std::fs::File::open(watch).expect("open output");
    let mut archive = tar::Archive::new(file);
    let mut n = 0;
    for entry in archive.entries().expect("entries") {
        let mut entry =
            entry.unwrap_or_else(|e| panic!("{what}: {} is torn: {e}", watch.display()));
        std::io::copy(&mut entry, &mut std::io::sink())
            .unwrap_or_else(|e| panic!("{what}: {} is torn: {e}", watch.display()));
        n += 1;
    }
    assert!(n > 0, "{what}: {} is empty", watch.display());
}

/// Processes whose command line holds `needle`, or (with `root`) whose environment
/// names the kiln root.
fn processes_with(needle: &str, root: Option<&Path>) -> Vec<(u32, String)> {
    let env = root.map(|r| format!("KILN_ROOT={}", r.display()));
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || !running(pid) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let hit = contains(&cmd, needle.as_bytes())
            || env
                .as_ref()
                .is_some_and(|v| contains(&environ, v.as_bytes()));
        if hit {
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

/// Whether `pid` runs (a zombie does not: it has ended, waiting for its reaper).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
        !matches!(state, Some("Z" | "X"))
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Mounts under `root` seen from any process's mount namespace.
fn mounts_under(root: &Path) -> Vec<String> {
    let needle = root.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let info = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
        for line in info.lines().filter(|l| l.contains(&needle)) {
            out.push(format!("{}: {line}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// No process and no mount of the build is left (within ten seconds: a killed build's
/// processes are reaped by the kernel, not at once).
fn no_leftovers(root: &Path, needle: &str, what: &str, pids: &[u32]) {
    let t0 = Instant::now();
    loop {
        let mut procs = processes_with(needle, Some(root));
        procs.extend(
            pids.iter()
                .filter(|p| running(**p))
                .map(|p| (*p, "(seen at the fault)".to_string())),
        );
        let mounts = mounts_under(root);
        if procs.is_empty() && mounts.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: left behind: processes {procs:?}, mounts {mounts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tries a phase up to three times (the export of a small image can be over between two
/// looks); it must land once.
fn must_land(scene: &Scene, phase: Phase, sig: Sig, nonce: &str) {
    for attempt in 0..3 {
        if scene.fault(&phase, sig, &format!("{nonce}{attempt}"), false) {
            return;
        }
    }
    panic!("{sig:?} never landed in {phase:?}");
}

#[test]
fn signals_in_run_layer_write_and_commit_lose_nothing() {
    let Some(scene) = Scene::new() else { return };
    for (i, sig) in [Sig::Kill, Sig::Int, Sig::Term].into_iter().enumerate() {
        must_land(&scene, Phase::Run, sig, &format!("run{i}-"));
        must_land(&scene, Phase::LayerWrite, sig, &format!("write{i}-"));
    }
    for (i, sig) in [Sig::Kill, Sig::Term].into_iter().enumerate() {
        must_land(&scene, Phase::LayerStored, sig, &format!("stored{i}-"));
    }
    // A second Ctrl-C while the first one's cleanup runs: out at once, still consistent.
    let t0 = Instant::now();
    assert!(
        scene.fault(&Phase::LayerWrite, Sig::Int, "twice", true),
        "the second Ctrl-C case never reached the layer write"
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
}

#[test]
fn signals_during_every_export_leave_whole_outputs_or_none() {
    let Some(scene) = Scene::new() else { return };
    let out = scene.out.path();
    let cases = [
        ("type=oci,dest={}", "image.oci.tar", Sig::Kill),
        ("type=oci,dest={},tar=false", "image-oci-dir", Sig::Int),
        ("type=docker,dest={}", "image.docker.tar", Sig::Term),
        ("type=tar,dest={}", "fs.tar", Sig::Kill),
        ("type=local,dest={}", "fs-dir", Sig::Term),
    ];
    for (i, (spec, name, sig)) in cases.into_iter().enumerate() {
        let watch = out.join(name);
        let spec = spec.replace("{}", &watch.to_string_lossy());
        // The "kept" steps are cached: the build goes straight to its export.
        let mut landed = false;
        for attempt in 0..3 {
            let phase = Phase::Export {
                spec: spec.clone(),
                watch: watch.clone(),
            };
            // Same Dockerfile as the kept image (cached), a new tag each time.
            if scene.fault_kept(&phase, sig, &format!("export{i}-{attempt}")) {
                landed = true;
                break;
            }
        }
        assert!(landed, "{sig:?} never landed in the export {spec}");
    }
}

#[test]
fn signals_spread_over_a_whole_build_lose_nothing() {
    let Some(scene) = Scene::new() else { return };
    // How long one uncached build takes here.
    let df = scene.write_dockerfile("timing", &dockerfile(BUSYBOX_BASE, "timing"));
    let t0 = Instant::now();
    let timed = kiln_at(
        scene.root(),
        &[
            "build",
            "-q",
            "-f",
            &df.to_string_lossy(),
            &scene.ctx.path().to_string_lossy(),
        ],
    );
    assert!(timed.status.success(), "{}", combined(&timed));
    let whole = t0.elapsed();
    let sigs = [Sig::Kill, Sig::Term, Sig::Int];
    let points = 4;
    let mut landed = 0;
    for k in 0..points {
        let at = whole.mul_f64((k as f64 + 0.5) / points as f64);
        if scene.fault(&Phase::After(at), sigs[k % 3], &format!("at{k}-"), false) {
            landed += 1;
        }
    }
    assert!(
        landed >= points / 2,
        "only {landed} of {points} faults landed"
    );
}

#[test]
fn signals_mid_pull_lose_nothing_and_the_next_pull_completes() {
    let Some(scene) = Scene::new() else { return };
    let Some(registry) = TestRegistry::start(None) else {
        return;
    };
    let remote = format!("{}/fault/base:1", registry.host);
    let pushed = kiln_at(scene.root(), &["push", "kept:1", &remote]);
    assert!(pushed.status.success(), "{}", combined(&pushed));
    for (i, sig) in [Sig::Kill, Sig::Int].into_iter().enumerate() {
        // A fresh root each time: the base is pulled by the build's FROM.
        let fresh = Scene::bare().expect("busybox");
        let nonce = format!("pull{i}");
        let df = fresh.write_dockerfile(
            &nonce,
            &format!("FROM {remote}\nRUN echo nonce-{nonce} > /pulled\n"),
        );
        let log = fresh.out.path().join("pull.log");
        let mut child = fresh.spawn(&df, &["-t", "pulled:1"], &log);
        let landed = wait_for(&mut child, |_| growing_temporary(fresh.root()));
        assert!(landed, "the pull ended before a blob was half written");
        let pids: Vec<u32> = processes_with(&format!("nonce-{nonce}"), Some(fresh.root()))
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        sig.send(child.id());
        let status = wait_exit(&mut child, Duration::from_secs(60));
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let what = format!("{sig:?} mid-pull");
        assert_eq!(status.code(), sig.code(), "{what}: {said}");
        no_leftovers(fresh.root(), &format!("nonce-{nonce}"), &what, &pids);
        let tags = store::verify(fresh.root()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(tags.is_empty(), "{what}: tagged {tags:?}");
        if sig != Sig::Kill {
            let left = store::temporaries(fresh.root());
            assert!(left.is_empty(), "{what}: left {left:?}");
        }
        store::age(&store::temporaries(fresh.root()), 2);
        // The next pull completes, and the build runs on it.
        let again = fresh
            .spawn(&df, &["-t", "pulled:1"], &log)
            .wait()
            .expect("wait");
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(again.success(), "{what}: next build: {said}");
        let left = store::temporaries(fresh.root());
        assert!(left.is_empty(), "{what}: not swept: {left:?}");
        let tags = store::verify(fresh.root()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(tags.contains_key("pulled:1"), "{what}: {tags:?}");
    }
}

impl Scene {
    /// [`Scene::fault`] on the kept image's Dockerfile (every step cached), for the
    /// export phases.
    fn fault_kept(&self, phase: &Phase, sig: Sig, tag: &str) -> bool {
        let df = self.out.path().join("kept.Dockerfile");
        let Phase::Export { spec, watch } = phase else {
            unreachable!("export phases only")
        };
        let log = self.out.path().join(format!("{tag}.log"));
        let full_tag = format!("fault:{tag}");
        let mut child = self.spawn(&df, &["-t", &full_tag, "-o", spec], &log);
        let landed = wait_for(&mut child, |_| export_started(watch));
        let pids: Vec<u32> = processes_with("\0never\0", Some(self.root()))
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        if landed {
            sig.send(child.id());
        }
        let status = wait_exit(&mut child, Duration::from_secs(60));
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let what = format!("{sig:?} at export {spec}");
        if landed {
            assert_eq!(status.code(), sig.code(), "{what}: {said}");
        } else {
            assert!(status.success(), "{what}: {said}");
        }
        let cleaned = landed && sig != Sig::Kill;
        self.check_after(&what, &said, &full_tag, cleaned, phase, tag, &pids);
        landed
    }
}

/// A full disk: kiln's root on a 40 MiB tmpfs (in a private mount namespace; a user
/// namespace too when not real root). A RUN that fills it fails with its exit code and
/// "No space left on device" in its output tail; a layer whose blob does not fit fails
/// naming the blob directory and the file being diffed; an output on a full file system
/// fails naming it and leaves no file there. After each, the root verifies, nothing
/// unfinished is left, the image tagged before is whole, and once space is free again
/// the next build succeeds.
#[test]
fn a_full_disk_fails_clearly_and_loses_nothing() {
    let Some(scene) = Scene::bare() else { return };
    let out = scene.out.path();
    let dfs = [
        ("kept", "RUN echo small > /small\n"),
        ("fill", "RUN dd if=/dev/zero of=/zeros bs=1M count=60\n"),
        ("blob", "RUN head -c 24000000 /dev/urandom > /big\n"),
        ("mid", "RUN head -c 6000000 /dev/urandom > /mid\n"),
        ("after", "RUN echo after > /after\n"),
    ];
    for (name, body) in dfs {
        scene.write_dockerfile(&format!("full-{name}"), &format!("{BUSYBOX_BASE}{body}"));
    }
    let script = format!(
        r#"
        D='{out}/small'; O='{out}/tiny'; mkdir -p "$D" "$O"
        mount -t tmpfs -o size=40m tmpfs "$D"
        mount -t tmpfs -o size=4m tmpfs "$O"
        export KILN_ROOT="$D/root"
        b() {{ n=$1; shift; '{kiln}' build -q -f '{out}/full-'"$n"'.Dockerfile' "$@" '{ctx}' 2>"$D/err"; }}
        snap() {{ cp -a "$D/root" '{out}/after-'"$1"; }}
        b kept -t kept:1 >/dev/null; echo "kept=$?"
        b fill -t fill:1 >/dev/null; echo "fill=$?"; sed 's/^/fill: /' "$D/err"; snap fill
        b blob -t blob:1 >/dev/null; echo "blob=$?"; sed 's/^/blob: /' "$D/err"; snap blob
        b mid -t mid:1 -o type=tar,dest="$O/fs.tar" >/dev/null; echo "output=$?"
        sed 's/^/output: /' "$D/err"; ls -A "$O" | sed 's/^/left: /'; snap output
        b after -t after:1 >/dev/null; echo "after=$?"; snap after
        "#,
        out = out.display(),
        kiln = kiln_bin().display(),
        ctx = scene.ctx.path().display(),
    );
    let mut cmd = Command::new("unshare");
    if !kiln_tests::real_root() {
        cmd.arg("--map-root-user");
    }
    let ran = cmd
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let text = combined(&ran);
    assert!(ran.status.success(), "{text}");
    let said = |key: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(key))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(said("kept="), "0", "{text}");
    // The RUN filled the disk: its exit code and its output's tail.
    assert_eq!(said("fill="), "1", "{text}");
    let fill = said("fill: ");
    assert!(
        fill.contains("exit code: 1") && fill.contains("No space left on device"),
        "{fill}"
    );
    // The layer's blob did not fit: what was being written, and why.
    assert_eq!(said("blob="), "1", "{text}");
    let blob = said("blob: ");
    assert!(
        blob.contains("writing the layer blob in")
            && blob.contains("blobs/sha256")
            && blob.contains("No space left on device")
            && blob.contains("Dockerfile:3:1"),
        "{blob}"
    );
    // The output did not fit: named, and nothing left where it was to go.
    assert_eq!(said("output="), "1", "{text}");
    let output = said("output: ");
    assert!(
        output.contains("fs.tar") && output.contains("No space left on device"),
        "{output}"
    );
    assert_eq!(said("left: "), "", "an output file was left: {text}");
    // Space free again (the failed steps' files are gone with them): the next build runs.
    assert_eq!(said("after="), "0", "{text}");
    for (stage, tag) in [
        ("fill", None),
        ("blob", None),
        ("output", Some("mid:1")),
        ("after", Some("after:1")),
    ] {
        let root = out.join(format!("after-{stage}"));
        let what = format!("after the full disk at {stage}");
        let tags = store::verify(&root).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(tags.contains_key("kept:1"), "{what}: {tags:?}");
        assert!(
            !tags.contains_key("fill:1") && !tags.contains_key("blob:1"),
            "{what}"
        );
        if let Some(t) = tag {
            assert!(tags.contains_key(t), "{what}: {t} missing: {tags:?}");
        }
        let left = store::temporaries(&root);
        assert!(left.is_empty(), "{what}: unfinished writes {left:?}");
    }
}

/// A build's scratch directory (its secrets tmpfs, heredocs, ADD downloads, the RUN
/// steps' /etc files) is gone when the build ends; one a SIGKILL left is removed by the
/// next build. `TMPDIR` points both builds at a directory of the test's own.
#[test]
fn the_scratch_directory_goes_with_the_build() {
    let Some(scene) = Scene::bare() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let entries = || -> Vec<String> {
        std::fs::read_dir(tmp.path())
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let df = scene.write_dockerfile(
        "scratch",
        &format!("{BUSYBOX_BASE}RUN <<EOT\necho heredoc > /h\nEOT\nRUN cat /h\n"),
    );
    let build = |df: &Path| {
        Command::new(kiln_bin())
            .args(["build", "-q", "-f"])
            .arg(df)
            .arg(scene.ctx.path())
            .env("KILN_ROOT", scene.root())
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln build")
    };
    let out = build(&df).wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(), Vec::<String>::new(), "left in TMPDIR");
    // Killed mid-RUN: its directory stays, and the next build removes it.
    let slow = scene.write_dockerfile(
        "scratch-slow",
        &format!("{BUSYBOX_BASE}RUN echo nonce-scratch && sleep 30\n"),
    );
    let mut child = build(&slow);
    assert!(wait_for(&mut child, |_| !processes_with(
        "nonce-scratch",
        None
    )
    .is_empty()));
    let pids: Vec<u32> = processes_with("nonce-scratch", Some(scene.root()))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    Sig::Kill.send(child.id());
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    no_leftovers(scene.root(), "nonce-scratch", "SIGKILL mid-RUN", &pids);
    assert!(
        entries().iter().any(|e| e.starts_with("kiln-build-")),
        "the killed build's scratch directory: {:?}",
        entries()
    );
    let out = build(&df).wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(), Vec::<String>::new(), "not swept from TMPDIR");
}
