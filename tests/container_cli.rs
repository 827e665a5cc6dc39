//! kiln inside a real container that is not privileged, as in a CI runner or a
//! Kubernetes pod: `podman run` with no `--privileged`, no `--cap-add` and the default
//! seccomp profile, mask of `/proc` and capability set. The image is made here, offline:
//! Debian's static busybox plus the shared libraries the `kiln` binary links, imported
//! with `podman import`. The `kiln` binary and the build context are bind-mounted
//! read-only, the output directory read-write; kiln's root (`KILN_ROOT=/var/kiln`) is
//! on the container's own root, an overlay (podman's overlay storage driver; the test
//! checks it), where kernel overlayfs cannot take its upper directory.
//!
//! - With `--device /dev/fuse`, `--snapshotter auto` (the default) says the kernel
//!   overlay is unavailable and picks kiln's FUSE overlay; `kiln doctor` inside agrees.
//! - Without `/dev/fuse`, it says both overlays are unavailable (naming `/dev/fuse`) and
//!   falls back to plain copies.
//!
//! - As a restricted Kubernetes pod runs (a user that is not root, every capability
//!   dropped, `no-new-privileges`), with kiln's root on the container's root (FUSE) and
//!   in a tmpfs, as an `emptyDir` (kernel overlayfs works there). Without subordinate
//!   ids podman has only uid 0 in the container; uid 0 with every capability dropped is
//!   refused a user namespace by the kernel (mapping uid 0 needs `CAP_SETFCAP` since
//!   Linux 5.12): kiln's message says so, and root then builds keeping the defaults.
//!
//! Every build (a RUN writes a file, a second stage copies it `--from` the first,
//! exported as an OCI layout) gives the manifest digest a host build of the same
//! Dockerfile gives, with the same `SOURCE_DATE_EPOCH`.
//!
//! Who runs podman: root (rootful podman: container root is uid 0 of the initial user
//! namespace without `CAP_SYS_ADMIN`, so kiln builds in a user namespace of its own, as
//! an unprivileged user does); `kiln-ci` (rootless podman with its subordinate ids); and
//! `kiln-ci-single`, without subordinate ids, whose rootless podman maps one id
//! (`--storage-opt ignore_chown_errors=true`: the image's files are all owned by root,
//! which is that one id). Inside, kiln has no subordinate ids either: it builds with the
//! single mapping, and says so.
//!
//! Security options needed: none. Podman's default seccomp profile lets a process make
//! a user namespace, and kiln's RUN steps run under the default `/proc` mask; kiln
//! needs no capability at all as a user other than root, and `CAP_SETFCAP` (a default)
//! as root. That is what a Kubernetes pod gets without privilege where the runtime's
//! `RuntimeDefault` seccomp profile is this one (CRI-O uses the same containers/common
//! profile). Not tested here: Docker's and containerd's default profiles allow
//! `unshare(CLONE_NEWUSER)` only with `CAP_SYS_ADMIN`, so there a pod needs a
//! `Localhost` profile allowing it (or `Unconfined`), and Docker's AppArmor profile
//! denies mounts. The podman runs also stand in for the pod's runtime only: options
//! the test passes for this host, not for kiln, are `--network none` (no slirp4netns;
//! the build needs no network), `--ulimit` (this host refuses podman's default
//! rlimits: runc fails "error setting rlimit type 7"), and for rootless podman
//! `--cgroup-manager=cgroupfs` and `--events-backend=file` (cgroups v1, no systemd
//! user session) with `XDG_RUNTIME_DIR` in a temporary directory; every
//! podman call has its own `--root`, `--runroot` and `--tmpdir` there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_tests::containers::Containers;
use kiln_tests::{combined, have, kiln_bin, real_root, skipped, BUSYBOX_BASE};

const EPOCH: &str = "1700000000";

const DOCKERFILE_TAIL: &str = "FROM base AS build\nRUN echo built-in-run > /made.txt\n\
                               FROM base\nCOPY --from=build /made.txt /made.txt\n";

/// The shared libraries `bin` links (absolute paths, as `ldd` prints them).
fn linked_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A tar of the container's root: busybox, kiln's libraries, /etc/passwd, every file
/// owned by root.
fn image_tar(dir: &Path) -> PathBuf {
    let root = dir.join("image-root");
    for d in [
        "bin",
        "etc",
        "tmp",
        "var",
        "proc",
        "sys",
        "dev",
        "usr/local/bin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    for lib in linked_libraries(&kiln_bin()) {
        let to = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &to).unwrap_or_else(|e| panic!("copying {}: {e}", lib.display()));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let tar = dir.join("image.tar");
    let out = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", combined(&out));
    tar
}

/// The manifest digest of the OCI layout at `layout` (its index's only manifest).
fn manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    manifests[0]["digest"].as_str().expect("digest").to_string()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// `/made.txt` in the top layer of the image at `layout`.
fn made_txt(layout: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(layout, &manifest_digest(layout))).unwrap();
    let top = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .expect("a layer");
    let bytes = blob(layout, top["digest"].as_str().unwrap());
    let media = top["mediaType"].as_str().unwrap_or_default();
    let tar: Box<dyn std::io::Read> = if media.ends_with("+zstd") {
        Box::new(zstd::Decoder::new(&bytes[..]).unwrap())
    } else if media.ends_with("+gzip") {
        Box::new(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        Box::new(&bytes[..])
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            == "made.txt"
        {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            return s;
        }
    }
    panic!("no made.txt in the top layer of {}", layout.display());
}

/// `podman run` of the image with kiln, the context and `out` mounted; `extra` before
/// the image, `cmd` the shell command run in it.
fn in_container(
    podman: &Containers,
    ctx: &Path,
    out: &Path,
    kiln_root: &str,
    extra: &[&str],
    cmd: &str,
) -> (Output, f64) {
    let kiln = format!("{}:/usr/local/bin/kiln:ro", kiln_bin().display());
    let ctx = format!("{}:/ctx:ro", ctx.display());
    let out = format!("{}:/out", out.display());
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=8192:8192",
        "-v",
        &kiln,
        "-v",
        &ctx,
        "-v",
        &out,
        "-e",
    ];
    let root = format!("KILN_ROOT={kiln_root}");
    args.push(&root);
    let epoch = format!("SOURCE_DATE_EPOCH={EPOCH}");
    args.extend_from_slice(&["-e", &epoch]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["localhost/kiln-in-container:1", "/bin/sh", "-c", cmd]);
    let start = std::time::Instant::now();
    let o = podman.podman().args(&args).output().expect("podman run");
    (o, start.elapsed().as_secs_f64())
}

const BUILD_INSIDE: &str = "set -e; \
    grep -q '^overlay / overlay ' /proc/mounts || { echo 'the container root is not an overlay'; cat /proc/mounts; exit 1; }; \
    kiln build --progress plain -o type=oci,dest=/out/img --metadata-file /out/meta.json /ctx";

#[test]
fn builds_inside_an_unprivileged_container_on_fuse_then_copies() {
    if !have("podman") {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        skipped("/dev/fuse missing");
        assert!(
            std::env::var_os("CI").is_none(),
            "/dev/fuse missing under CI"
        );
        return;
    }
    let Some(ctx) = kiln_tests::busybox_context() else {
        return;
    };
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "{}{DOCKERFILE_TAIL}",
            BUSYBOX_BASE.replace("FROM scratch", "FROM scratch AS base")
        ),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();

    // The host's build, the reference.
    let host_layout = work.path().join("host-img");
    let host = Command::new(kiln_bin())
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=oci,dest={}", host_layout.display()))
        .arg(ctx.path())
        .env("KILN_ROOT", work.path().join("host-root"))
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .unwrap();
    assert!(host.status.success(), "host build: {}", combined(&host));
    let want = manifest_digest(&host_layout);
    assert_eq!(made_txt(&host_layout), "built-in-run\n");

    let Some(podman) = Containers::new() else {
        return;
    };
    let tar = image_tar(work.path());
    podman.run(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        tar.to_str().unwrap(),
        "localhost/kiln-in-container:1",
    ]);
    let who = if real_root() {
        "root (rootful podman)"
    } else if podman.single {
        "a user without subordinate ids (rootless podman, one id)"
    } else {
        "a user with subordinate ids (rootless podman)"
    };

    // With /dev/fuse: the FUSE overlay, since kernel overlayfs cannot stack on the root.
    let out_fuse = work.path().join("out-fuse");
    std::fs::create_dir_all(&out_fuse).unwrap();
    let doctor_then_build = format!("kiln doctor || true; {BUILD_INSIDE}");
    let (o, secs) = in_container(
        &podman,
        ctx.path(),
        &out_fuse,
        "/var/kiln",
        &["--device", "/dev/fuse"],
        &doctor_then_build,
    );
    let text = combined(&o);
    assert!(o.status.success(), "build with /dev/fuse as {who}: {text}");
    eprintln!("container build with /dev/fuse as {who}: {secs:.1}s");
    assert!(
        text.contains("snapshotter: fuse (auto: kernel overlayfs unavailable (")
            && text.contains("using kiln's FUSE overlay)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("snapshotter auto") && l.contains("picks fuse")),
        "kiln doctor disagrees with the build: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok ") && l.contains("user namespaces")),
        "kiln doctor finds no user namespace: {text}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_fuse.join("meta.json")).unwrap()).unwrap();
    assert_eq!(
        meta["containerimage.digest"].as_str(),
        Some(want.as_str()),
        "{meta}"
    );
    assert_eq!(manifest_digest(&out_fuse.join("img")), want);
    assert_eq!(made_txt(&out_fuse.join("img")), "built-in-run\n");

    // Without /dev/fuse: plain copies, and the reason names what is missing.
    let out_copy = work.path().join("out-copy");
    std::fs::create_dir_all(&out_copy).unwrap();
    let (o, secs) = in_container(
        &podman,
        ctx.path(),
        &out_copy,
        "/var/kiln",
        &[],
        BUILD_INSIDE,
    );
    let text = combined(&o);
    assert!(
        o.status.success(),
        "build without /dev/fuse as {who}: {text}"
    );
    eprintln!("container build without /dev/fuse as {who}: {secs:.1}s");
    assert!(
        text.contains("snapshotter: copy (auto: kernel overlayfs unavailable (")
            && text.contains("kiln's FUSE overlay unavailable (")
            && text.contains("/dev/fuse")
            && text.contains("using plain copies)"),
        "{text}"
    );
    assert_eq!(manifest_digest(&out_copy.join("img")), want);
    assert_eq!(made_txt(&out_copy.join("img")), "built-in-run\n");

    // A restricted pod's conditions: a user that is not root (uid 1000; rootless, the
    // caller's own uid, `--userns=keep-id`), every capability dropped, no_new_privs;
    // kiln's root on the container's root again, and in a tmpfs (an emptyDir), where
    // kernel overlayfs takes its upper directory. With one id mapped (no subordinate
    // ids) only root exists in the container: root with every capability dropped is
    // refused a user namespace by the kernel (mapping uid 0 needs CAP_SETFCAP since
    // Linux 5.12), which kiln says; that root then builds with the default capabilities.
    let mut pod = vec![
        "--security-opt",
        "no-new-privileges",
        "--device",
        "/dev/fuse",
        "--mount",
        "type=tmpfs,destination=/kiln,tmpfs-mode=1777",
    ];
    let mut expect_caps = "0000000000000000";
    if podman.single {
        let out_refused = work.path().join("out-refused");
        std::fs::create_dir_all(&out_refused).unwrap();
        let mut refused = pod.clone();
        refused.push("--cap-drop=all");
        let (o, _) = in_container(
            &podman,
            ctx.path(),
            &out_refused,
            "/tmp/kiln",
            &refused,
            BUILD_INSIDE,
        );
        let text = combined(&o);
        assert!(!o.status.success(), "{text}");
        assert!(
            text.contains("uid 0 without CAP_SETFCAP cannot map itself into a user namespace"),
            "{text}"
        );
        // Podman's default set, as the container's root has it in its user namespace.
        expect_caps = "00000000800405fb";
    } else {
        pod.push(if podman.rootless {
            "--userns=keep-id"
        } else {
            "--user=1000:1000"
        });
        pod.push("--cap-drop=all");
    }
    for (kiln_root, picks) in [
        (
            "/tmp/kiln",
            "snapshotter: fuse (auto: kernel overlayfs unavailable (",
        ),
        (
            "/kiln",
            "snapshotter: overlay (auto: kernel overlayfs works here)",
        ),
    ] {
        let out_pod = work
            .path()
            .join(format!("out-pod{}", kiln_root.replace('/', "-")));
        std::fs::create_dir_all(&out_pod).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out_pod, std::fs::Permissions::from_mode(0o777)).unwrap();
        let check_caps = format!(
            "grep -q '^CapEff:\t{expect_caps}$' /proc/self/status || {{ grep Cap /proc/self/status; exit 1; }}; {BUILD_INSIDE}"
        );
        let (o, secs) = in_container(&podman, ctx.path(), &out_pod, kiln_root, &pod, &check_caps);
        let text = combined(&o);
        let what = format!("a pod ({pod:?}, KILN_ROOT={kiln_root}) as {who}");
        assert!(o.status.success(), "build as {what}: {text}");
        eprintln!("container build as {what}: {secs:.1}s");
        assert!(text.contains(picks), "{text}");
        assert_eq!(manifest_digest(&out_pod.join("img")), want);
        assert_eq!(made_txt(&out_pod.join("img")), "built-in-run\n");
    }
}
