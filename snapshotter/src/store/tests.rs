//! The store: chains, commits, concurrent commits of one id, removal rules, and recovery
//! from what a crashed process left behind. Runs as root and unprivileged.

use std::fs;
use std::sync::Arc;

use super::*;

fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn chain_ids_depend_on_parent_and_layer() {
    let a = ChainId::new(None, "sha256:aa");
    let b = ChainId::new(Some(&a), "sha256:bb");
    assert_ne!(a, ChainId::new(None, "sha256:bb"));
    assert_ne!(b, ChainId::new(None, "sha256:bb"));
    assert_eq!(ChainId::parse(b.as_str()), Some(b.clone()));
    assert_eq!(ChainId::parse("xyz"), None);
}

#[test]
fn apply_and_prepare_build_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let (base, _) = store
        .apply(
            None,
            "sha256:1",
            layer(&[("a", "1")]).as_slice(),
            &ApplyOptions::default(),
        )
        .unwrap();
    let (top, _) = store
        .apply(
            Some(&base.id),
            "sha256:2",
            layer(&[("b", "2")]).as_slice(),
            &ApplyOptions::default(),
        )
        .unwrap();
    assert_eq!(
        store.lowers(&top.id).unwrap(),
        vec![top.dir.clone(), base.dir.clone()]
    );
    assert_eq!(fs::read_to_string(base.dir.join("a")).unwrap(), "1");
    // Re-applying the same layer is a lookup.
    let (again, stats) = store
        .apply(
            None,
            "sha256:1",
            layer(&[("a", "changed")]).as_slice(),
            &ApplyOptions::default(),
        )
        .unwrap();
    assert_eq!((again, stats.entries), (base.clone(), 0));

    let active = store.prepare(Some(&top.id)).unwrap();
    assert_eq!(active.lowers(), [top.dir.clone(), base.dir.clone()]);
    fs::write(active.upper().join("c"), "3").unwrap();
    let id = ChainId::new(Some(&top.id), "sha256:3");
    let c = active.commit(&id).unwrap();
    assert_eq!(fs::read_to_string(c.dir.join("c")).unwrap(), "3");
    assert_eq!(store.parent(&id).unwrap(), Some(top.id.clone()));
    assert!(
        fs::read_dir(tmp.path().join("work"))
            .unwrap()
            .next()
            .is_none(),
        "work/ cleaned"
    );
}

#[test]
fn dropped_active_snapshots_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let a = store.prepare(None).unwrap();
    fs::write(a.upper().join("x"), "x").unwrap();
    drop(a);
    assert!(fs::read_dir(tmp.path().join("work"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn concurrent_commits_of_one_id_keep_one_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path()).unwrap());
    let id = ChainId::new(None, "sha256:same");
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let store = Arc::clone(&store);
            let id = id.clone();
            std::thread::spawn(move || {
                let a = store.prepare(None).unwrap();
                fs::write(a.upper().join("f"), format!("{i}")).unwrap();
                a.commit(&id).unwrap()
            })
        })
        .collect();
    let dirs: Vec<Committed> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(dirs.iter().all(|c| c.dir == dirs[0].dir));
    let names: Vec<_> = fs::read_dir(tmp.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(fs::read_dir(tmp.path().join("work"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn remove_is_refused_while_children_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let (base, _) = store
        .apply(
            None,
            "sha256:1",
            layer(&[("a", "1")]).as_slice(),
            &ApplyOptions::default(),
        )
        .unwrap();
    let (top, _) = store
        .apply(
            Some(&base.id),
            "sha256:2",
            layer(&[("b", "2")]).as_slice(),
            &ApplyOptions::default(),
        )
        .unwrap();
    assert!(matches!(
        store.remove(&base.id),
        Err(StoreError::HasChildren(..))
    ));
    store.remove(&top.id).unwrap();
    store.remove(&base.id).unwrap();
    assert!(!store.exists(&base.id));
    assert!(matches!(
        store.remove(&base.id),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn open_sweeps_what_dead_processes_left() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let live = store.prepare(None).unwrap();
    // A crashed process: an active snapshot whose owner is gone, and a half-made commit.
    let dead = tmp.path().join("work/active-dead");
    fs::create_dir_all(dead.join("upper/sub")).unwrap();
    fs::write(dead.join("owner"), "999999999 1").unwrap();
    let half = tmp.path().join("snapshots/.tmp-crashed");
    fs::create_dir_all(half.join("fs")).unwrap();
    let again = Store::open(tmp.path()).unwrap();
    assert!(!dead.exists() && !half.exists());
    assert!(live.upper().exists(), "a live owner's snapshot stays");
    drop(again);
}

#[test]
fn copy_backend_step_commits_through_a_layer() {
    use crate::backend::copy::CopyBackend;
    use crate::diff::DiffOptions;
    use crate::layer::{write_layer, LayerCompression};
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (base, _) = store
        .apply(
            None,
            "sha256:1",
            layer(&[("a", "1"), ("b", "2")]).as_slice(),
            &ApplyOptions::default(),
        )
        .unwrap();
    let blobs = tmp.path().join("blobs");
    // A step that changes nothing makes no layer.
    let active = store.prepare(Some(&base.id)).unwrap();
    let guard = active.mount(&CopyBackend).unwrap();
    assert_eq!(
        write_layer(
            guard.as_ref(),
            &DiffOptions::default(),
            &blobs,
            LayerCompression::None
        )
        .unwrap(),
        None
    );
    assert_eq!(
        fs::read_dir(&blobs).unwrap().count(),
        0,
        "no blob left behind"
    );
    // A step that deletes one file and adds another.
    fs::remove_file(guard.root().join("a")).unwrap();
    fs::write(guard.root().join("c"), "3").unwrap();
    let l = write_layer(
        guard.as_ref(),
        &DiffOptions::default(),
        &blobs,
        LayerCompression::default(),
    )
    .unwrap()
    .unwrap();
    drop(guard);
    drop(active);
    let (top, _) = store
        .apply(
            Some(&base.id),
            &l.digest,
            fs::File::open(&l.path).unwrap(),
            &ApplyOptions::default(),
        )
        .unwrap();
    let view = store.view(&top.id).unwrap();
    let merged = tmp.path().join("merged");
    crate::backend::copy::materialize(&view, &merged).unwrap();
    let mut names: Vec<_> = fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
}

#[test]
fn a_zombie_owns_nothing() {
    // Not waited for until the end: a zombie meanwhile, as a build killed with its
    // parent is until a reaper collects it.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let t0 = std::time::Instant::now();
    let token = loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
        if state == Some('Z') {
            break owner_token(pid).unwrap();
        }
        assert!(t0.elapsed().as_secs() < 10, "never a zombie: {stat}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(!owner_alive(&token), "a zombie was taken for alive");
    child.wait().unwrap();
    let me = owner_token(std::process::id()).unwrap();
    assert!(owner_alive(&me));
    assert!(!owner_alive(""));
}

/// A snapshot holding a path past `PATH_MAX` once the store's directory is prefixed (a
/// 4,000-byte chain, as a path near `PATH_MAX` inside a mount leaves in the upper), its
/// directories read-only: removed whole. Unprivileged, the read-only directories make
/// the first removal fail and the second pass makes them writable first.
#[test]
fn removes_a_tree_deeper_than_path_max() {
    use rustix::fs::{Mode, OFlags};
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("snap");
    fs::create_dir(&top).unwrap();
    let open = |at: &OwnedFd, name: &str| {
        rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    };
    let mut dirs = vec![rustix::fs::open(
        &top,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()];
    let name = |i: usize| format!("{i:02}{}", "d".repeat(198));
    for i in 0..21 {
        let parent = dirs.last().unwrap();
        rustix::fs::mkdirat(parent, name(i).as_str(), Mode::from_raw_mode(0o755)).unwrap();
        let d = open(parent, &name(i));
        dirs.push(d);
    }
    let bottom = dirs.last().unwrap();
    let f = rustix::fs::openat(
        bottom,
        "file",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    drop(f);
    assert!(top.as_os_str().len() + 21 * 201 + "file".len() > 4096);
    for (i, parent) in dirs.iter().enumerate().take(21) {
        rustix::fs::chmodat(
            parent,
            name(i).as_str(),
            Mode::from_raw_mode(0o500),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
    drop(dirs);
    remove_tree(&top).unwrap();
    assert!(!top.exists());
}
