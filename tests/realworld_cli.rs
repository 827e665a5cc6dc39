//! Real-world builds end to end, offline but for the package mirrors: a Debian base
//! image made by `mmdebstrap` (setup-host.sh writes it to
//! /var/cache/kiln-tests/debian-bookworm.tar, or `$KILN_TEST_DEBIAN_TAR`) is built,
//! pushed to a real `docker-registry`, and apps are built FROM it (or FROM images derived
//! from it and pushed) through the registry in empty roots, pushed, pulled into other
//! empty roots and run:
//!
//! - Python: `apt-get update && apt-get install` and `pip install -r requirements.txt` in
//!   RUN steps (DNS and TLS to the mirrors from inside the step), a slim final stage, a
//!   test stage whose report is exported with `-o type=local`;
//! - Node: a "node" image (Debian's nodejs, npm from registry.npmjs.org), `npm ci` from a
//!   lockfile, `npm run build`, a production stage with `npm ci --omit=dev`;
//! - Rust: a "rust" image (Debian's rustc-web and cargo-web: bookworm's rustc 1.63 and
//!   cargo 0.66 cannot read crates.io's sparse index, and its git index is out of
//!   reach), `cargo build --release` with the registry in a cache mount, rebuilt after a
//!   source change without downloading again.
//!
//! The contexts are the directories under `tests/realworld/` (embedded). The tests
//! running at the same time share one registry and one base.
//!
//! The host's CA bundle is bind-mounted for pip, curl, npm and cargo
//! (`--build-context hostcerts=/etc/ssl/certs`), as users behind a TLS-intercepting proxy
//! do with BuildKit: this machine reaches PyPI, npm and crates.io through one.
//!
//! As `kiln-ci-single` (one id: no `_apt` user can be switched to) apt is told to stay
//! root with `APT::Sandbox::User=root`, as rootless BuildKit users with one id must too.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use kiln_tests::registry::TestRegistry;
use kiln_tests::{combined, kiln_at, real_root, remove_tree, skipped};

fn debian_tar() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_TEST_DEBIAN_TAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln-tests/debian-bookworm.tar"));
    if p.is_file() {
        return Some(p);
    }
    skipped(&format!(
        "{} missing (scripts/setup-host.sh makes it with mmdebstrap)",
        p.display()
    ));
    assert!(
        std::env::var_os("CI").is_none(),
        "{} missing under CI",
        p.display()
    );
    None
}

fn build(root: &Path, ctx: &Path, args: &[&str]) -> (Output, f64) {
    let started = Instant::now();
    let ctx = ctx.to_string_lossy().into_owned();
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    all.push(&ctx);
    let out = kiln_at(root, &all);
    (out, started.elapsed().as_secs_f64())
}

/// A build context's files, embedded (the tests may run as a user who cannot read the
/// checkout).
type Files = &'static [(&'static str, &'static str)];

const PYTHON_APP: Files = &[
    (
        "Dockerfile",
        include_str!("realworld/python-app/Dockerfile"),
    ),
    (
        "requirements.txt",
        include_str!("realworld/python-app/requirements.txt"),
    ),
    ("app.py", include_str!("realworld/python-app/app.py")),
];
const NODE_BASE: Files = &[("Dockerfile", include_str!("realworld/node-base/Dockerfile"))];
const NODE_APP: Files = &[
    ("Dockerfile", include_str!("realworld/node-app/Dockerfile")),
    (
        "package.json",
        include_str!("realworld/node-app/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("realworld/node-app/package-lock.json"),
    ),
    (
        "src/index.js",
        include_str!("realworld/node-app/src/index.js"),
    ),
];
const RUST_BASE: Files = &[("Dockerfile", include_str!("realworld/rust-base/Dockerfile"))];
const RUST_APP: Files = &[
    ("Dockerfile", include_str!("realworld/rust-app/Dockerfile")),
    ("Cargo.toml", include_str!("realworld/rust-app/Cargo.toml")),
    ("Cargo.lock", include_str!("realworld/rust-app/Cargo.lock")),
    (
        "src/main.rs",
        include_str!("realworld/rust-app/src/main.rs"),
    ),
];

/// What the real-world tests build in: a real registry, a work directory (each test's
/// kiln roots and contexts under their own names), and the Debian base (mmdebstrap's
/// tree as one layer) built in a root of its own and pushed.
struct World {
    reg: TestRegistry,
    work: tempfile::TempDir,
    /// `HOST/kiln/debian:bookworm`.
    base: String,
    base_secs: f64,
    single: bool,
}

impl World {
    /// The world the tests running now share (built once while any of them runs: the
    /// base costs half a minute; dropped, registry and files, with its last user), or a
    /// new one. `None` (with a visible line, a failure under CI) without the Debian tar
    /// or the registry.
    fn shared() -> Option<Arc<World>> {
        static SHARED: Mutex<Weak<World>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = shared.upgrade() {
            return Some(w);
        }
        let w = Arc::new(World::start()?);
        *shared = Arc::downgrade(&w);
        Some(w)
    }

    fn start() -> Option<World> {
        let tar = debian_tar()?;
        let reg = TestRegistry::start(None)?;
        let work = tempfile::tempdir().expect("tempdir");
        let base_ctx = work.path().join("base-ctx");
        std::fs::create_dir_all(&base_ctx).unwrap();
        std::fs::copy(&tar, base_ctx.join("debian.tar")).expect("copy the base tar");
        std::fs::write(
            base_ctx.join("Dockerfile"),
            "FROM scratch\nADD debian.tar /\nCMD [\"bash\"]\n",
        )
        .unwrap();
        let base = format!("{}/kiln/debian:bookworm", reg.host);
        let single = std::env::var("KILN_TEST_IDS").as_deref() == Ok("single");
        let mut w = World {
            reg,
            work,
            base: base.clone(),
            base_secs: 0.0,
            single,
        };
        let size = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
        let dockerfile = std::fs::read_to_string(base_ctx.join("Dockerfile")).unwrap();
        let key = format!("{dockerfile}\n{size}");
        let (_, base_secs, _) =
            w.prebuilt_or_build("debian", &key, &base, "base-root", &base_ctx, &[]);
        std::fs::remove_file(base_ctx.join("debian.tar")).expect("remove the tar copy");
        w.base_secs = base_secs;
        Some(w)
    }

    /// Builds `image` from `ctx` in root `root` and pushes it, or, in a pass after the
    /// first (not real root), loads the archive the first pass saved of the same build
    /// (`name` and `key`, the build's inputs) and pushes that: base and toolchain images
    /// are what CI runners share rather than rebuild, and rebuilding them in every
    /// identity would take CI past its time. Real root always builds (and saves the
    /// archive for the passes after it); the apps are built in every pass. The output
    /// (empty when loaded), the wall time, and whether it was built.
    fn prebuilt_or_build(
        &self,
        name: &str,
        key: &str,
        image: &str,
        root: &str,
        ctx: &Path,
        extra: &[&str],
    ) -> (String, f64, bool) {
        let dir = std::env::var_os("KILN_TEST_IMAGE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/kiln-tests/realworld"));
        let digest = kiln_tests::sha256_hex(key.as_bytes());
        let archive = dir.join(format!("{name}-{}.tar", &digest[..16]));
        let local = format!("kiln-test-prebuilt/{name}:1");
        let started = Instant::now();
        let root_dir = self.root(root);
        if !real_root() && archive.is_file() {
            let load = kiln_at(&root_dir, &["load", "-i", &archive.to_string_lossy()]);
            assert!(load.status.success(), "{}", combined(&load));
            let push = kiln_at(&root_dir, &["push", &local, image]);
            assert!(push.status.success(), "{}", combined(&push));
            eprintln!(
                "{name}: the image an earlier pass built, loaded from {}",
                archive.display()
            );
            return (String::new(), started.elapsed().as_secs_f64(), false);
        }
        // `-t` names are pushed; the local name only tags.
        let local_name = format!("type=image,name={local}");
        let mut all = vec!["-t", image, "--push", "-o", &local_name];
        all.extend_from_slice(extra);
        let (text, secs) = self.build(root, ctx, &all);
        if real_root() && std::fs::create_dir_all(&dir).is_ok() {
            // Under a temporary name, renamed when whole; older builds of `name` go.
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{name}-")) && e.path() != archive {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let tmp = dir.join(format!(".{name}.tmp"));
            let save = kiln_at(&root_dir, &["save", "-o", &tmp.to_string_lossy(), &local]);
            assert!(save.status.success(), "{}", combined(&save));
            std::fs::rename(&tmp, &archive).expect("naming the saved image");
        }
        (text, secs, true)
    }

    fn root(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// What a derived image's prebuilt archive depends on besides its Dockerfile: the
    /// Debian tar it is built on.
    fn key(&self) -> String {
        debian_tar()
            .and_then(|t| std::fs::metadata(t).ok())
            .map(|m| format!("{}\n", m.len()))
            .unwrap_or_default()
    }

    /// Writes `files` into a new context directory `name`.
    fn context(&self, name: &str, files: Files) -> PathBuf {
        let dir = self.root(name);
        for (path, text) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    /// `HOST/kiln/<name>`.
    fn image(&self, name: &str) -> String {
        format!("{}/kiln/{name}", self.reg.host)
    }

    /// The arguments every real-world build takes: `BASE`, the host's CA bundle as the
    /// `hostcerts` context, and apt staying root with one id.
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--build-arg".to_string(),
            format!("BASE={}", self.base),
            "--build-context".into(),
            "hostcerts=/etc/ssl/certs".into(),
        ];
        if self.single {
            args.extend([
                "--build-arg".into(),
                "APT_OPTS=-oAPT::Sandbox::User=root".into(),
            ]);
        }
        args
    }

    /// Builds `ctx` in the kiln root `root` with [`World::args`] and `extra`, asserting
    /// success; the output and the wall time.
    fn build(&self, root: &str, ctx: &Path, extra: &[&str]) -> (String, f64) {
        let args = self.args();
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        let (out, secs) = build(&self.root(root), ctx, &all);
        let text = combined(&out);
        assert!(out.status.success(), "{text}");
        (text, secs)
    }

    /// Pulls `image` into the root `runner` (empty at first) and runs it (with `cmd`
    /// when not empty): stdout.
    fn pull_and_run(&self, runner: &str, image: &str, cmd: &[&str]) -> String {
        let runner = self.root(runner);
        let out = kiln_at(&runner, &["pull", image]);
        assert!(out.status.success(), "{}", combined(&out));
        let mut args = vec!["run", image];
        args.extend_from_slice(cmd);
        let out = kiln_at(&runner, &args);
        assert!(out.status.success(), "{}", combined(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for World {
    /// The roots hold the base's `_apt`-owned directories (subordinate ids as `kiln-ci`):
    /// a plain removal of the work directory would leave gigabytes behind.
    fn drop(&mut self) {
        let removed = remove_tree(self.work.path());
        if !std::thread::panicking() {
            removed.expect("removing the real-world tests' work directory");
        }
    }
}

#[test]
fn python_app_on_a_debian_base_through_the_registry() {
    let Some(w) = World::shared() else { return };
    let base = &w.base;

    // The app, built in an empty root: the base comes from the registry.
    let app_ctx = w.context("py-ctx", PYTHON_APP);
    let app = w.image("pyapp:1");
    let (text, app_secs) = w.build("py-builder", &app_ctx, &["-t", &app, "--push"]);
    assert!(text.contains(&format!("pulled {base}")), "{text}");
    assert!(text.contains("Successfully installed six-1.16.0"), "{text}");

    // The test stage's report, exported as files.
    let report = w.root("py-report");
    let dest = format!("type=local,dest={}", report.display());
    let (_, report_secs) = w.build("py-builder", &app_ctx, &["--target", "report", "-o", &dest]);
    let text = std::fs::read_to_string(report.join("report.txt")).expect("report.txt");
    assert_eq!(text.trim(), "tests passed with six 1.16.0");

    // Pulled into another empty root and run.
    assert_eq!(
        w.pull_and_run("py-runner", &app, &[]),
        "app running with six 1.16.0 answer 42"
    );
    eprintln!(
        "real-world timings: base {:.1}s (shared), python app (apt-get + pip, cold) {app_secs:.1}s, report stage {report_secs:.1}s",
        w.base_secs
    );
}

/// A "node" image built FROM the Debian base (Debian's nodejs, npm from the npm
/// registry) and pushed; a multi-stage app FROM it through the registry: `npm ci` from a
/// lockfile with real `resolved`/`integrity` values, `npm run build` (a dev dependency
/// minifies src/ into dist/), a production stage with `npm ci --omit=dev`.
#[test]
fn node_app_on_a_derived_node_image_through_the_registry() {
    let Some(w) = World::shared() else { return };
    let node = w.image("node:18-bookworm");
    let ctx = w.context("node-ctx", NODE_BASE);
    let key = format!("{}{}", w.key(), NODE_BASE[0].1);
    let (text, node_secs, built) =
        w.prebuilt_or_build("node", &key, &node, "node-builder", &ctx, &[]);
    assert!(!built || text.contains("/tmp/npm.tgz: OK"), "{text}");

    let app_ctx = w.context("node-app-ctx", NODE_APP);
    let app = w.image("nodeapp:1");
    let node_arg = format!("NODE={node}");
    let (text, app_secs) = w.build(
        "node-app-builder",
        &app_ctx,
        &["--build-arg", &node_arg, "-t", &app, "--push"],
    );
    assert!(text.contains(&format!("pulled {node}")), "{text}");
    assert!(text.contains("added 2 packages"), "{text}");
    assert!(text.contains("added 1 package "), "{text}");

    assert_eq!(
        w.pull_and_run("node-runner", &app, &[]),
        "node app: 2 days is 172800000 ms, ms 2.1.3"
    );
    // The production stage has the runtime dependency only, and the minified build.
    let listing = w.pull_and_run(
        "node-runner",
        &app,
        &["sh", "-c", "ls node_modules; head -c 20 dist/index.js"],
    );
    assert_eq!(listing, "ms\nlet ms=require(\"ms\")");
    eprintln!(
        "real-world timings: base {:.1}s (shared), node image (apt-get nodejs + npm tarball) {node_secs:.1}s, node app (npm ci + build, cold) {app_secs:.1}s",
        w.base_secs
    );
}

/// A "rust" image built FROM the Debian base (Debian's rustc-web/cargo-web) and pushed;
/// an app with one crates.io dependency FROM it through the registry, `cargo build
/// --release` under `RUN --mount=type=cache,target=/root/.cargo/registry`, a slim final
/// stage with the binary; rebuilt after a source change, the crate comes from the cache
/// mount, not from crates.io.
#[test]
fn rust_app_on_a_derived_rust_image_with_a_cargo_cache_mount() {
    let Some(w) = World::shared() else { return };
    let rust = w.image("rust:bookworm");
    let ctx = w.context("rust-ctx", RUST_BASE);
    let key = format!("{}{}", w.key(), RUST_BASE[0].1);
    let (_, rust_secs, _) = w.prebuilt_or_build("rust", &key, &rust, "rust-builder", &ctx, &[]);

    let app_ctx = w.context("rust-app-ctx", RUST_APP);
    let app = w.image("rustapp:1");
    let rust_arg = format!("RUST={rust}");
    let push = ["--build-arg", &rust_arg, "-t", &app, "--push"];
    let (text, app_secs) = w.build("rust-app-builder", &app_ctx, &push);
    assert!(text.contains(&format!("pulled {rust}")), "{text}");
    assert!(text.contains("Downloaded itoa v1.0.11"), "{text}");
    assert_eq!(
        w.pull_and_run("rust-runner", &app, &[]),
        "rust app: 1234567 formatted by itoa"
    );

    // A source change: the build step runs again, the crate is in the cache mount.
    let main = app_ctx.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, source.replace("1_234_567_u32", "7_654_321_u32")).unwrap();
    let (text, again_secs) = w.build("rust-app-builder", &app_ctx, &push);
    assert!(text.contains("Compiling hello v0.1.0"), "{text}");
    assert!(!text.contains("Downloaded itoa"), "{text}");
    assert!(!text.contains("Downloading crates"), "{text}");
    assert_eq!(
        w.pull_and_run("rust-runner", &app, &[]),
        "rust app: 7654321 formatted by itoa"
    );
    eprintln!(
        "real-world timings: base {:.1}s (shared), rust image (apt-get rustc-web cargo-web) {rust_secs:.1}s, rust app (cargo build --release, cold) {app_secs:.1}s, after a source change {again_secs:.1}s",
        w.base_secs
    );
}
