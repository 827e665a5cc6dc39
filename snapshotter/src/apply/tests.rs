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

/// A raw header of `kind` named `name` that declares `size` bytes (written in GNU
/// base-256 when it does not fit in octal), followed by `body` padded to a block.
fn declared(name: &str, kind: tar::EntryType, size: u64, body: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn extended_headers_declaring_gigabytes_are_refused_before_reading() {
    for kind in [
        tar::EntryType::XHeader,
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
    ] {
        let a = Area::new();
        // 64 GiB declared, a few bytes present: nothing is allocated for the claim.
        let mut tar = declared("././@LongLink", kind, 64 << 30, b"20 path=aaaaaaaaaaa\n");
        tar.extend(TarBuilder::new().file("after", "x").finish());
        match a.apply(&tar, ApplyTarget::Overlay) {
            Err(ApplyError::Unsafe { reason, .. }) => {
                assert!(reason.contains("extended"), "{reason}")
            }
            other => panic!("{kind:?}: {other:?}"),
        }
        a.outside_untouched();
    }
}

#[test]
fn truncated_layers_and_short_files_fail_with_a_read_error() {
    let full = TarBuilder::new()
        .file("a", &"x".repeat(3000))
        .file("b", "y")
        .finish();
    // (A cut exactly between entries reads as the end of the archive, as with GNU tar.)
    for cut in [100, 512, 1500, 3600] {
        let a = Area::new();
        let r = a.apply(&full[..cut], ApplyTarget::Overlay);
        assert!(
            matches!(r, Err(ApplyError::Read(_) | ApplyError::Entry { .. })),
            "cut at {cut}: {r:?}"
        );
        a.outside_untouched();
    }
    // A file that declares 8 GiB and holds a block.
    let a = Area::new();
    let tar = declared("big", tar::EntryType::Regular, 8 << 30, &[7u8; 512]);
    let r = a.apply(&tar, ApplyTarget::Overlay);
    assert!(
        matches!(r, Err(ApplyError::Read(_) | ApplyError::Entry { .. })),
        "{r:?}"
    );
    a.outside_untouched();
}

/// A PAX extended header holding `records` (`key`, `value`).
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while len != base + len.to_string().len() {
            len = base + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    declared(
        "././@PaxHeader",
        tar::EntryType::XHeader,
        data.len() as u64,
        &data,
    )
}

#[test]
fn pax_sizes_that_disagree_with_the_header_are_refused() {
    for size in [&b"99999999999999999999999999"[..], b"-1", b"4096"] {
        let a = Area::new();
        let mut tar = pax(&[("size", size)]);
        tar.extend(TarBuilder::new().file("f", "short").finish());
        unsafe_error_names(a.apply(&tar, ApplyTarget::Overlay), "f");
        a.outside_untouched();
    }
    // Agreeing is fine.
    let a = Area::new();
    let mut tar = pax(&[("size", b"5")]);
    tar.extend(TarBuilder::new().file("f", "short").finish());
    a.apply(&tar, ApplyTarget::Overlay).unwrap();
    assert_eq!(fs::read_to_string(a.dest.join("f")).unwrap(), "short");
}

#[test]
fn pax_ids_override_the_header() {
    let a = Area::new();
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let mut tar = pax(&[
        ("uid", me.0.to_string().as_bytes()),
        ("gid", me.1.to_string().as_bytes()),
    ]);
    // The header says 0:0; as an unprivileged user that would be a warning and the
    // caller's ids, so the PAX ids are checked through the warnings as well.
    tar.extend(TarBuilder::new().file("f", "x").finish());
    let stats = a.apply(&tar, ApplyTarget::Overlay).unwrap();
    let md = fs::metadata(a.dest.join("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), me);
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
}

// ---------------------------------------------------------------------------------------
// Property-based: any sequence of entries, any bytes.

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    /// The longest one case may take (small inputs, a debug build, a busy machine).
    const CASE_LIMIT: Duration = Duration::from_secs(3);

    /// `cases` cases unless `PROPTEST_CASES` says otherwise (scripts/fuzz.sh).
    fn config(cases: u32) -> proptest::test_runner::Config {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases);
        proptest::test_runner::Config {
            cases,
            // A failing case is printed, never written into the source tree.
            failure_persistence: None,
            ..Default::default()
        }
    }

    /// One tar entry, names built from components that matter (`..`, `.`, whiteouts,
    /// the outside directory's absolute path as `OUT`).
    #[derive(Debug, Clone)]
    enum Op {
        File(String, u16),
        Dir(String),
        Symlink(String, String),
        Hardlink(String, String),
        Fifo(String),
        Device(String),
        /// A PAX header (path, linkpath or size) before a file.
        Pax(&'static str, String),
        /// A GNU long name before a file.
        LongName(String),
    }

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just(".."),
                Just("."),
                Just(""),
                Just(".wh.a"),
                Just(".wh..wh..opq"),
                Just(".wh."),
                Just("OUT"),
            ],
            1..5,
        )
        .prop_map(|v| v.join("/"))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (name(), any::<u16>()).prop_map(|(n, s)| Op::File(n, s % 2000)),
            name().prop_map(Op::Dir),
            (name(), name()).prop_map(|(n, t)| Op::Symlink(n, t)),
            (name(), name()).prop_map(|(n, t)| Op::Hardlink(n, t)),
            name().prop_map(Op::Fifo),
            name().prop_map(Op::Device),
            (
                prop_oneof![Just("path"), Just("linkpath"), Just("size"), Just("uid")],
                prop_oneof![name(), "[0-9]{1,25}", Just("-1".to_string())]
            )
                .prop_map(|(k, v)| Op::Pax(k, v)),
            name().prop_map(|n| Op::LongName(format!("{}{n}", "long/".repeat(25)))),
        ]
    }

    fn tar_of(ops: &[Op], outside: &str) -> Vec<u8> {
        let fix = |n: &str| n.replace("OUT", outside);
        let mut b = TarBuilder::new();
        let long = |kind: tar::EntryType, value: &[u8]| -> Vec<u8> {
            let mut t = TarBuilder::new();
            t.raw(b"././@LongLink", kind, value, b"", 0o644);
            t.out
        };
        for op in ops {
            // Names longer than a header holds are cut (the long-name ops cover those).
            let short = |n: &str| {
                let n = fix(n).into_bytes();
                n[..n.len().min(100)].to_vec()
            };
            match op {
                Op::File(n, size) => {
                    b.raw(
                        &short(n),
                        tar::EntryType::Regular,
                        &vec![b'x'; *size as usize],
                        b"",
                        0o4755,
                    );
                }
                Op::Dir(n) => {
                    b.raw(&short(n), tar::EntryType::Directory, b"", b"", 0o755);
                }
                Op::Symlink(n, t) => {
                    b.raw(&short(n), tar::EntryType::Symlink, b"", &short(t), 0o777);
                }
                Op::Hardlink(n, t) => {
                    b.raw(&short(n), tar::EntryType::Link, b"", &short(t), 0o644);
                }
                Op::Fifo(n) => {
                    b.raw(&short(n), tar::EntryType::Fifo, b"", b"", 0o644);
                }
                Op::Device(n) => {
                    b.raw(&short(n), tar::EntryType::Char, b"", b"", 0o666);
                }
                Op::Pax(k, v) => {
                    let v = fix(v);
                    let rec = format!("{k}={v}\n");
                    let mut len = rec.len() + 2;
                    while len != rec.len() + 1 + len.to_string().len() {
                        len = rec.len() + 1 + len.to_string().len();
                    }
                    let data = format!("{len} {rec}");
                    b.raw(
                        b"././@PaxHeader",
                        tar::EntryType::XHeader,
                        data.as_bytes(),
                        b"",
                        0o644,
                    );
                    b.raw(b"p", tar::EntryType::Regular, b"y", b"", 0o644);
                }
                Op::LongName(n) => {
                    let mut v = fix(n).into_bytes();
                    v.push(0);
                    b.out.extend(long(tar::EntryType::GNULongName, &v));
                    b.raw(b"l", tar::EntryType::Regular, b"z", b"", 0o644);
                }
            }
        }
        b.finish()
    }

    /// Applies `tar` in every target with the limit on time; outside stays untouched.
    fn apply_everywhere(tar: &[u8]) {
        for target in [
            ApplyTarget::Overlay,
            ApplyTarget::Merged,
            ApplyTarget::Plain,
        ] {
            let a = Area::new();
            let start = Instant::now();
            let _ = a.apply(tar, target);
            let took = start.elapsed();
            assert!(took < CASE_LIMIT, "{target:?}: apply took {took:?}");
            a.outside_untouched();
        }
    }

    proptest! {
        #![proptest_config(config(64))]

        /// Any sequence of entries with hostile names, in every target: applied or
        /// refused, never a panic, never a write outside, quickly.
        #[test]
        fn any_entries_apply_or_are_refused_inside(ops in proptest::collection::vec(op(), 0..12)) {
            for target in [ApplyTarget::Overlay, ApplyTarget::Merged, ApplyTarget::Plain] {
                // `OUT` in names is this area's outside directory.
                let a = Area::new();
                let tar = tar_of(&ops, &a.outside.to_string_lossy());
                let start = Instant::now();
                let _ = a.apply(&tar, target);
                let took = start.elapsed();
                prop_assert!(took < CASE_LIMIT, "{:?}: apply took {:?}", target, took);
                a.outside_untouched();
            }
        }

        /// A valid layer with bytes changed, cut short or compressed then damaged: an
        /// error or a result, never a panic, never an allocation the bytes declare.
        #[test]
        fn damaged_layers_never_panic(
            ops in proptest::collection::vec(op(), 1..6),
            flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8),
            cut in any::<u16>(),
            compress in 0u8..3,
        ) {
            let mut tar = tar_of(&ops, "/nonexistent-outside");
            for (at, v) in &flips {
                let i = *at as usize % tar.len();
                tar[i] = *v;
            }
            let mut bytes = match compress {
                0 => tar,
                1 => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&tar).unwrap();
                    e.finish().unwrap()
                }
                _ => zstd::encode_all(&tar[..], 1).unwrap(),
            };
            let keep = bytes.len() - (cut as usize % (bytes.len() / 4 + 1));
            bytes.truncate(keep);
            apply_everywhere(&bytes);
        }

        /// Arbitrary bytes (after a tar header's worth of structure, sometimes).
        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048), header in any::<bool>()) {
            if header && bytes.len() >= 512 {
                let mut h = tar::Header::new_gnu();
                h.set_path("f").unwrap();
                h.set_size(u64::from(bytes[0]) << 40);
                h.set_cksum();
                bytes[..512].copy_from_slice(h.as_bytes());
            }
            apply_everywhere(&bytes);
        }
    }
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
