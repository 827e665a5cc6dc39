//! The `Snapshotter` facade on real mounts, for every backend that works here: a step's
//! changes commit into a layer and a snapshot, an unchanged step commits nothing, a view
//! shows a chain, a directory imports as a layer, a base layer applies once, and every
//! backend commits the same content (same layer diff ids, same trees).
//!
//! Mounting needs a mount namespace (and a user namespace when unprivileged), so, like
//! the battery, the binary re-executes itself under `unshare`; it has no libtest harness
//! and ends with `facade: N passed, M failed`. Under `CI`, a backend that cannot mount
//! here fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

use kiln_snapshotter::testsuite::{describe_tree, Describe};
use kiln_snapshotter::{
    BackendChoice, BackendKind, ChainId, CommitOptions, DiffOptions, LayerCompression, Snapshotter,
};

type Tree = BTreeMap<Vec<u8>, String>;

/// What one backend committed: the diff ids of its two steps and the trees of its views.
#[derive(Debug, PartialEq)]
struct Outcome {
    diff_ids: Vec<String>,
    trees: Vec<Tree>,
}

const TIME: i64 = 1_600_000_000;

fn set_mtime(p: &Path) {
    let t = rustix::fs::Timespec {
        tv_sec: TIME,
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

fn tree(root: &Path) -> Tree {
    describe_tree(
        root,
        Describe {
            dir_times: true,
            ..Describe::default()
        },
    )
}

fn opts(blobs: &Path) -> CommitOptions {
    CommitOptions {
        diff: DiffOptions::default(),
        blob_dir: blobs.to_path_buf(),
        compression: LayerCompression::None,
    }
}

/// Runs every facade operation on `choice`; panics on a broken promise.
fn exercise(choice: BackendChoice, scratch: &Path) -> Outcome {
    let s = Snapshotter::open(&scratch.join("root"), choice).unwrap();
    assert_eq!(Some(s.kind()), choice.kind());
    assert!(s.reason().contains(&s.kind().to_string()), "{}", s.reason());
    let blobs = scratch.join("blobs");
    let o = opts(&blobs);
    let mut out = Outcome {
        diff_ids: Vec::new(),
        trees: Vec::new(),
    };

    // Step 1: files on nothing.
    let a = s.prepare(None).unwrap();
    let r = a.root().to_path_buf();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::write(r.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(r.join("etc/gone"), "to be deleted\n").unwrap();
    fs::write(r.join("bin"), "#!/bin/sh\n").unwrap();
    for p in ["etc/hosts", "etc/gone", "bin", "etc"] {
        set_mtime(&r.join(p));
    }
    let c1 = s.commit(a, &o).unwrap().expect("a layer for step 1");
    assert!(c1.layer.path.is_file(), "the layer blob is written");
    assert!(s.exists(&c1.chain));
    assert_eq!(c1.chain, ChainId::new(None, &c1.layer.digest));
    assert!(!r.exists(), "a committed snapshot's mount is gone");
    out.diff_ids.push(c1.layer.diff_id.clone());

    // An unchanged step commits nothing.
    let a = s.prepare(Some(&c1.chain)).unwrap();
    let r = a.root().to_path_buf();
    assert_eq!(fs::read_to_string(r.join("bin")).unwrap(), "#!/bin/sh\n");
    assert!(
        s.commit(a, &o).unwrap().is_none(),
        "an empty diff makes no layer"
    );
    assert!(!r.exists(), "an uncommitted snapshot is removed");

    // Step 2: change, delete, add on top of step 1.
    let a = s.prepare(Some(&c1.chain)).unwrap();
    let r = a.root().to_path_buf();
    fs::write(r.join("etc/hosts"), "changed\n").unwrap();
    fs::remove_file(r.join("etc/gone")).unwrap();
    fs::create_dir(r.join("new")).unwrap();
    fs::write(r.join("new/file"), "new\n").unwrap();
    for p in ["etc/hosts", "new/file", "new", "etc"] {
        set_mtime(&r.join(p));
    }
    let c2 = s.commit(a, &o).unwrap().expect("a layer for step 2");
    out.diff_ids.push(c2.layer.diff_id.clone());

    // Views show chains; a view of nothing is an empty directory.
    for chain in [&c1.chain, &c2.chain] {
        let v = s.view(Some(chain)).unwrap();
        out.trees.push(tree(v.root()));
        let root = v.root().to_path_buf();
        drop(v);
        assert!(!root.exists(), "a dropped view is removed");
    }
    assert!(out.trees[1].contains_key(&b"new/file"[..]));
    assert!(!out.trees[1].contains_key(&b"etc/gone"[..]));
    let v = s.view(None).unwrap();
    assert_eq!(fs::read_dir(v.root()).unwrap().count(), 0);
    drop(v);

    // A directory imported as one layer on step 2.
    let dir = scratch.join("import");
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/imported"), "i\n").unwrap();
    for p in ["etc/imported", "etc", ""] {
        set_mtime(&dir.join(p));
    }
    let c3 = s
        .import_dir(Some(&c2.chain), &dir, &o)
        .unwrap()
        .expect("a layer for the import");
    out.diff_ids.push(c3.layer.diff_id.clone());
    let v = s.view(Some(&c3.chain)).unwrap();
    assert_eq!(
        fs::read_to_string(v.root().join("etc/imported")).unwrap(),
        "i\n"
    );
    assert_eq!(
        fs::read_to_string(v.root().join("etc/hosts")).unwrap(),
        "changed\n"
    );
    out.trees.push(tree(v.root()));
    drop(v);

    // Base layers: applying step 1's blob in a fresh store gives step 1's chain and
    // tree; applying it again reads nothing.
    let other = Snapshotter::open(&scratch.join("other"), choice).unwrap();
    let blob = fs::File::open(&c1.layer.path).unwrap();
    let (id, _) = other.apply_layer(None, &c1.layer.digest, blob).unwrap();
    assert_eq!(id, c1.chain);
    let (again, stats) = other
        .apply_layer(None, &c1.layer.digest, std::io::empty())
        .unwrap();
    assert_eq!(again, id);
    assert!(stats.warnings.is_empty());
    let v = other.view(Some(&id)).unwrap();
    assert_eq!(tree(v.root()), out.trees[0]);
    drop(v);

    // Removal: refused while a child exists, then leaf first.
    assert!(s.remove(&c2.chain).is_err(), "step 3 is on step 2");
    s.remove(&c3.chain).unwrap();
    s.remove(&c2.chain).unwrap();
    assert!(!s.exists(&c2.chain) && s.exists(&c1.chain));
    out
}

fn main() -> ExitCode {
    if std::env::var_os("KILN_FACADE_IN_NS").is_none() {
        let exe = std::env::current_exe().expect("own path");
        let mut cmd = Command::new("unshare");
        if !rustix::process::geteuid().is_root() {
            cmd.arg("--map-root-user");
        }
        cmd.args(["--mount", "--propagation", "private"])
            .arg(exe)
            .env("KILN_FACADE_IN_NS", "1");
        return match cmd.status() {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            Ok(s) => {
                eprintln!("facade: failed ({s})");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("facade: cannot run unshare: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let ci = std::env::var_os("CI").is_some();
    let (mut passed, mut failed) = (0, 0);
    let mut outcomes: Vec<(BackendKind, Outcome)> = Vec::new();
    for kind in BackendKind::ALL {
        let probe = tempfile::tempdir().expect("tempdir");
        if let Err(why) = kiln_snapshotter::backend::choice::probe(kind, probe.path()) {
            println!("{kind}: cannot mount here: {why}");
            if ci {
                failed += 1;
            }
            continue;
        }
        let choice = match kind {
            BackendKind::Overlay => BackendChoice::Overlay,
            BackendKind::Fuse => BackendChoice::Fuse,
            BackendKind::Copy => BackendChoice::Copy,
        };
        let scratch = tempfile::tempdir().expect("tempdir");
        let run = std::panic::catch_unwind(|| exercise(choice, scratch.path()));
        match run {
            Ok(o) => {
                passed += 1;
                println!("ok   {kind} / prepare, commit, view, import_dir, apply_layer, remove");
                outcomes.push((kind, o));
            }
            Err(p) => {
                failed += 1;
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("FAIL {kind}: {why}");
            }
        }
    }
    // Every backend commits the same content.
    if let Some((first, reference)) = outcomes.first() {
        for (kind, o) in &outcomes[1..] {
            if o == reference {
                passed += 1;
                println!("ok   {kind} commits what {first} commits");
            } else {
                failed += 1;
                println!("FAIL {kind} commits differently from {first}:\n  {o:?}\n  {reference:?}");
            }
        }
    }
    // Auto picks a backend that works, and says why.
    let scratch = tempfile::tempdir().expect("tempdir");
    match Snapshotter::open(&scratch.path().join("root"), BackendChoice::Auto) {
        Ok(s) if s.reason().starts_with("auto: ") => {
            passed += 1;
            println!("ok   auto picks {} ({})", s.kind(), s.reason());
        }
        Ok(s) => {
            failed += 1;
            println!("FAIL auto: reason {:?}", s.reason());
        }
        Err(e) => {
            failed += 1;
            println!("FAIL auto: {e}");
        }
    }
    println!("facade: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
