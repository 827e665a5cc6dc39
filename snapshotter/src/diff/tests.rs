//! Diff and layer round trips: a tree written by hand → diff → layer blob → apply into a
//! fresh directory gives the same tree (names, kinds, modes, owners, times, contents,
//! link targets, hard-link identity, xattrs, whiteouts, opaque dirs); the same tree gives
//! the same bytes; clamping, id mapping and every compression work. Runs as root and as
//! an unprivileged user.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use super::*;
use crate::apply::{apply_layer, ApplyOptions, ApplyTarget};
use crate::layer::{LayerCompression, LayerWriter};

fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A description of every entry below `root`, for comparing trees.
fn tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    crate::testsuite::describe_tree(
        root,
        crate::testsuite::Describe {
            overlay_format: true,
            dir_times: true,
        },
    )
}

fn opaque_xattr() -> &'static str {
    if crate::idmap::is_real_root() {
        format::OPAQUE_XATTR_TRUSTED
    } else {
        format::OPAQUE_XATTR_USER
    }
}

/// An upper directory with one of everything.
fn rich_upper(root: &Path) {
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("etc/conf.d/a b\nc ünï"), "special name").unwrap();
    fs::hard_link(root.join("etc/hosts"), root.join("etc/hosts.link")).unwrap();
    fs::write(root.join("suid"), "#!").unwrap();
    fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink("/etc/hosts", root.join("abs")).unwrap();
    symlink("etc/hosts", root.join("rel")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    let long_dir = root.join("d".repeat(120)).join("e".repeat(120));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(255)), "long").unwrap();
    symlink("t".repeat(200), root.join("longlink")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("opq")).unwrap();
    fs::write(root.join("opq/new"), "n").unwrap();
    rustix::fs::lsetxattr(
        root.join("opq"),
        opaque_xattr(),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        root.join("etc/hosts"),
        "user.kind",
        b"hosts",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    if crate::idmap::is_real_root() {
        // cap_net_bind_service, effective (VFS_CAP_REVISION_2): file capabilities survive.
        let cap: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        rustix::fs::lsetxattr(
            root.join("suid"),
            "security.capability",
            &cap,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    let mut big = vec![0u8; 3 << 20];
    big[1 << 20] = 1;
    fs::write(root.join("sparse-ish"), &big).unwrap();
    for e in ["etc/hosts", "suid", "fifo", "opq/new", "sparse-ish"] {
        set_mtime(&root.join(e), 1_650_000_000);
    }
    for e in ["etc/conf.d", "etc", "opq", ""] {
        set_mtime(&root.join(e), 1_650_000_001);
    }
}

fn layer_of(
    upper: &Path,
    blobs: &Path,
    compression: LayerCompression,
    opts: &DiffOptions,
) -> crate::layer::Layer {
    let mut w = LayerWriter::new(blobs, compression).unwrap();
    write_diff(upper, opts, &mut w).unwrap();
    w.finish().unwrap()
}

#[test]
fn round_trip_keeps_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    rich_upper(&upper);
    for compression in [
        LayerCompression::default(),
        LayerCompression::Gzip { level: 6 },
        LayerCompression::None,
    ] {
        let layer = layer_of(
            &upper,
            &tmp.path().join("blobs"),
            compression,
            &DiffOptions::default(),
        );
        assert_eq!(layer.media_type, compression.media_type());
        assert_eq!(layer.size, fs::metadata(&layer.path).unwrap().len());
        let dest = tempfile::tempdir_in(tmp.path()).unwrap();
        let stats = apply_layer(
            fs::File::open(&layer.path).unwrap(),
            dest.path(),
            &ApplyOptions {
                target: ApplyTarget::Overlay,
                ..ApplyOptions::default()
            },
        )
        .unwrap();
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(tree(&upper), tree(dest.path()), "{compression:?}");
    }
}

#[test]
fn same_tree_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    rich_upper(&upper);
    for c in [
        LayerCompression::Zstd {
            level: 3,
            threads: 2,
        },
        LayerCompression::Gzip { level: 6 },
    ] {
        let a = layer_of(&upper, &tmp.path().join("a"), c, &DiffOptions::default());
        let b = layer_of(&upper, &tmp.path().join("b"), c, &DiffOptions::default());
        assert_eq!((a.digest, a.diff_id), (b.digest, b.diff_id));
    }
    let a = layer_of(
        &upper,
        &tmp.path().join("c"),
        LayerCompression::Zstd {
            level: 3,
            threads: 0,
        },
        &DiffOptions::default(),
    );
    let b = layer_of(
        &upper,
        &tmp.path().join("d"),
        LayerCompression::Gzip { level: 6 },
        &DiffOptions::default(),
    );
    assert_eq!(a.diff_id, b.diff_id, "diff_id is the uncompressed tar's");
}

fn entries(tar_bytes: &[u8]) -> Vec<(String, u64, u64, u64, tar::EntryType)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.mtime().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.entry_type(),
            )
        })
        .collect()
}

#[test]
fn whiteouts_opaque_markers_and_pax_names_in_the_tar() {
    let tmp = tempfile::tempdir().unwrap();
    rich_upper(tmp.path());
    let mut out = Vec::new();
    write_diff(tmp.path(), &DiffOptions::default(), &mut out).unwrap();
    let names: Vec<String> = entries(&out).into_iter().map(|e| e.0).collect();
    assert!(names.contains(&".wh.gone".to_string()));
    let opq = names.iter().position(|n| n == "opq/").unwrap();
    assert_eq!(names[opq + 1], "opq/.wh..wh..opq");
    let long = format!(
        "{}/{}/{}",
        "d".repeat(120),
        "e".repeat(120),
        "f".repeat(255)
    );
    assert!(names.contains(&long), "PAX path kept the long name");
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("etc/") < pos("etc/conf.d/") && pos("etc/conf.d/") < pos("etc/hosts"));
}

#[test]
fn clamps_times_and_maps_ids_back() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), "x").unwrap();
    set_mtime(&tmp.path().join("f"), 2_000_000_000);
    let me = rustix::process::geteuid().as_raw();
    let opts = DiffOptions {
        uid_map: IdMap::parse_proc(&format!("0 {me} 1")).unwrap(),
        gid_map: IdMap::parse_proc(&format!("0 {} 1", rustix::process::getegid().as_raw()))
            .unwrap(),
        source_date_epoch: Some(1_000),
    };
    let mut out = Vec::new();
    write_diff(tmp.path(), &opts, &mut out).unwrap();
    let e = entries(&out);
    assert_eq!(e, [("f".to_string(), 1_000, 0, 0, tar::EntryType::Regular)]);
    // Outside the mapping: the overflow id.
    let opts = DiffOptions {
        uid_map: IdMap::parse_proc(&format!("0 {} 1", me + 1)).unwrap(),
        ..DiffOptions::default()
    };
    let mut out = Vec::new();
    write_diff(tmp.path(), &opts, &mut out).unwrap();
    assert_eq!(entries(&out)[0].2, 65534);
}

#[test]
fn empty_upper_is_an_empty_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let stats = write_diff(tmp.path(), &DiffOptions::default(), &mut out).unwrap();
    assert_eq!(stats.entries, 0);
}

/// Makes below `top` a chain of 21 directories of 200-byte names (4,220 bytes: past
/// `PATH_MAX` once `top` is prefixed) walking from fds; returns its bottom and its path.
fn deep_chain(top: &Path) -> (std::os::fd::OwnedFd, String) {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    fs::create_dir_all(top).unwrap();
    let mut dir = rustix::fs::open(top, flags, Mode::empty()).unwrap();
    let mut names = Vec::new();
    for i in 0..21 {
        let n = format!("{i:02}{}", "d".repeat(198));
        rustix::fs::mkdirat(&dir, n.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = rustix::fs::openat(&dir, n.as_str(), flags, Mode::empty()).unwrap();
        names.push(n);
    }
    (dir, names.join("/"))
}

fn touch(dir: &std::os::fd::OwnedFd, name: &str) {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::openat(
        dir,
        name,
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
}

/// The copy backend's diff of a tree against a lower holding a path past `PATH_MAX`: the
/// deep file deleted from the tree becomes a whiteout, the one changed is written.
#[test]
fn lowers_deeper_than_path_max_are_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, merged) = (tmp.path().join("lower"), tmp.path().join("merged"));
    let (bottom, rel) = deep_chain(&lower);
    touch(&bottom, "gone");
    touch(&bottom, "kept");
    let (bottom, _) = deep_chain(&merged);
    touch(&bottom, "kept");
    let f = rustix::fs::openat(
        &bottom,
        "kept",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::io::write(&f, b"changed").unwrap();
    let mut out = Vec::new();
    write_diff_against_lowers(&merged, &[lower], &DiffOptions::default(), &mut out).unwrap();
    let names: Vec<String> = entries(&out).into_iter().map(|e| e.0).collect();
    assert!(
        names.contains(&format!("{rel}/.wh.gone")),
        "{:?}",
        names.last()
    );
    assert!(names.contains(&format!("{rel}/kept")));
}
