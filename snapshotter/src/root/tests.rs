use std::os::unix::fs::symlink;

use super::*;

/// A tree with links that point inside, at the top, and out.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("usr/lib")).unwrap();
    std::fs::write(r.join("usr/lib/file"), "f").unwrap();
    symlink("/usr/lib", r.join("abs")).unwrap();
    symlink("usr/lib", r.join("rel")).unwrap();
    symlink("../../..", r.join("usr/lib/up")).unwrap();
    symlink("loop2", r.join("loop1")).unwrap();
    symlink("loop1", r.join("loop2")).unwrap();
    t
}

#[test]
fn in_root_resolves_like_a_chroot() {
    let t = tree();
    let root = Root::open(t.path()).unwrap();
    let lib = t.path().join("usr/lib");
    assert_eq!(
        root.resolve(Path::new("/abs/file")).unwrap(),
        lib.join("file")
    );
    assert_eq!(root.resolve(Path::new("rel")).unwrap(), lib);
    // `..` and a link climbing out stop at the root.
    assert_eq!(
        root.resolve(Path::new("../../usr")).unwrap(),
        t.path().join("usr")
    );
    assert_eq!(
        root.resolve(Path::new("usr/lib/up/usr")).unwrap(),
        t.path().join("usr")
    );
    // What does not exist is kept after what does.
    assert_eq!(
        root.resolve(Path::new("abs/new/deeper")).unwrap(),
        lib.join("new/deeper")
    );
    assert_eq!(root.resolve(Path::new("")).unwrap(), t.path());
    assert!(matches!(
        root.resolve(Path::new("loop1")),
        Err(RootError::SymlinkLoop { .. })
    ));
    assert!(matches!(
        root.resolve(Path::new("usr/lib/file/x")),
        Err(RootError::NotDirectory { .. })
    ));
    // The kernel agrees with the walk.
    let fd = root
        .open_file(Path::new("/abs/file"), OFlags::RDONLY, Mode::empty())
        .unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).unwrap();
    assert_eq!(s, "f");
    root.open_dir(Path::new("usr/lib/up")).unwrap();
}

#[test]
fn beneath_refuses_to_leave() {
    let t = tree();
    let root = Root::open_beneath(t.path()).unwrap();
    for escape in ["abs", "../x", "usr/lib/up", "usr/lib/up/usr"] {
        assert!(
            matches!(
                root.resolve(Path::new(escape)),
                Err(RootError::Escapes { .. })
            ),
            "resolve {escape}"
        );
        assert!(
            matches!(
                root.open_dir(Path::new(escape)),
                Err(RootError::Escapes { .. })
            ),
            "open {escape}"
        );
    }
    assert_eq!(
        root.resolve(Path::new("rel/file")).unwrap(),
        t.path().join("usr/lib/file")
    );
}

#[test]
fn create_dir_all_makes_parents_through_links_inside() {
    let t = tree();
    let root = Root::open(t.path()).unwrap();
    let me = (rustix::process::geteuid(), rustix::process::getegid());
    root.create_dir_all(Path::new("/abs/a/b"), Mode::from_raw_mode(0o750), Some(me))
        .unwrap();
    let md = std::fs::metadata(t.path().join("usr/lib/a/b")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o777, 0o750 & !umask());
    assert_eq!(md.uid(), me.0.as_raw());
    // An absolute link under a beneath root is an escape, not a place to create.
    let beneath = Root::open_beneath(t.path()).unwrap();
    assert!(matches!(
        beneath.create_dir_all(Path::new("abs/c"), Mode::from_raw_mode(0o755), None),
        Err(RootError::Escapes { .. })
    ));
    assert!(!t.path().join("usr/lib/c").exists());
}

fn umask() -> u32 {
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.bits()
}
