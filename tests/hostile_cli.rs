//! Hostile archives through every entry point, end to end: a base image from an OCI
//! layout (`--build-context NAME=oci-layout://DIR`), `kiln load` of docker and OCI
//! archives (then `FROM` the loaded image), and `ADD archive.tar /dst/`. The tars are
//! written header by header so names are exactly what an attacker would write.
//!
//! For every case: nothing appears or changes in a canary directory outside the kiln root
//! (every escaping name aims at it: absolute, or climbing far enough from anywhere), the
//! build fails with an error naming the entry or gives BuildKit's result, `kiln images`
//! still opens the store, and the next build on the same root succeeds.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use kiln_tests::{
    busybox_context, combined, kiln_at, kiln_bin, real_root, sha256_hex, BUSYBOX_BASE,
};
use sha2::{Digest, Sha256};

/// Far enough up from any directory kiln writes in.
const CLIMB: &str = "../../../../../../../../../../../../";

// ---------------------------------------------------------------------------------------
// Raw tars.

/// A tar written header by header.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(&mut self, name: &[u8], kind: tar::EntryType, size: u64, link: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().expect("a GNU header");
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "use a long-name header"
        );
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
    }

    fn data(&mut self, body: &[u8]) {
        self.0.extend_from_slice(body);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }

    fn raw(mut self, name: &str, kind: tar::EntryType, body: &[u8], link: &str, mode: u32) -> Tar {
        self.header(
            name.as_bytes(),
            kind,
            body.len() as u64,
            link.as_bytes(),
            mode,
        );
        self.data(body);
        self
    }

    fn file(self, name: &str, body: &str) -> Tar {
        self.raw(name, tar::EntryType::Regular, body.as_bytes(), "", 0o644)
    }

    fn mode(self, name: &str, kind: tar::EntryType, mode: u32) -> Tar {
        self.raw(name, kind, b"", "", mode)
    }

    fn dir(self, name: &str) -> Tar {
        self.raw(name, tar::EntryType::Directory, b"", "", 0o755)
    }

    fn symlink(self, name: &str, target: &str) -> Tar {
        self.raw(name, tar::EntryType::Symlink, b"", target, 0o777)
    }

    fn hardlink(self, name: &str, target: &str) -> Tar {
        self.raw(name, tar::EntryType::Link, b"", target, 0o644)
    }

    fn device(mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Tar {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("device name");
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_size(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self
    }

    /// A PAX extended header with `records` for the next entry.
    fn pax(mut self, records: &[(&str, &[u8])]) -> Tar {
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
        self.header(
            b"././@PaxHeader",
            tar::EntryType::XHeader,
            data.len() as u64,
            b"",
            0o644,
        );
        self.data(&data);
        self
    }

    /// A GNU long name (`L`) or long link name (`K`) header for the next entry.
    fn gnu_long(mut self, kind: tar::EntryType, value: &str) -> Tar {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.header(b"././@LongLink", kind, v.len() as u64, b"", 0o644);
        self.data(&v);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// A tar holding one header (name `name`, type `kind`) declaring `size` bytes of zeros,
/// every byte present, compressed as it is generated (nothing of that size in memory):
/// the layer blob and the digest of the uncompressed tar.
fn bomb(name: &str, kind: tar::EntryType, size: u64, zstd: bool) -> (Vec<u8>, String) {
    struct Both<W: Write> {
        out: W,
        hash: Sha256,
    }
    impl<W: Write> Write for Both<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.hash.update(b);
            self.out.write_all(b)?;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    let head = Tar::default();
    let mut head = head;
    head.header(name.as_bytes(), kind, size, b"", 0o644);
    let tail = Tar::default().file("after-the-bomb", "after").finish();
    let write = |w: &mut dyn Write| {
        w.write_all(&head.0).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            w.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        let pad = (512 - size % 512) % 512;
        w.write_all(&zeros[..pad as usize]).unwrap();
        w.write_all(&tail).unwrap();
    };
    if zstd {
        let enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let mut both = Both {
            out: enc,
            hash: Sha256::new(),
        };
        write(&mut both);
        let digest = format!("sha256:{:x}", both.hash.finalize());
        (both.out.finish().unwrap(), digest)
    } else {
        let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut both = Both {
            out: enc,
            hash: Sha256::new(),
        };
        write(&mut both);
        let digest = format!("sha256:{:x}", both.hash.finalize());
        (both.out.finish().unwrap(), digest)
    }
}

// ---------------------------------------------------------------------------------------
// Images made of raw layers.

/// A layer: its blob (as stored), its media type and its diff id.
#[derive(Clone)]
struct Layer {
    blob: Vec<u8>,
    media: &'static str,
    diff_id: String,
}

impl Layer {
    fn plain(tar: Vec<u8>) -> Layer {
        let diff_id = format!("sha256:{}", sha256_hex(&tar));
        Layer {
            blob: tar,
            media: "application/vnd.oci.image.layer.v1.tar",
            diff_id,
        }
    }
}

/// The busybox tree of [`busybox_context`] as a layer (once per process); `None` when
/// busybox is missing (skipped, failing under CI, by `busybox_context`).
fn base_layer() -> Option<Layer> {
    static BASE: OnceLock<Option<Layer>> = OnceLock::new();
    BASE.get_or_init(|| {
        let ctx = busybox_context()?;
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", ctx.path().join("rootfs"))
            .expect("tar of the busybox tree");
        Some(Layer::plain(b.into_inner().expect("tar")))
    })
    .clone()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The config of an image of `layers`.
fn config(layers: &[&Layer]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    }))
    .expect("config json")
}

/// An OCI layout at `dir` with one manifest of `layers`, named `name` (containerd's
/// annotation) with tag `1`.
fn write_layout(dir: &Path, layers: &[&Layer], name: &str) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let cfg = config(layers);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&cfg), "size": cfg.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media, "digest": put(&l.blob), "size": l.blob.len(),
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put(&manifest),
            "size": manifest.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": "1",
                "io.containerd.image.name": format!("{name}:1"),
            },
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A tar of the files under `dir`, named relative to it.
fn tar_of(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A `docker save` archive of one image of `layers`, tagged `tag`.
fn docker_archive(layers: &[&Layer], tag: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).unwrap();
    };
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    for (l, n) in layers.iter().zip(&names) {
        add(n, &l.blob);
    }
    add("config.json", &config(layers));
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": [tag], "Layers": names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------
// The scene: a kiln root, a canary outside it, and the entry points.

struct Scene {
    tmp: tempfile::TempDir,
    root: PathBuf,
    canary: PathBuf,
    base: Layer,
}

/// How an entry point must end.
#[derive(Clone)]
enum Expect {
    /// Exit 1, the output holding every one of these.
    Refused(Vec<String>),
    /// Success, the output holding this (printed by the check script).
    Builds(String),
    /// Either (see the symlink cases): refused naming this, or built.
    Either(String),
}

fn refused(needles: &[&str]) -> Expect {
    Expect::Refused(needles.iter().map(|s| s.to_string()).collect())
}

/// The check a RUN makes after the hostile step; prints `marker` when all holds.
fn check(script: &str, marker: &str) -> String {
    format!("RUN {script} && echo {marker}\n")
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Layout,
    LoadDocker,
    LoadOci,
}

const LAYER_ENTRIES: [Entry; 3] = [Entry::Layout, Entry::LoadDocker, Entry::LoadOci];

impl Scene {
    fn new() -> Option<Scene> {
        let base = base_layer()?;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let canary = tmp.path().join("canary");
        fs::create_dir_all(&canary).unwrap();
        fs::write(canary.join("secret"), "keep").unwrap();
        Some(Scene {
            tmp,
            root,
            canary,
            base,
        })
    }

    fn canary(&self) -> String {
        self.canary.to_string_lossy().into_owned()
    }

    /// Nothing appeared in, or changed of, the canary directory.
    fn canary_untouched(&self, what: &str) {
        let names: Vec<_> = fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["secret"], "{what}: written outside the root");
        let md = fs::metadata(self.canary.join("secret")).unwrap();
        assert_eq!(md.nlink(), 1, "{what}: a hard link to a file outside");
        assert_eq!(
            fs::read_to_string(self.canary.join("secret")).unwrap(),
            "keep"
        );
        let top: Vec<_> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["root", "canary", "ctx", "layout", "archive.tar"].contains(&n.as_str()))
            .collect();
        assert!(top.is_empty(), "{what}: written next to the root: {top:?}");
    }

    fn kiln(&self, args: &[&str]) -> Output {
        kiln_at(&self.root, args)
    }

    /// A context holding `rootfs/` (busybox), `Dockerfile` and `extra` files.
    fn context(&self, dockerfile: &str, extra: &[(&str, &[u8])]) -> tempfile::TempDir {
        let ctx = busybox_context().expect("busybox (checked by base_layer)");
        fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        for (name, bytes) in extra {
            fs::write(ctx.path().join(name), bytes).unwrap();
        }
        ctx
    }

    /// Builds `dockerfile` (in a busybox context) with `extra` files and args.
    fn build(&self, dockerfile: &str, extra: &[(&str, &[u8])], args: &[&str]) -> Output {
        let ctx = self.context(dockerfile, extra);
        let mut all = vec!["build", "--no-cache"];
        all.extend_from_slice(args);
        all.push(ctx.path().to_str().unwrap());
        self.kiln(&all)
    }

    /// Brings the image of `layers` (busybox below them) in through `entry` and builds
    /// `FROM` it with `run` after; the build's output.
    fn through_layers(&self, entry: Entry, layers: &[&Layer], run: &str) -> Output {
        let run = if run.is_empty() { "RUN true\n" } else { run };
        let mut all = vec![&self.base];
        all.extend_from_slice(layers);
        let layout = self.tmp.path().join("layout");
        let archive = self.tmp.path().join("archive.tar");
        let _ = fs::remove_dir_all(&layout);
        let _ = fs::remove_file(&archive);
        let from = match entry {
            Entry::Layout => {
                write_layout(&layout, &all, "hostile-layout");
                let arg = format!("base=oci-layout://{}", layout.display());
                let o = self.build(
                    &format!("FROM base\n{run}"),
                    &[],
                    &["--build-context", &arg],
                );
                return o;
            }
            Entry::LoadDocker => {
                fs::write(&archive, docker_archive(&all, "hostile-docker:1")).unwrap();
                "hostile-docker:1"
            }
            Entry::LoadOci => {
                write_layout(&layout, &all, "hostile-oci");
                fs::write(&archive, tar_of(&layout)).unwrap();
                "hostile-oci:1"
            }
        };
        let o = self.kiln(&["load", "-i", archive.to_str().unwrap()]);
        assert!(o.status.success(), "{entry:?}: load: {}", combined(&o));
        self.build(&format!("FROM {from}\n{run}"), &[], &[])
    }

    /// `ADD evil.tar <dest>` on busybox, then `run`.
    fn through_add(&self, archive: &[u8], dest: &str, run: &str) -> Output {
        let run = if run.is_empty() { "RUN true\n" } else { run };
        self.build(
            &format!("{BUSYBOX_BASE}ADD evil.tar {dest}\n{run}"),
            &[("evil.tar", archive)],
            &[],
        )
    }

    /// The outcome of one entry point against `expect`, then the canary and the store.
    fn judge(&self, what: &str, o: &Output, expect: &Expect) {
        let out = combined(o);
        match expect {
            Expect::Refused(needles) => {
                assert_eq!(
                    o.status.code(),
                    Some(1),
                    "{what}: should be refused:\n{out}"
                );
                for n in needles {
                    assert!(out.contains(n.as_str()), "{what}: no {n:?} in:\n{out}");
                }
                assert!(!out.contains("panicked"), "{what}: {out}");
            }
            Expect::Builds(marker) => {
                assert!(o.status.success(), "{what}: should build:\n{out}");
                assert!(
                    out.contains(marker.as_str()),
                    "{what}: no {marker:?} in:\n{out}"
                );
            }
            Expect::Either(entry) => {
                if !o.status.success() {
                    assert_eq!(o.status.code(), Some(1), "{what}: {out}");
                    assert!(
                        out.contains(entry.as_str()),
                        "{what}: no {entry:?} in:\n{out}"
                    );
                }
            }
        }
        self.canary_untouched(what);
        let images = self.kiln(&["images"]);
        assert!(
            images.status.success(),
            "{what}: the store does not open: {}",
            combined(&images)
        );
    }

    /// The next build on this root works.
    fn next_build_works(&self) {
        let o = self.build(&format!("{BUSYBOX_BASE}RUN echo next-build-ok\n"), &[], &[]);
        assert!(
            o.status.success() && combined(&o).contains("next-build-ok"),
            "the build after the hostile ones: {}",
            combined(&o)
        );
        self.canary_untouched("the next build");
    }
}

/// One hostile layer (`layer`, on busybox) through the three image entry points
/// expecting `as_layer`, and as a user's archive (`ADD evil.tar /dst/`, the same tar
/// uncompressed or as given) expecting `as_add`; `run_layer`/`run_add` are the RUNs
/// after. Then the next build.
fn case(scene: &Scene, layer: &Layer, as_layer: (&str, Expect), as_add: Option<(&str, Expect)>) {
    for entry in LAYER_ENTRIES {
        let o = scene.through_layers(entry, &[layer], as_layer.0);
        scene.judge(&format!("{entry:?}"), &o, &as_layer.1);
    }
    if let Some((run, expect)) = as_add {
        let o = scene.through_add(&layer.blob, "/dst/", run);
        scene.judge("ADD", &o, &expect);
    }
    scene.next_build_works();
}

/// [`case`] for a tar and the same expectation everywhere (names checked under `/dst`
/// for ADD by the caller's scripts).
fn everywhere(scene: &Scene, tar: Vec<u8>, run_layer: &str, run_add: &str, expect: Expect) {
    case(
        scene,
        &Layer::plain(tar),
        (run_layer, expect.clone()),
        Some((run_add, expect)),
    );
}

// ---------------------------------------------------------------------------------------
// The cases.

#[test]
fn dotdot_names_are_refused() {
    let Some(s) = Scene::new() else { return };
    let name = format!("{CLIMB}{}/pwned", s.canary());
    let tar = Tar::default().file("fine", "x").file(&name, "x").finish();
    let expect = refused(&[&name, "`..`"]);
    everywhere(&s, tar, "", "", expect);
    let name = format!("a/{CLIMB}{}/pwned", s.canary());
    let tar = Tar::default().dir("a/").file(&name, "x").finish();
    everywhere(&s, tar, "", "", refused(&[&name, "`..`"]));
}

#[test]
fn absolute_names_land_inside() {
    let Some(s) = Scene::new() else { return };
    let name = format!("{}/pwned", s.canary());
    let tar = Tar::default().file(&name, "inside").finish();
    case(
        &s,
        &Layer::plain(tar),
        (
            &check(&format!("test \"$(cat {name})\" = inside"), "abs-inside"),
            Expect::Builds("abs-inside".into()),
        ),
        Some((
            &check(
                &format!("test \"$(cat /dst{name})\" = inside"),
                "abs-inside",
            ),
            Expect::Builds("abs-inside".into()),
        )),
    );
}

#[test]
fn writes_through_planted_symlinks_stay_inside() {
    let Some(s) = Scene::new() else { return };
    // An absolute symlink (to a path outside the image, or inside it when read as the
    // image's own path) then a write through it: only "nothing outside" is asserted.
    let tar = Tar::default()
        .symlink("evil", &s.canary())
        .file("evil/pwned", "x")
        .finish();
    everywhere(&s, tar, "", "", Expect::Either("evil/pwned".into()));
    // A relative symlink climbing out.
    let tar = Tar::default()
        .symlink("up", &format!("{CLIMB}{}", s.canary()))
        .file("up/pwned", "x")
        .finish();
    everywhere(&s, tar, "", "", Expect::Either("up/pwned".into()));
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_written_through() {
    let Some(s) = Scene::new() else { return };
    for target in [s.canary(), format!("{CLIMB}{}", s.canary())] {
        let tar = Tar::default()
            .dir("d/")
            .file("d/a", "x")
            .symlink("d", &target)
            .file("d/pwned", "x")
            .finish();
        everywhere(&s, tar, "", "", Expect::Either("d/pwned".into()));
    }
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let Some(s) = Scene::new() else { return };
    let secret = format!("{}/secret", s.canary());
    // Climbing, absolute (a path of the image: not there), and through a symlink.
    let tar = Tar::default()
        .hardlink("h1", &format!("{CLIMB}{secret}"))
        .finish();
    everywhere(&s, tar, "", "", refused(&["\"h1\"", "hard link"]));
    let tar = Tar::default().hardlink("h2", &secret).finish();
    everywhere(&s, tar, "", "", refused(&["\"h2\"", "hard link"]));
    let tar = Tar::default()
        .symlink("evil", &s.canary())
        .hardlink("h3", "evil/secret")
        .finish();
    everywhere(&s, tar, "", "", refused(&["\"h3\"", "hard link"]));
}

#[test]
fn long_names_and_link_names_with_dotdot_are_refused() {
    let Some(s) = Scene::new() else { return };
    let deep = "long-directory-name/".repeat(8);
    let name = format!("{deep}{CLIMB}{CLIMB}{}/pwned", s.canary());
    assert!(name.len() > 100);
    let tar = Tar::default()
        .pax(&[("path", name.as_bytes())])
        .file("pax-short-name", "x")
        .finish();
    everywhere(&s, tar, "", "", refused(&["pwned", "`..`"]));
    let tar = Tar::default()
        .gnu_long(tar::EntryType::GNULongName, &name)
        .file("gnu-short-name", "x")
        .finish();
    everywhere(&s, tar, "", "", refused(&["pwned", "`..`"]));
    // Long hard-link targets climbing out.
    let target = format!("{deep}{CLIMB}{CLIMB}{}/secret", s.canary());
    let tar = Tar::default()
        .file("x", "x")
        .pax(&[("linkpath", target.as_bytes())])
        .hardlink("pax-link", "x")
        .finish();
    everywhere(&s, tar, "", "", refused(&["pax-link", "`..`"]));
    let tar = Tar::default()
        .file("x", "x")
        .gnu_long(tar::EntryType::GNULongLink, &target)
        .hardlink("gnu-link", "x")
        .finish();
    everywhere(&s, tar, "", "", refused(&["gnu-link", "`..`"]));
    // A symlink may say anything: it is made, never followed.
    let tar = Tar::default()
        .gnu_long(tar::EntryType::GNULongLink, &target)
        .symlink("lnk", "x")
        .finish();
    everywhere(
        &s,
        tar,
        &check("test -L /lnk", "long-symlink-made"),
        &check("test -L /dst/lnk", "long-symlink-made"),
        Expect::Builds("long-symlink-made".into()),
    );
}

#[test]
fn device_nodes_are_made_by_root_and_skipped_otherwise() {
    let Some(s) = Scene::new() else { return };
    let tar = Tar::default()
        .device("evilnull", tar::EntryType::Char, 1, 3)
        .device("evilblk", tar::EntryType::Block, 7, 0)
        .raw("evilfifo", tar::EntryType::Fifo, b"", "", 0o644)
        .finish();
    let (made, marker) = if real_root() {
        (
            "test -c {at}/evilnull && test -b {at}/evilblk",
            "devices-made",
        )
    } else {
        (
            "test ! -e {at}/evilnull && test ! -e {at}/evilblk",
            "devices-skipped",
        )
    };
    let script = |at: &str| {
        check(
            &format!("{} && test -p {at}/evilfifo", made.replace("{at}", at)),
            marker,
        )
    };
    everywhere(
        &s,
        tar,
        &script(""),
        &script("/dst"),
        Expect::Builds(marker.into()),
    );
}

#[test]
fn whiteouts_delete_in_layers_and_are_plain_files_in_add() {
    let Some(s) = Scene::new() else { return };
    let tar = Tar::default()
        .file("etc/.wh..wh..opq", "")
        .file("etc/new", "n")
        .file("bin/.wh.ls", "")
        .finish();
    let layer = Layer::plain(tar.clone());
    // In a layer: /etc is opaque (only `new` left, and what RUN mounts there), /bin/ls
    // is gone.
    let layer_run = check(
        "test -f /etc/new && test ! -e /etc/passwd && test ! -e /bin/ls && test -x /bin/sh",
        "whiteouts-applied",
    );
    case(
        &s,
        &layer,
        (&layer_run, Expect::Builds("whiteouts-applied".into())),
        None,
    );
    // In ADD (to `/`, over the image's own /etc and /bin): plain files, nothing
    // deleted (BuildKit's ADD does not read whiteouts), in this build and in a build
    // FROM the result on this root. (Applied anew from a saved archive, the ADD's layer
    // does delete: its `.wh.` files read as whiteouts there — a known gap, not asserted.)
    let kept = "test -f /etc/passwd && test -e /bin/ls && test -f /etc/.wh..wh..opq \
                && test -f /bin/.wh.ls && test \"$(cat /etc/new)\" = n";
    let o = s.build(
        &format!(
            "{BUSYBOX_BASE}ADD evil.tar /\n{}",
            check(kept, "add-kept-all")
        ),
        &[("evil.tar", &tar)],
        &["-t", "wh-added:1"],
    );
    s.judge("ADD", &o, &Expect::Builds("add-kept-all".into()));
    let o = s.build(
        &format!("FROM wh-added:1\n{}", check(kept, "image-kept-all")),
        &[],
        &[],
    );
    s.judge(
        "FROM the ADD's image",
        &o,
        &Expect::Builds("image-kept-all".into()),
    );
    s.next_build_works();
}

#[test]
fn setuid_setgid_and_sticky_bits_are_kept() {
    let Some(s) = Scene::new() else { return };
    let tar = Tar::default()
        .mode("suid", tar::EntryType::Regular, 0o4755)
        .mode("sgid", tar::EntryType::Regular, 0o2755)
        .mode("sticky/", tar::EntryType::Directory, 0o1777)
        .finish();
    let script = |at: &str| {
        check(
            &format!(
                "test \"$(stat -c %a {at}/suid {at}/sgid {at}/sticky | tr '\\n' ' ')\" = '4755 2755 1777 '"
            ),
            "modes-kept",
        )
    };
    everywhere(
        &s,
        tar,
        &script(""),
        &script("/dst"),
        Expect::Builds("modes-kept".into()),
    );
}

#[test]
fn huge_declared_sizes_and_pax_size_overflows_are_refused() {
    let Some(s) = Scene::new() else { return };
    // 8 GiB declared, one block present.
    let mut t = Tar::default();
    t.header(b"big", tar::EntryType::Regular, 8 << 30, b"", 0o644);
    t.data(&[7u8; 512]);
    everywhere(&s, t.finish(), "", "", refused(&["reading the layer"]));
    let tar = Tar::default()
        .pax(&[("size", b"99999999999999999999999999999")])
        .file("overflow", "short")
        .finish();
    everywhere(&s, tar, "", "", refused(&["\"overflow\"", "PAX size"]));
    let tar = Tar::default()
        .pax(&[("size", b"1024")])
        .file("disagrees", "short")
        .finish();
    everywhere(&s, tar, "", "", refused(&["\"disagrees\"", "PAX size"]));
}

#[test]
fn truncated_archives_are_refused() {
    let Some(s) = Scene::new() else { return };
    let full = Tar::default()
        .file("a", &"x".repeat(3000))
        .file("b", "y")
        .finish();
    for cut in [1500, 3600] {
        everywhere(&s, full[..cut].to_vec(), "", "", refused(&["layer"]));
    }
    let gz = gzip(&full);
    let layer = Layer {
        blob: gz[..gz.len() / 2].to_vec(),
        media: "application/vnd.oci.image.layer.v1.tar+gzip",
        diff_id: format!("sha256:{}", sha256_hex(&full)),
    };
    case(
        &s,
        &layer,
        ("", refused(&["layer"])),
        Some(("", refused(&["layer"]))),
    );
}

/// Runs `kiln` with `args`, sampling the peak resident memory (VmHWM) of it and every
/// process below it; the output and the largest peak seen, in KiB.
fn kiln_measured(root: &Path, args: &[&str]) -> (Output, u64) {
    let mut child = Command::new(kiln_bin())
        .args(args)
        .env("KILN_ROOT", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kiln");
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .iter_mut()
        .map(|p| {
            let mut p = p.take().expect("piped");
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = p.read_to_end(&mut v);
                v
            })
        })
        .collect();
    let mut peak = 0;
    let status = loop {
        let mut tree = vec![child.id()];
        if let Ok(dir) = fs::read_dir("/proc") {
            let mut parents = Vec::new();
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(ppid) = ppid {
                    parents.push((pid, ppid));
                }
            }
            let mut grew = true;
            while grew {
                grew = false;
                for (pid, ppid) in &parents {
                    if tree.contains(ppid) && !tree.contains(pid) {
                        tree.push(*pid);
                        grew = true;
                    }
                }
            }
        }
        for pid in &tree {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().expect("waiting for kiln") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut outs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let stdout = outs.next().unwrap_or_default();
    let stderr = outs.next().unwrap_or_default();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        peak,
    )
}

/// The most memory a kiln process may hold while unpacking a bomb.
const PEAK_KIB: u64 = 200 * 1024;

#[test]
fn compression_bombs_stream_in_bounded_memory() {
    let Some(s) = Scene::new() else { return };
    const SIZE: u64 = 64 << 20;
    let layout = s.tmp.path().join("layout");
    for zstd in [false, true] {
        let (blob, diff_id) = bomb("zeros", tar::EntryType::Regular, SIZE, zstd);
        assert!(blob.len() < 2 << 20, "a bomb: {} bytes", blob.len());
        let layer = Layer {
            blob,
            media: if zstd {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            } else {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            },
            diff_id,
        };
        let _ = fs::remove_dir_all(&layout);
        write_layout(&layout, &[&s.base, &layer], "bomb");
        let ctx = s.context(
            &format!(
                "FROM base\n{}",
                check(
                    &format!("test \"$(stat -c %s /zeros)\" = {SIZE} && test -f /after-the-bomb"),
                    "bomb-unpacked"
                )
            ),
            &[],
        );
        let arg = format!("base=oci-layout://{}", layout.display());
        let (o, peak) = kiln_measured(
            &s.root,
            &[
                "build",
                "--no-cache",
                "--build-context",
                &arg,
                ctx.path().to_str().unwrap(),
            ],
        );
        s.judge(
            &format!("zstd={zstd}"),
            &o,
            &Expect::Builds("bomb-unpacked".into()),
        );
        assert!(peak < PEAK_KIB, "zstd={zstd}: kiln peaked at {peak} KiB");
        // The same archive in ADD.
        let (o, peak) = {
            let ctx = s.context(
                &format!(
                    "{BUSYBOX_BASE}ADD evil.tar /dst/\n{}",
                    check(
                        &format!("test \"$(stat -c %s /dst/zeros)\" = {SIZE}"),
                        "add-bomb"
                    )
                ),
                &[("evil.tar", &layer.blob)],
            );
            kiln_measured(
                &s.root,
                &["build", "--no-cache", ctx.path().to_str().unwrap()],
            )
        };
        s.judge(
            &format!("ADD zstd={zstd}"),
            &o,
            &Expect::Builds("add-bomb".into()),
        );
        assert!(
            peak < PEAK_KIB,
            "ADD zstd={zstd}: kiln peaked at {peak} KiB"
        );
    }
    // A PAX header declaring (and holding) 1 GiB: refused before it is read.
    let (blob, diff_id) = bomb("././@PaxHeader", tar::EntryType::XHeader, 1 << 30, false);
    let layer = Layer {
        blob,
        media: "application/vnd.oci.image.layer.v1.tar+gzip",
        diff_id,
    };
    case(
        &s,
        &layer,
        ("", refused(&["extended", "1073741824"])),
        Some(("", refused(&["extended", "1073741824"]))),
    );
    // A zstd frame asking for a 2 GiB window: the decoder's limit refuses it.
    let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3, 0x01, 0x00, 0x00];
    let layer = Layer {
        blob: frame.to_vec(),
        media: "application/vnd.oci.image.layer.v1.tar+zstd",
        diff_id: format!("sha256:{}", sha256_hex(b"")),
    };
    case(&s, &layer, ("", refused(&["layer"])), None);
    s.next_build_works();
}

// ---------------------------------------------------------------------------------------
// Hostile archives for `kiln load` itself (not their layers).

/// Asserts that `kiln load` refuses `archive` naming `needle`, and that the store holds
/// no image and no blob afterwards.
fn load_refused(s: &Scene, archive: &[u8], needle: &str) {
    let path = s.tmp.path().join("archive.tar");
    fs::write(&path, archive).unwrap();
    let o = s.kiln(&["load", "-i", path.to_str().unwrap()]);
    let out = combined(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(needle), "no {needle:?} in: {out}");
    s.canary_untouched(needle);
    let images = s.kiln(&["images"]);
    assert!(images.status.success(), "{}", combined(&images));
    assert!(
        !String::from_utf8_lossy(&images.stdout).contains("hostile"),
        "{}",
        combined(&images)
    );
    let blobs = s.root.join("blobs/sha256");
    let left: Vec<_> = fs::read_dir(&blobs)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "blobs stored by a refused load: {left:?}");
}

#[test]
fn load_refuses_archives_whose_entries_leave_the_directory() {
    let Some(s) = Scene::new() else { return };
    let good = docker_archive(&[&s.base], "hostile-docker:1");
    let good_tar = &good[..good.len() - 1024];
    let climb = format!("{CLIMB}{}/pwned", s.canary());
    let abs = format!("{}/pwned", s.canary());
    let long = format!("{}{CLIMB}{CLIMB}{}/pwned", "d/".repeat(60), s.canary());
    let with = |extra: Tar| {
        let mut v = good_tar.to_vec();
        v.extend(extra.finish());
        v
    };
    for (archive, needle) in [
        (with(Tar::default().file(&climb, "x")), climb.as_str()),
        (with(Tar::default().file(&abs, "x")), abs.as_str()),
        (
            with(
                Tar::default()
                    .gnu_long(tar::EntryType::GNULongName, &long)
                    .file("s", "x"),
            ),
            "pwned",
        ),
        (
            with(
                Tar::default()
                    .pax(&[("path", long.as_bytes())])
                    .file("s", "x"),
            ),
            "pwned",
        ),
    ] {
        load_refused(&s, &archive, needle);
        assert!(combined(&s.kiln(&[
            "load",
            "-i",
            s.tmp.path().join("archive.tar").to_str().unwrap()
        ]))
        .contains("outside the archive's directory"),);
    }
    // The same in an OCI archive.
    let layout = s.tmp.path().join("layout");
    write_layout(&layout, &[&s.base], "hostile-oci");
    let oci = tar_of(&layout);
    let mut v = oci[..oci.len() - 1024].to_vec();
    v.extend(Tar::default().file(&climb, "x").finish());
    load_refused(&s, &v, &climb);
    // A docker manifest naming a layer outside the archive.
    let mut b = tar::Builder::new(Vec::new());
    let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["hostile:1"], "Layers": [format!("{CLIMB}{}/secret", s.canary())]}]);
    for (name, bytes) in [
        ("c.json", config(&[&s.base])),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    load_refused(&s, &b.into_inner().unwrap(), "leaves the archive");
    // An OCI archive whose layer is not what its digest says.
    let _ = fs::remove_dir_all(&layout);
    write_layout(&layout, &[&s.base], "hostile-oci");
    fs::write(
        layout
            .join("blobs/sha256")
            .join(s.base.diff_id.trim_start_matches("sha256:")),
        b"tampered",
    )
    .unwrap();
    load_refused(&s, &tar_of(&layout), "does not match its digest");
    s.next_build_works();
}

/// A layout given as a context whose layer is not what its digest says: the build is
/// refused at the FROM, and the store keeps nothing of that blob.
#[test]
fn an_oci_layout_context_with_a_tampered_blob_is_refused() {
    let Some(s) = Scene::new() else { return };
    let elsewhere = tempfile::tempdir().unwrap();
    let layout = elsewhere.path().join("tampered-layout");
    write_layout(&layout, &[&s.base], "tampered");
    let blob = layout
        .join("blobs/sha256")
        .join(s.base.diff_id.trim_start_matches("sha256:"));
    assert!(blob.is_file(), "the layer blob is named by its digest");
    fs::write(&blob, b"tampered").unwrap();
    let arg = format!("base=oci-layout://{}", layout.display());
    let o = s.build("FROM base\nRUN true\n", &[], &["--build-context", &arg]);
    let out = combined(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("does not match its digest"), "{out}");
    assert!(out.contains(":1:1"), "{out}");
    assert!(
        !s.root
            .join("blobs/sha256")
            .join(s.base.diff_id.trim_start_matches("sha256:"))
            .exists(),
        "the tampered blob was stored"
    );
    s.next_build_works();
}
