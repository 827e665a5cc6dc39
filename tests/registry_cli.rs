//! Registries end to end, against a real `docker-registry` on loopback started by each
//! test: `--push`, `kiln push/pull`, `FROM` a registry image into an empty root (by tag
//! and by digest), `docker-image://` contexts, `--pull`, `-o type=image|registry`, Docker
//! v2 schema 2 manifests and gzip, zstd and uncompressed layers written by skopeo, an
//! index choosing the platform's manifest, a tampered blob, a connection cut mid-blob,
//! and basic auth with credentials from `kiln login` and podman's auth file. Runs as
//! root and (scripts/test.sh) as `kiln-ci` and `kiln-ci-single`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kiln_tests::registry::TestRegistry;
use kiln_tests::{busybox_context, combined, have, kiln_bin, BUSYBOX_BASE};

/// `kiln ARGS` with `root` as KILN_ROOT and `home` as HOME (credentials live there).
fn kiln_in(root: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(kiln_bin());
    cmd.args(args)
        .env("KILN_ROOT", root)
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running kiln");
    if let Some(mut i) = child.stdin.take() {
        if let Some(s) = stdin {
            i.write_all(s.as_bytes()).expect("stdin");
        }
    }
    child.wait_with_output().expect("waiting for kiln")
}

/// A test's world: a registry, a busybox context, a home, and roots made on demand.
struct World {
    reg: TestRegistry,
    ctx: tempfile::TempDir,
    home: tempfile::TempDir,
    roots: tempfile::TempDir,
}

impl World {
    fn new(auth: Option<(&str, &str)>) -> Option<World> {
        let reg = TestRegistry::start(auth)?;
        Some(World {
            reg,
            ctx: busybox_context()?,
            home: tempfile::tempdir().expect("home"),
            roots: tempfile::tempdir().expect("roots"),
        })
    }

    fn root(&self, name: &str) -> std::path::PathBuf {
        self.roots.path().join(name)
    }

    fn name(&self, repo: &str) -> String {
        format!("{}/{repo}", self.reg.host)
    }

    fn kiln(&self, root: &str, args: &[&str]) -> Output {
        kiln_in(&self.root(root), self.home.path(), args, None)
    }

    /// Builds `dockerfile` in the busybox context into root `root`.
    fn build(&self, root: &str, dockerfile: &str, args: &[&str]) -> Output {
        let file = self.ctx.path().join(format!(
            "Dockerfile.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        std::fs::write(&file, dockerfile).expect("Dockerfile");
        let file = file.to_string_lossy().into_owned();
        let ctx = self.ctx.path().to_string_lossy().into_owned();
        let mut all = vec!["build", "--progress", "plain", "-f", &file];
        all.extend_from_slice(args);
        all.push(&ctx);
        self.kiln(root, &all)
    }

    /// An image `repo` pushed by a build whose /hello says `hello`; its manifest digest.
    fn push_hello(&self, repo: &str, hello: &str, extra: &[&str]) -> String {
        let name = self.name(repo);
        let meta = self
            .roots
            .path()
            .join(format!("{}.json", repo.replace('/', "_")));
        let meta_s = meta.to_string_lossy().into_owned();
        let mut args = vec!["-t", &name, "--push", "--metadata-file", &meta_s];
        args.extend_from_slice(extra);
        let out = self.build(
            "pusher",
            &format!("{BUSYBOX_BASE}RUN echo {hello} > /hello\nCMD [\"cat\", \"/hello\"]\n"),
            &args,
        );
        assert!(out.status.success(), "{}", combined(&out));
        let pushed = combined(&out)
            .lines()
            .any(|l| l.starts_with(&format!("pushed {name}")) && l.contains("@sha256:"));
        assert!(pushed, "{}", combined(&out));
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("json");
        meta["containerimage.digest"]
            .as_str()
            .expect("digest")
            .to_string()
    }

    /// skopeo, with a credentials file of its own (unprivileged, it would otherwise look
    /// in /run/containers/UID, which it may not read).
    fn skopeo(&self) -> Command {
        let auth = self.home.path().join("skopeo-auth.json");
        if !auth.exists() {
            std::fs::write(&auth, "{}").expect("skopeo auth file");
        }
        let mut c = Command::new("skopeo");
        c.env("HOME", self.home.path())
            .env("REGISTRY_AUTH_FILE", auth);
        c
    }

    /// The registry's raw manifest of `reference`, as skopeo fetches it.
    fn raw_manifest(&self, reference: &str) -> Option<serde_json::Value> {
        let out = self
            .skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo");
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("manifest json"))
    }
}

fn sha256(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(bytes)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", text.split_whitespace().next().unwrap_or(""))
}

/// The blob files of a kiln root (digest names and unfinished writes alike).
fn blob_names(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root.join("blobs/sha256")) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn push_then_build_from_the_registry_in_an_empty_root() {
    let Some(w) = World::new(None) else { return };
    if !have("skopeo") {
        return;
    }
    let digest = w.push_hello("kiln/app", "registry-hello", &[]);
    // What the registry holds is what kiln says it pushed, byte for byte.
    let name = w.name("kiln/app");
    let raw = |reference: &str| {
        w.skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .expect("skopeo")
    };
    assert_eq!(sha256(&raw(&format!("{name}:latest")).stdout), digest);

    // An empty root builds FROM it: the image is pulled, then RUN sees its files.
    let out = w.build(
        "fresh",
        &format!("FROM {name}\nRUN cat /hello\n"),
        &["--no-cache"],
    );
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("pulled {name}")), "{text}");
    assert!(text.contains("registry-hello"), "{text}");
    // The pulled image is in the store under its name, and runs.
    let ran = w.kiln("fresh", &["run", &name]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "registry-hello",
        "{}",
        combined(&ran)
    );
    // Stored by digest once: a second build pulls nothing.
    let again = w.build(
        "fresh",
        &format!("FROM {name}\nRUN cat /hello\n"),
        &["--no-cache"],
    );
    assert!(!combined(&again).contains("pulled"), "{}", combined(&again));

    // By digest, in another empty root.
    let by_digest = format!("{name}@{digest}");
    let out = w.build(
        "by-digest",
        &format!("FROM {by_digest}\nRUN cat /hello\n"),
        &[],
    );
    assert!(out.status.success(), "{}", combined(&out));
    assert!(combined(&out).contains("registry-hello"));
    // A digest the registry does not have is an error naming the reference.
    let bad = format!("{name}@sha256:{}", "0".repeat(64));
    let out = w.build("by-digest", &format!("FROM {bad}\n"), &[]);
    assert!(!out.status.success());
    assert!(combined(&out).contains(&name), "{}", combined(&out));

    // kiln push copies it on; blobs the registry has are skipped.
    let copy = w.name("kiln/copy:2");
    let digestfile = w.roots.path().join("pushed-digest");
    let df = digestfile.to_string_lossy().into_owned();
    let out = w.kiln("pusher", &["push", "--digestfile", &df, &name, &copy]);
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    // The store's tag says kiln/app holds these blobs: mounted, not uploaded again.
    let mounted = text
        .lines()
        .filter(|l| l.ends_with(": mounted from another repository"))
        .count();
    assert_eq!(mounted, 3, "{text}");
    assert_eq!(std::fs::read_to_string(&digestfile).unwrap(), digest);
    let out = w.kiln("pusher", &["push", &name, &copy]);
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 blobs uploaded, 3 already there"), "{text}");
    assert_eq!(sha256(&raw(&copy).stdout), digest);
}

#[test]
fn docker_v2s2_gzip_and_uncompressed_images_from_skopeo_are_pulled() {
    let Some(w) = World::new(None) else { return };
    if !have("skopeo") {
        return;
    }
    let tls = ["--src-tls-verify=false", "--dest-tls-verify=false"];
    for (repo, compression) in [("kiln/gz", "gzip"), ("kiln/plain", "uncompressed")] {
        w.push_hello(repo, repo, &["--compression", compression]);
        let src = format!("docker://{}", w.name(repo));
        let dst = format!("docker://{}", w.name(&format!("{repo}-v2s2")));
        let out = w
            .skopeo()
            .args(["copy", "--format", "v2s2"])
            .args(tls)
            .args([&src, &dst])
            .output()
            .expect("skopeo copy");
        assert!(out.status.success(), "{}", combined(&out));
        let m = w
            .raw_manifest(&w.name(&format!("{repo}-v2s2")))
            .expect("v2s2");
        assert_eq!(
            m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
            "{m}"
        );
        let v2s2 = w.name(&format!("{repo}-v2s2"));
        let out = w.build(
            &format!("{}-root", repo.replace('/', "-")),
            &format!("FROM {v2s2}\nRUN cat /hello\n"),
            &[],
        );
        assert!(out.status.success(), "{}", combined(&out));
        assert!(combined(&out).contains(repo), "{}", combined(&out));
    }
}

#[test]
fn an_index_gives_this_platforms_manifest() {
    let Some(w) = World::new(None) else { return };
    if !have("skopeo") {
        return;
    }
    // An OCI layout with an index of two platforms, made from one built image.
    let layout = w.roots.path().join("layout");
    let dest = format!("type=oci,dest={}", layout.display());
    let out = w.build(
        "maker",
        &format!("{BUSYBOX_BASE}RUN echo amd > /hello\n"),
        &["-o", &dest],
    );
    assert!(out.status.success(), "{}", combined(&out));
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blob(&d), bytes).expect("blob");
        d
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let host_desc = index["manifests"][0].clone();
    let host_digest = host_desc["digest"].as_str().unwrap().to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&host_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&config_digest)).unwrap()).unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_string();
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    config["architecture"] = other_arch.into();
    let other_config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put(&other_config).into();
    manifest["config"]["size"] = other_config.len().into();
    let other_manifest = serde_json::to_vec(&manifest).unwrap();
    let other_digest = put(&other_manifest);
    let entry = |digest: &str, size: usize, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch}
        })
    };
    let host_size = std::fs::read(blob(&host_digest)).unwrap().len();
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&other_digest, other_manifest.len(), other_arch), entry(&host_digest, host_size, &host_arch)]
    }))
    .unwrap();
    let nested_digest = put(&nested);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": nested_digest, "size": nested.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"}
            }]
        }))
        .unwrap(),
    )
    .unwrap();
    let multi = w.name("kiln/multi:1");
    let out = w
        .skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.display()))
        .arg(format!("docker://{multi}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", combined(&out));

    let short = |d: &str| d.trim_start_matches("sha256:")[..12].to_string();
    let out = w.kiln("puller", &["pull", &multi]);
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&short(&host_digest)), "{text}");
    let out = w.kiln(
        "puller-other",
        &["pull", "--platform", &format!("linux/{other_arch}"), &multi],
    );
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&short(&other_digest)), "{text}");
    let out = w.kiln(
        "puller-none",
        &["pull", "--platform", "linux/s390x", &multi],
    );
    let text = combined(&out);
    assert!(!out.status.success());
    assert!(text.contains("no manifest for linux/s390x"), "{text}");
    assert!(text.contains(&format!("linux/{other_arch}")), "{text}");

    // --platform: stages without RUN build for another platform, from its manifest.
    let other = format!("linux/{other_arch}");
    let arch_of = |root: &str, meta: &Path| {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(meta).expect("metadata")).unwrap();
        let cfg = m["containerimage.config.digest"]
            .as_str()
            .unwrap()
            .to_string();
        let blob = w
            .root(root)
            .join("blobs/sha256")
            .join(cfg.trim_start_matches("sha256:"));
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
        c["architecture"].as_str().unwrap().to_string()
    };
    let meta = w.roots.path().join("platform.json");
    let meta_s = meta.to_string_lossy().into_owned();
    let out = w.build(
        "platforms",
        &format!("FROM {multi}\nLABEL for=other\n"),
        &["--platform", &other, "--metadata-file", &meta_s],
    );
    assert!(out.status.success(), "{}", combined(&out));
    assert_eq!(arch_of("platforms", &meta), other_arch);
    let out = w.build(
        "platforms",
        &format!("{BUSYBOX_BASE}LABEL from=scratch\n"),
        &["--platform", &other, "--metadata-file", &meta_s],
    );
    assert!(out.status.success(), "{}", combined(&out));
    assert_eq!(arch_of("platforms", &meta), other_arch);
    // A RUN for it would need emulation: refused at its line, before anything runs.
    let out = w.build(
        "platforms",
        &format!("FROM --platform={other} {multi}\nRUN true\n"),
        &[],
    );
    let text = combined(&out);
    assert!(!out.status.success());
    assert!(
        text.contains(":2:1") && text.contains("needs emulation"),
        "{text}"
    );
    // $BUILDPLATFORM is this machine's; the store's copy for the other platform is not
    // taken for it: this platform's manifest is fetched.
    let out = w.build(
        "platforms",
        &format!("FROM --platform=$BUILDPLATFORM {multi}\nRUN cat /hello\n"),
        &["--metadata-file", &meta_s],
    );
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("amd"), "{text}");
    assert_eq!(arch_of("platforms", &meta), host_arch);
}

#[test]
fn a_tampered_blob_is_rejected_and_nothing_is_stored() {
    let Some(w) = World::new(None) else { return };
    let digest = w.push_hello("kiln/tamper", "x", &[]);
    let name = w.name("kiln/tamper");
    // The largest layer (busybox) gets one byte changed in the registry's storage.
    let store = w.root("pusher");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            store
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = w.reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let out = w.kiln("victim", &["pull", &name]);
    let text = combined(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("does not match its digest"), "{text}");
    let names = blob_names(&w.root("victim"));
    let hex = layer.trim_start_matches("sha256:");
    assert!(
        names.iter().all(|n| !n.starts_with(hex)),
        "a bad blob (or its temporary) was kept: {names:?}"
    );
    let listed = w.kiln("victim", &["images"]);
    assert!(
        !combined(&listed).contains("kiln/tamper"),
        "{}",
        combined(&listed)
    );
    // A build FROM it fails the same way, at the FROM line.
    let out = w.build("victim", &format!("FROM {name}\nRUN true\n"), &[]);
    let text = combined(&out);
    assert!(!out.status.success());
    assert!(text.contains("does not match its digest"), "{text}");
    assert!(text.contains(":1"), "{text}");
}

/// A loopback proxy in front of the registry that cuts every connection once it has
/// passed `cut_after` bytes from the registry, while `cutting` is set.
fn cutting_proxy(upstream: String, cut_after: u64, cutting: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy");
    let host = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let cutting = cutting.clone();
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            std::thread::spawn(move || {
                let (mut s_read, mut c_write) = (server, client);
                let passed = AtomicU64::new(0);
                let mut buf = [0u8; 16384];
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let total = passed.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                    if cutting.load(Ordering::SeqCst) && total > cut_after {
                        break;
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
                let _ = s_read.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    host
}

#[test]
fn a_connection_cut_mid_blob_stores_nothing_and_the_next_pull_completes() {
    let Some(w) = World::new(None) else { return };
    // A layer of 24 MiB that does not compress.
    let name = w.name("kiln/big:1");
    let out = w.build(
        "pusher",
        &format!("{BUSYBOX_BASE}RUN head -c 25165824 /dev/urandom > /big\n"),
        &["-t", &name, "--push"],
    );
    assert!(out.status.success(), "{}", combined(&out));
    let cutting = Arc::new(AtomicBool::new(true));
    let proxy = cutting_proxy(w.reg.host.clone(), 4 << 20, cutting.clone());
    let via = format!("{proxy}/kiln/big:1");
    let out = w.kiln("cut", &["pull", &via]);
    let text = combined(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("kiln/big"), "{text}");
    let listed = w.kiln("cut", &["images"]);
    assert!(
        !combined(&listed).contains("kiln/big"),
        "{}",
        combined(&listed)
    );
    let partial: Vec<String> = blob_names(&w.root("cut"))
        .into_iter()
        .filter(|n| n.contains(".pull-"))
        .collect();
    assert!(partial.is_empty(), "unfinished blobs kept: {partial:?}");
    cutting.store(false, Ordering::SeqCst);
    let out = w.kiln("cut", &["pull", &via]);
    assert!(out.status.success(), "{}", combined(&out));
    let out = w.build("cut", &format!("FROM {via}\nRUN wc -c /big\n"), &[]);
    assert!(combined(&out).contains("25165824"), "{}", combined(&out));
}

#[test]
fn basic_auth_with_login_and_podman_auth_files() {
    let Some(w) = World::new(Some(("kiln", "s3cret-pw"))) else {
        return;
    };
    let name = w.name("kiln/private:1");
    let df = format!("{BUSYBOX_BASE}RUN echo private > /hello\n");
    let out = w.build("a", &df, &["-t", &name, "--push"]);
    let text = combined(&out);
    assert!(!out.status.success(), "pushed without credentials: {text}");
    assert!(
        text.to_lowercase().contains("unauthorized") || text.contains("401"),
        "{text}"
    );
    let home = w.home.path();
    let login = kiln_in(
        &w.root("a"),
        home,
        &["login", "-u", "kiln", "--password-stdin", &w.reg.host],
        Some("s3cret-pw\n"),
    );
    assert!(login.status.success(), "{}", combined(&login));
    let config = std::fs::read_to_string(home.join(".docker/config.json")).expect("config.json");
    assert!(
        config.contains(&w.reg.host) && !config.contains("s3cret-pw"),
        "{config}"
    );
    let out = w.build("a", &df, &["-t", &name, "--push"]);
    assert!(out.status.success(), "{}", combined(&out));
    let out = w.build("b", &format!("FROM {name}\nRUN cat /hello\n"), &[]);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(combined(&out).contains("private"));
    let logout = w.kiln("a", &["logout", &w.reg.host]);
    assert!(logout.status.success(), "{}", combined(&logout));
    let out = w.kiln("c", &["pull", &name]);
    assert!(!out.status.success(), "pulled after logout");
    // podman's file ($REGISTRY_AUTH_FILE) is read too.
    let auth_file = home.join("auth.json");
    let token = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"kiln:s3cret-pw")?;
            c.wait_with_output()
        })
        .expect("base64");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            w.reg.host,
            String::from_utf8_lossy(&token.stdout)
        ),
    )
    .unwrap();
    let out = Command::new(kiln_bin())
        .args(["pull", &name])
        .env("KILN_ROOT", w.root("d"))
        .env("HOME", home)
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("kiln");
    assert!(out.status.success(), "{}", combined(&out));
}

#[test]
fn pull_flag_outputs_and_docker_image_contexts() {
    let Some(w) = World::new(None) else { return };
    if !have("skopeo") {
        return;
    }
    let name = w.name("kiln/moving:1");
    w.push_hello("kiln/moving:1", "first", &[]);
    let df = format!("FROM {name}\nRUN cat /hello\n");
    let out = w.build("user", &df, &["--no-cache"]);
    assert!(combined(&out).contains("first"), "{}", combined(&out));
    w.push_hello("kiln/moving:1", "second", &[]);
    // The store's copy serves until --pull asks the registry again.
    let out = w.build("user", &df, &["--no-cache"]);
    assert!(combined(&out).contains("first"), "{}", combined(&out));
    let out = w.build("user", &df, &["--no-cache", "--pull"]);
    assert!(combined(&out).contains("second"), "{}", combined(&out));

    // docker-image:// names a registry image for a stage name.
    let ctx = format!("base=docker-image://{name}");
    let out = w.build(
        "ctx",
        "FROM base\nRUN cat /hello\n",
        &["--build-context", &ctx],
    );
    assert!(out.status.success(), "{}", combined(&out));
    assert!(combined(&out).contains("second"), "{}", combined(&out));
    // A named context with a stage's name replaces that stage (its instructions do not
    // run), keeping the image's config, as BuildKit does.
    let out = w.build(
        "ctx",
        &format!(
            "{}RUN echo stage-ran > /hello\n\nFROM base\nRUN cat /hello\n",
            BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS base", 1)
        ),
        &["--build-context", &ctx, "--no-cache"],
    );
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("second") && !text.contains("stage-ran"),
        "{text}"
    );

    // -o type=registry pushes; type=image only tags; push= elsewhere is refused.
    let df = format!("{BUSYBOX_BASE}RUN echo out > /hello\n");
    let reg_out = w.name("kiln/out:1");
    let out = w.build("o", &df, &["-o", &format!("type=registry,name={reg_out}")]);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(w.raw_manifest(&reg_out).is_some());
    let local = w.name("kiln/local:1");
    let out = w.build("o", &df, &["-o", &format!("type=image,name={local}")]);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(w.raw_manifest(&local).is_none(), "type=image pushed");
    assert!(combined(&w.kiln("o", &["images"])).contains("kiln/local"));
    let out = w.build(
        "o",
        &df,
        &["-o", &format!("type=image,name={local},push=true")],
    );
    assert!(out.status.success(), "{}", combined(&out));
    assert!(w.raw_manifest(&local).is_some());
    let out = w.build("o", &df, &["-o", "type=oci,dest=/tmp/x,push=true"]);
    assert!(!out.status.success());
    assert!(combined(&out).contains("applies to type=image and type=registry only"));
    let out = w.build("o", &df, &["--push"]);
    assert!(!out.status.success());
    assert!(
        combined(&out).contains("--push needs a name"),
        "{}",
        combined(&out)
    );
    let out = w.build("o", &df, &["-o", "type=registry"]);
    assert!(!out.status.success());
    assert!(
        combined(&out).contains("push=true needs name="),
        "{}",
        combined(&out)
    );
}

#[test]
fn build_cache_through_a_registry_and_a_layout_gives_an_empty_root_every_step() {
    let Some(w) = World::new(None) else { return };
    std::fs::write(w.ctx.path().join("note.txt"), "cached note\n").unwrap();
    let df = format!(
        "{}RUN echo tool > /tool\n\nFROM scratch AS other\nCOPY note.txt /\n\nFROM tool\nRUN echo final > /final\nCOPY --from=other /note.txt /\nRUN cat /note.txt /tool /final\n",
        BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS tool", 1)
    );
    let cache = w.name("kiln/cache:1");
    let to = format!("type=registry,ref={cache},mode=max");
    let local = w.roots.path().join("cache-layout");
    let to_local = format!("type=local,dest={},mode=max", local.display());
    let env = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let iid = |n: &str| {
        w.roots
            .path()
            .join(format!("{n}.iid"))
            .to_string_lossy()
            .into_owned()
    };
    let first_iid = iid("first");
    let mut args = vec![
        "--cache-to",
        &to,
        "--cache-to",
        &to_local,
        "--iidfile",
        &first_iid,
    ];
    args.extend(env);
    let out = w.build("first", &df, &args);
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("build cache (6 entries) to {cache}")),
        "{text}"
    );
    assert!(text.contains("build cache (6 entries) to /"), "{text}");

    for (root, from) in [
        ("from-registry", format!("type=registry,ref={cache}")),
        ("from-layout", format!("type=local,src={}", local.display())),
    ] {
        let this_iid = iid(root);
        let mut args = vec![
            "--cache-from",
            from.as_str(),
            "--iidfile",
            &this_iid,
            "-t",
            "cached:1",
        ];
        args.extend(env);
        let out = w.build(root, &df, &args);
        let text = combined(&out);
        assert!(out.status.success(), "{text}");
        let cached = text.lines().filter(|l| l.ends_with(" CACHED")).count();
        let done = text.lines().filter(|l| l.contains(" DONE ")).count();
        // COPY rootfs, RUN tool, COPY note, RUN final, COPY --from, RUN cat: all cached;
        // only config steps (none here) would run.
        assert_eq!((cached, done), (6, 0), "{root}: {text}");
        assert!(!text.contains("cached note\n#"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&this_iid).unwrap(),
            std::fs::read_to_string(&first_iid).unwrap(),
            "{root}: the same image from the imported cache"
        );
        // The image is complete: it runs in this root.
        let ran = w.kiln(
            root,
            &["run", "cached:1", "cat", "/tool", "/note.txt", "/final"],
        );
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout),
            "tool\ncached note\nfinal\n",
            "{}",
            combined(&ran)
        );
    }
    // mode=min carries the target's lineage only (not stage "other"); a cache that is
    // not there is a warning; bad specs are refused before the build.
    let min = w.name("kiln/cache:min");
    let to = format!("type=registry,ref={min}");
    let out = w.build("first", &df, &["--cache-to", &to]);
    assert!(
        combined(&out).contains("build cache (5 entries)"),
        "{}",
        combined(&out)
    );
    let absent = format!("type=registry,ref={}", w.name("kiln/cache:absent"));
    let out = w.build("absent", &df, &["--cache-from", &absent]);
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("warning") || text.contains("WARN"), "{text}");
    assert!(text.contains("--cache-from"), "{text}");
    for bad in ["type=gha", "type=registry,ref=x,mode=all", "type=local"] {
        let out = w.build("bad", &df, &["--cache-to", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(combined(&out).contains("--cache-to"), "{}", combined(&out));
    }
}

/// An imported registry cache downloads only the layers the build needs: a builder
/// stage's large layer, behind a `COPY --from` that is cached, is never fetched into
/// the fresh root — neither for the all-`CACHED` build (the image's own layers are), nor
/// for a build whose final stage has a new step (its snapshot is made from the fetched
/// layers) — and is fetched when this root exports the cache again (the export names
/// every layer of its entries).
#[test]
fn an_imported_cache_downloads_only_the_layers_the_build_needs() {
    let Some(w) = World::new(None) else { return };
    let builder = BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS builder", 1);
    let df = format!(
        "{builder}RUN head -c 6000000 /dev/urandom > /toolchain && echo built > /artifact\n\n{BUSYBOX_BASE}COPY --from=builder /artifact /artifact\n"
    );
    let cache = w.name("kiln/lazy-cache:1");
    let to = format!("type=registry,ref={cache},mode=max");
    let out = w.build("first", &df, &["--cache-to", &to]);
    assert!(out.status.success(), "{}", combined(&out));
    // The toolchain's layer: the one blob over 5 MB.
    let big = |root: &str| {
        std::fs::read_dir(w.root(root).join("blobs/sha256"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.metadata().is_ok_and(|m| m.len() > 5_000_000))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let toolchain = big("first");
    assert_eq!(toolchain.len(), 1, "{toolchain:?}");
    let from = format!("type=registry,ref={cache}");
    // All cached; then a new step on the cached final stage, which runs on a snapshot
    // made from the fetched layers.
    let more = format!("{df}RUN cat /artifact > /copied\n");
    for (dockerfile, tag, file) in [(&df, "lazy:1", "/artifact"), (&more, "lazy:2", "/copied")] {
        let out = w.build("fresh", dockerfile, &["--cache-from", &from, "-t", tag]);
        let text = combined(&out);
        assert!(out.status.success(), "{text}");
        let cached = text.lines().filter(|l| l.ends_with(" CACHED")).count();
        assert_eq!(cached, 4, "{tag}: {text}");
        assert!(
            big("fresh").is_empty(),
            "{tag}: the toolchain layer was downloaded: {text}"
        );
        let ran = w.kiln("fresh", &["run", tag, "cat", file]);
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout),
            "built\n",
            "{}",
            combined(&ran)
        );
    }
    // Exporting the cache from this root names every layer, so it fetches the toolchain.
    let again = format!("type=registry,ref={},mode=max", w.name("kiln/lazy-cache:2"));
    let out = w.build("fresh", &df, &["--cache-from", &from, "--cache-to", &again]);
    assert!(out.status.success(), "{}", combined(&out));
    assert_eq!(big("fresh"), toolchain, "{}", combined(&out));
}
