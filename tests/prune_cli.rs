//! Cleaning the store end to end: `kiln du` sizes, `kiln rmi` freeing what only the image
//! used (the build cache stays, so a rebuild is cached), `kiln prune` (`--all`,
//! `--keep-storage`, `--filter until=`, refusing without `--force` and a terminal), and
//! the sweep of old temporaries at build start. Real builds on the busybox base, each in
//! a root of its own. Runs as root and (scripts/test.sh) as unprivileged users.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_tests::{busybox_context, kiln_bin, BUSYBOX_BASE};

const DOCKERFILE: &str = "RUN echo one > /one\n\
RUN --mount=type=cache,target=/cache echo two > /cache/two && cp /cache/two /two\n";

/// Filesystem steps of [`DOCKERFILE`] on the base: COPY rootfs, RUN, RUN.
const STEPS: usize = 3;

fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .args(args)
        .env("KILN_ROOT", root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdin(Stdio::null())
        .output()
        .expect("running kiln")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "kiln {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Builds `ctx` as `tag`; returns how many steps were `CACHED`.
fn build(root: &Path, ctx: &Path, tag: &str) -> usize {
    let out = kiln(
        root,
        &["build", "-t", tag, ctx.to_str().expect("utf-8 path")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{stderr}");
    stderr.lines().filter(|l| l.ends_with(" CACHED")).count()
}

struct Setup {
    _ctx: tempfile::TempDir,
    ctx: PathBuf,
    root: tempfile::TempDir,
}

fn setup() -> Option<Setup> {
    let ctx = busybox_context()?;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BUSYBOX_BASE}{DOCKERFILE}"),
    )
    .expect("Dockerfile");
    Some(Setup {
        ctx: ctx.path().to_path_buf(),
        _ctx: ctx,
        root: tempfile::tempdir().expect("root"),
    })
}

fn du(root: &Path) -> serde_json::Value {
    let text = ok(root, &["du", "--format", "json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("du json {text:?}: {e}"))
}

/// (size, reclaimable) of kind `key` in `du --format json`.
fn kind(du: &serde_json::Value, key: &str) -> (u64, u64) {
    let t = du["types"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["type"] == key))
        .unwrap_or_else(|| panic!("no {key} in {du}"));
    (
        t["size"].as_u64().unwrap_or(0),
        t["reclaimable"].as_u64().unwrap_or(0),
    )
}

/// The files under `dir`, relative (directories left out).
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn manifest_digest(root: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("index.json"))
            .expect("index json");
    index["manifests"][0]["digest"]
        .as_str()
        .expect("a tagged manifest")
        .to_string()
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| rd.count())
}

#[test]
fn du_counts_layers_and_snapshots_and_nothing_is_reclaimable_while_tagged() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    build(root, &s.ctx, "app");
    let d = du(root);
    let (layers, layers_free) = kind(&d, "layers");
    let (snaps, snaps_free) = kind(&d, "snapshots");
    let (images, images_free) = kind(&d, "images");
    assert!(layers > 0 && snaps > 0 && images > 0, "{d}");
    assert_eq!((layers_free, snaps_free, images_free), (0, 0, 0), "{d}");
    // The build cache and the cache mount are reclaimable.
    assert!(kind(&d, "build_cache").1 > 0, "{d}");
    assert!(kind(&d, "cache_mounts").0 > 0, "{d}");
    assert_eq!(d["size"].as_u64(), Some(kind_sum(&d)), "{d}");

    let table = ok(root, &["du"]);
    let first: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        first,
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        "{table}"
    );
    for label in [
        "Images",
        "Layers",
        "Snapshots",
        "Build cache",
        "Cache mounts",
        "Temporaries",
        "Total",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(label)),
            "{label}:\n{table}"
        );
    }
    let verbose = ok(root, &["du", "--verbose"]);
    assert!(verbose.contains(&manifest_digest(root)), "{verbose}");
}

fn kind_sum(d: &serde_json::Value) -> u64 {
    d["types"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["size"].as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn rmi_frees_the_image_but_keeps_the_build_cache() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    assert_eq!(build(root, &s.ctx, "app"), 0);
    let manifest = manifest_digest(root);
    let snapshots = count(&root.join("snapshots"));
    let out = ok(root, &["rmi", "app"]);
    assert!(out.contains("Untagged: app"), "{out}");
    assert!(
        out.contains(&format!("Deleted image blob: {manifest}")),
        "{out}"
    );
    assert!(!blob(root, &manifest).exists(), "the manifest is gone");
    // The layers and snapshots are the build cache's: they stay, the rebuild is cached.
    assert_eq!(count(&root.join("snapshots")), snapshots);
    assert_eq!(build(root, &s.ctx, "app"), STEPS);

    // Without the build cache, rmi frees the layers and snapshots too...
    ok(root, &["prune", "--all", "--force"]);
    assert_eq!(count(&root.join("snapshots")), snapshots, "tagged: kept");
    // ...but not what another tag still uses.
    std::fs::write(
        s.ctx.join("Dockerfile"),
        format!("{BUSYBOX_BASE}{DOCKERFILE}RUN echo three > /three\n"),
    )
    .expect("Dockerfile");
    assert_eq!(build(root, &s.ctx, "bigger"), 0);
    ok(root, &["prune", "--all", "--force"]);
    let out = ok(root, &["rmi", "bigger"]);
    assert!(out.contains("Deleted snapshot: "), "{out}");
    assert!(out.contains("Deleted layer: "), "{out}");
    assert_eq!(count(&root.join("snapshots")), snapshots, "app's stay");
    let d = du(root);
    assert_eq!(kind(&d, "layers").1, 0, "{d}");
    assert_eq!(kind(&d, "snapshots").1, 0, "{d}");
    ok(root, &["rmi", "app"]);
    assert_eq!(count(&root.join("snapshots")), 0);
    assert_eq!(count(&root.join("blobs/sha256")), 0, "{:?}", files(root));
}

#[test]
fn prune_all_after_rmi_empties_the_root_and_the_next_build_works() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    build(root, &s.ctx, "app");
    ok(root, &["rmi", "app"]);
    // The default keeps the build cache.
    let out = ok(root, &["prune", "--force"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert!(count(&root.join("snapshots")) > 0);

    let out = ok(root, &["prune", "--all", "--force"]);
    assert!(out.contains("Deleted cache mount: "), "{out}");
    let total = out
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_ne!(total, "0B", "{out}");
    let left: Vec<String> = files(root)
        .into_iter()
        .filter(|f| {
            !["index.json", "oci-layout", "index.lock", "lock", "gc.lock"].contains(&f.as_str())
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(0),
        "{index}"
    );
    let d = du(root);
    assert_eq!(d["size"].as_u64(), Some(0), "{d}");
    assert_eq!(build(root, &s.ctx, "app"), 0, "nothing cached any more");
    ok(root, &["run", "app", "cat", "/one", "/two"]);
}

#[test]
fn keep_storage_stops_once_the_root_is_small_enough() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    build(root, &s.ctx, "app");
    ok(root, &["rmi", "app"]);
    let before = du(root)["size"].as_u64().unwrap_or(0);
    assert!(before > 0);
    let keep = (before - 1).to_string();
    let out = ok(
        root,
        &["prune", "--all", "--force", "--keep-storage", &keep],
    );
    assert!(out.contains("Deleted "), "{out}");
    let d = du(root);
    let after = d["size"].as_u64().unwrap_or(0);
    assert!(after < before, "{after} > {keep}\n{out}");
    assert!(kind(&d, "snapshots").0 > 0, "stopped early:\n{out}\n{d}");
    // What stayed is consistent: the next build still works.
    build(root, &s.ctx, "app");
    let bad = kiln(root, &["prune", "--force", "--keep-storage", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn filter_until_keeps_what_is_new_and_unknown_keys_are_refused() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    build(root, &s.ctx, "app");
    ok(root, &["rmi", "app"]);
    let before = files(root);
    let out = ok(root, &["prune", "--all", "--force", "--filter", "until=1h"]);
    assert!(out.contains("Total reclaimed space: 0B"), "{out}");
    assert_eq!(files(root), before);
    let out = ok(root, &["prune", "--all", "--force", "--filter", "until=0s"]);
    assert!(!out.contains("Total reclaimed space: 0B"), "{out}");

    let bad = kiln(root, &["prune", "--force", "--filter", "label=x"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown filter key \"label\""), "{stderr}");
    let bad = kiln(root, &["prune", "--force", "--filter", "until=soon"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn prune_without_force_and_without_a_terminal_removes_nothing() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    build(root, &s.ctx, "app");
    ok(root, &["rmi", "app"]);
    let before = files(root);
    let out = kiln(root, &["prune", "--all"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("stdin is not a terminal; pass --force"),
        "{stderr}"
    );
    assert!(stdout.contains("Would delete snapshot: "), "{stdout}");
    assert!(stdout.contains("Total reclaimable space: "), "{stdout}");
    assert_eq!(files(root), before, "nothing removed");
}

#[test]
fn a_build_sweeps_old_temporaries_and_keeps_fresh_ones() {
    let Some(s) = setup() else { return };
    let root = s.root.path();
    build(root, &s.ctx, "app");
    let blobs = root.join("blobs/sha256");
    let old = blobs.join(".tmp-gc-old");
    let fresh = blobs.join(".tmp-gc-fresh");
    std::fs::write(&old, "half a layer").expect("plant");
    std::fs::write(&fresh, "being written").expect("plant");
    let touched = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&old)
        .status()
        .expect("touch");
    assert!(touched.success());
    let d = du(root);
    assert!(kind(&d, "temporaries").0 >= 2, "{d}");
    assert_eq!(build(root, &s.ctx, "app"), STEPS);
    assert!(!old.exists(), "the old temporary is swept");
    assert!(fresh.exists(), "a young one may be a live write");
}
