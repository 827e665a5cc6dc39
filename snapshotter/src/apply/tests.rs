//! Apply against hand-made tars: every entry kind, compression by magic bytes, whiteouts
//! and opaque directories in both targets, and the malicious cases, each of which must
//! fail with an error naming the entry while nothing outside the snapshot changes. The
//! tests run as root and as an unprivileged user (scripts/test.sh); where the two differ
//! (device nodes, foreign owners, trusted xattrs) both outcomes are checked.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

/// Builds tar bytes from (raw name, kind, body or link target, mode) entries, writing
/// names into the header directly so that `..` and absolute names can be expressed.
struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    fn new() -> Self {
        TarBuilder { out: Vec::new() }
    }

    fn raw(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        body: &[u8],
        link: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name);
            gnu.linkname = [0; 100];
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(body);
        let pad = (512 - body.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn device(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("device name");
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0o666);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_size(0);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    fn file(&mut self, name: &str, body: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            tar::EntryType::Regular,
            body.as_bytes(),
            b"",
            0o644,
        )
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name.as_bytes(), tar::EntryType::Directory, b"", b"", 0o755)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            tar::EntryType::Symlink,
            b"",
            target.as_bytes(),
            0o777,
        )
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            name.as_bytes(),
            tar::EntryType::Link,
            b"",
            target.as_bytes(),
            0o644,
        )
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// A scratch area: `dest/` (the snapshot) and `outside/` with a sentinel file.
struct Area {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Area {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), "keep").unwrap();
        Area {
            _tmp: tmp,
            dest,
            outside,
        }
    }

    fn apply(&self, tar: &[u8], target: ApplyTarget) -> Result<ApplyStats, ApplyError> {
        let opts = ApplyOptions {
            target,
            ..ApplyOptions::default()
        };
        apply_layer(tar, &self.dest, &opts)
    }

    /// The outside directory holds exactly the sentinel, unchanged.
    fn outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["sentinel"],
            "something was written outside the snapshot"
        );
        assert_eq!(
            fs::read_to_string(self.outside.join("sentinel")).unwrap(),
            "keep"
        );
        let parent = self.dest.parent().unwrap();
        let mut top: Vec<_> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        top.sort();
        assert_eq!(top, ["dest", "outside"]);
    }
}

fn is_root() -> bool {
    crate::idmap::is_real_root()
}

fn unsafe_error_names(r: Result<ApplyStats, ApplyError>, entry: &str) {
    match r {
        Err(ApplyError::Unsafe { entry: e, reason }) => {
            assert_eq!(e, entry, "{reason}");
        }
        other => panic!("expected a refusal of {entry:?}, got {other:?}"),
    }
}

#[test]
fn applies_every_kind_with_metadata() {
    let a = Area::new();
    let tar = TarBuilder::new()
        .dir("etc/")
        .file("etc/hosts", "127.0.0.1 localhost\n")
        .raw(b"bin/su", tar::EntryType::Regular, b"#!", b"", 0o4755)
        .symlink("etc/link", "hosts")
        .symlink("abs", "/etc/hosts")
        .hardlink("etc/hosts2", "etc/hosts")
        .raw(b"run/fifo", tar::EntryType::Fifo, b"", b"", 0o600)
        .finish();
    let stats = a.apply(&tar, ApplyTarget::Overlay).unwrap();
    assert_eq!(stats.entries, 7);
    let d = &a.dest;
    assert_eq!(
        fs::read_to_string(d.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    assert_eq!(
        fs::metadata(d.join("bin/su")).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(d.join("etc/link")).unwrap(),
        Path::new("hosts")
    );
    assert_eq!(
        fs::read_link(d.join("abs")).unwrap(),
        Path::new("/etc/hosts")
    );
    let (m1, m2) = (
        fs::metadata(d.join("etc/hosts")).unwrap(),
        fs::metadata(d.join("etc/hosts2")).unwrap(),
    );
    assert_eq!(m1.ino(), m2.ino(), "hard link kept");
    assert!(fs::symlink_metadata(d.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(m1.mtime(), 1_600_000_000);
    assert_eq!(
        fs::metadata(d.join("etc")).unwrap().mtime(),
        1_600_000_000,
        "dir time set last"
    );
    a.outside_untouched();
}

#[test]
fn detects_compression_by_magic_bytes() {
    let tar = TarBuilder::new().file("a", "plain").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    for (bytes, kind) in [
        (&tar, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        assert_eq!(Compression::detect(bytes), kind);
        let a = Area::new();
        a.apply(bytes, ApplyTarget::Overlay).unwrap();
        assert_eq!(fs::read_to_string(a.dest.join("a")).unwrap(), "plain");
    }
}

#[test]
fn device_nodes_are_made_or_skipped_with_one_warning() {
    let a = Area::new();
    let tar = TarBuilder::new()
        .device("dev/null", 1, 3)
        .device("dev/zero", 1, 5)
        .finish();
    let stats = a.apply(&tar, ApplyTarget::Overlay).unwrap();
    if is_root() {
        let m = fs::symlink_metadata(a.dest.join("dev/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
    } else {
        assert_eq!(
            stats
                .warnings
                .iter()
                .filter(|w| w.contains("device nodes skipped"))
                .count(),
            1
        );
        assert!(!a.dest.join("dev/null").exists());
    }
}

#[test]
fn whiteouts_and_opaque_dirs_in_overlay_format() {
    let a = Area::new();
    let tar = TarBuilder::new()
        .dir("d/")
        .file("d/.wh..wh..opq", "")
        .file("d/new", "x")
        .file(".wh.gone", "")
        .finish();
    a.apply(&tar, ApplyTarget::Overlay).unwrap();
    let gone = a.dest.join("gone");
    let meta = fs::symlink_metadata(&gone).unwrap();
    if meta.file_type().is_char_device() {
        assert_eq!(meta.rdev(), 0);
    } else {
        let mut v = [0u8; 4];
        let n = rustix::fs::lgetxattr(&gone, format::WHITEOUT_XATTR_USER, &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"y");
    }
    let xattr = if is_root() {
        format::OPAQUE_XATTR_TRUSTED
    } else {
        format::OPAQUE_XATTR_USER
    };
    let mut v = [0u8; 4];
    let n = rustix::fs::lgetxattr(a.dest.join("d"), xattr, &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(
        a.dest.join("d/new").exists(),
        "the layer's own entries stay"
    );
}

#[test]
fn whiteouts_and_opaque_dirs_on_a_merged_tree() {
    let a = Area::new();
    let lower = TarBuilder::new()
        .file("d/old", "1")
        .file("d/keep/x", "2")
        .file("gone", "3")
        .finish();
    a.apply(&lower, ApplyTarget::Merged).unwrap();
    let upper = TarBuilder::new()
        .file("d/new", "n")
        .file("d/.wh..wh..opq", "")
        .file(".wh.gone", "")
        .finish();
    a.apply(&upper, ApplyTarget::Merged).unwrap();
    assert!(!a.dest.join("gone").exists());
    assert!(!a.dest.join("d/old").exists() && !a.dest.join("d/keep").exists());
    assert_eq!(fs::read_to_string(a.dest.join("d/new")).unwrap(), "n");
}

#[test]
fn replaces_entries_of_another_type() {
    let a = Area::new();
    a.apply(
        &TarBuilder::new()
            .file("x/y", "1")
            .symlink("s", "/outside-target")
            .finish(),
        ApplyTarget::Merged,
    )
    .unwrap();
    a.apply(
        &TarBuilder::new()
            .file("x", "now a file")
            .file("s", "not a link")
            .finish(),
        ApplyTarget::Merged,
    )
    .unwrap();
    assert_eq!(fs::read_to_string(a.dest.join("x")).unwrap(), "now a file");
    assert!(fs::symlink_metadata(a.dest.join("s")).unwrap().is_file());
}

#[test]
fn refuses_dotdot_names() {
    let a = Area::new();
    let tar = TarBuilder::new().file("../outside/pwned", "x").finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "../outside/pwned");
    let tar = TarBuilder::new()
        .file("a/../../outside/pwned", "x")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "a/../../outside/pwned");
    a.outside_untouched();
}

#[test]
fn absolute_names_stay_inside() {
    let a = Area::new();
    let tar = TarBuilder::new().file("/abs/file", "inside").finish();
    a.apply(&tar, ApplyTarget::Overlay).unwrap();
    assert_eq!(
        fs::read_to_string(a.dest.join("abs/file")).unwrap(),
        "inside"
    );
    a.outside_untouched();
}

#[test]
fn refuses_writing_through_symlinks_planted_in_the_layer() {
    let a = Area::new();
    let out = a.outside.to_string_lossy().into_owned();
    // Absolute symlink to the outside directory, then a file through it.
    let tar = TarBuilder::new()
        .symlink("evil", &out)
        .file("evil/pwned", "x")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "evil/pwned");
    a.outside_untouched();
    // Relative symlink climbing out.
    let a = Area::new();
    let tar = TarBuilder::new()
        .symlink("up", "../outside")
        .file("up/pwned", "x")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "up/pwned");
    a.outside_untouched();
    // A directory replaced by a symlink, then written through.
    let a = Area::new();
    let tar = TarBuilder::new()
        .dir("d/")
        .symlink("d", "../outside")
        .file("d/pwned", "x")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "d/pwned");
    a.outside_untouched();
    // A symlink at the final component is replaced, never followed.
    let a = Area::new();
    let target = a.outside.join("sentinel").to_string_lossy().into_owned();
    let tar = TarBuilder::new()
        .symlink("s", &target)
        .file("s", "replaced")
        .finish();
    a.apply(&tar, ApplyTarget::Overlay).unwrap();
    assert_eq!(fs::read_to_string(a.dest.join("s")).unwrap(), "replaced");
    a.outside_untouched();
}

#[test]
fn refuses_hard_links_out_of_the_snapshot() {
    let a = Area::new();
    let tar = TarBuilder::new()
        .hardlink("l", "../outside/sentinel")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "l");
    let out = a.outside.to_string_lossy().into_owned();
    let tar = TarBuilder::new()
        .symlink("evil", &out)
        .hardlink("l", "evil/sentinel")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "l");
    let tar = TarBuilder::new().hardlink("l2", "missing").finish();
    match Area::new().apply(&tar, ApplyTarget::Overlay) {
        Err(ApplyError::Entry { entry, .. }) => assert_eq!(entry, "l2"),
        other => panic!("{other:?}"),
    }
    a.outside_untouched();
    assert_eq!(fs::metadata(a.outside.join("sentinel")).unwrap().nlink(), 1);
}

#[test]
fn refuses_bad_whiteouts() {
    let a = Area::new();
    let tar = TarBuilder::new().file(".wh..", "").finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Merged), ".wh..");
    a.outside_untouched();
}

/// An ADD archive (plain target) goes through absolute symlinks, its own or the tree's,
/// inside the tree, as BuildKit unpacks it; what would land outside is still refused.
#[test]
fn archives_resolve_absolute_symlinks_inside_the_tree() {
    let a = Area::new();
    let out = a.outside.to_string_lossy().into_owned();
    fs::create_dir_all(a.dest.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", a.dest.join("lib")).unwrap();
    let tar = TarBuilder::new()
        .symlink("etc-link", "/etc")
        .dir("etc/")
        .file("etc-link/conf", "via-archive-link")
        .file("lib/libx.so", "via-tree-link")
        .symlink("evil", &out)
        .file("evil/pwned", "lands-inside")
        .symlink("deep", "/usr/lib/../../usr/lib")
        .file("deep/d", "deep")
        .finish();
    a.apply(&tar, ApplyTarget::Plain).unwrap();
    assert_eq!(
        fs::read_to_string(a.dest.join("etc/conf")).unwrap(),
        "via-archive-link"
    );
    assert_eq!(
        fs::read_to_string(a.dest.join("usr/lib/libx.so")).unwrap(),
        "via-tree-link"
    );
    let inside = a.dest.join(out.trim_start_matches('/')).join("pwned");
    assert_eq!(fs::read_to_string(inside).unwrap(), "lands-inside");
    assert_eq!(
        fs::read_to_string(a.dest.join("usr/lib/d")).unwrap(),
        "deep"
    );
    a.outside_untouched();
    // A relative link that climbs out, or `..` past the root after an absolute link.
    for (link, target) in [("up", "../outside"), ("absup", "/../outside")] {
        let a = Area::new();
        let tar = TarBuilder::new()
            .symlink(link, target)
            .file(&format!("{link}/pwned"), "x")
            .finish();
        unsafe_error_names(a.apply(&tar, ApplyTarget::Plain), &format!("{link}/pwned"));
        a.outside_untouched();
    }
    // A layer still may not go through an absolute symlink.
    let a = Area::new();
    let tar = TarBuilder::new()
        .symlink("etc-link", "/etc")
        .file("etc-link/conf", "x")
        .finish();
    unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "etc-link/conf");
}
