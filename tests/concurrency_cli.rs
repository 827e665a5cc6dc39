//! Concurrent builds on one root lose nothing: identical and different Dockerfiles, some
//! with the same tag, build at once while `kiln prune --all` and `kiln rmi` run beside
//! them; every build succeeds, every image a build reports is complete in the store (its
//! manifest, config and every layer blob), the shared tag points at one of the images
//! built for it, and the root serves the next build. Runs as root and (scripts/test.sh)
//! as `kiln-ci` and `kiln-ci-single`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use kiln_tests::{busybox_context, combined, kiln_at, kiln_bin, BUSYBOX_BASE};

fn spawn_build(root: &Path, ctx: &Path, dockerfile: &Path, tag: &str, meta: &Path) -> Child {
    Command::new(kiln_bin())
        .args(["build", "--progress", "plain", "-f"])
        .arg(dockerfile)
        .args(["-t", tag, "--metadata-file"])
        .arg(meta)
        .arg(ctx)
        .env("KILN_ROOT", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln build")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

#[test]
fn builds_on_one_root_at_once_lose_nothing() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().expect("root");
    let work = tempfile::tempdir().expect("work");
    let df = |name: &str, body: &str| {
        let p = work.path().join(name);
        std::fs::write(&p, format!("{BUSYBOX_BASE}{body}")).unwrap();
        p
    };
    let a = df(
        "A",
        "RUN echo a > /x && head -c 2000000 /dev/urandom > /big\n",
    );
    let b = df(
        "B",
        "RUN echo b > /x && head -c 2000000 /dev/urandom > /big\n",
    );
    let c = df("C", "RUN echo c > /x\nRUN echo more > /y\n");
    let builds = [
        (&a, "same:1", "m1"),
        (&a, "same:1", "m2"),
        (&b, "same:1", "m3"),
        (&c, "other:1", "m4"),
        (&c, "other:2", "m5"),
    ];
    // A first build so that prune and rmi have something to remove meanwhile.
    let first = kiln_at(
        root.path(),
        &[
            "build",
            "-q",
            "-f",
            &c.to_string_lossy(),
            "-t",
            "old:1",
            &ctx.path().to_string_lossy(),
        ],
    );
    assert!(first.status.success(), "{}", combined(&first));
    let children: Vec<(Child, &str, std::path::PathBuf)> = builds
        .iter()
        .map(|(d, tag, m)| {
            let meta = work.path().join(format!("{m}.json"));
            (
                spawn_build(root.path(), ctx.path(), d, tag, &meta),
                *tag,
                meta,
            )
        })
        .collect();
    // Beside them: prune everything unused, untag the old image, prune again.
    let pruned = kiln_at(root.path(), &["prune", "--all", "--force"]);
    let untagged = kiln_at(root.path(), &["rmi", "old:1"]);
    let pruned_again = kiln_at(root.path(), &["prune", "--all", "--force"]);
    for (what, out) in [
        ("prune", &pruned),
        ("rmi", &untagged),
        ("prune", &pruned_again),
    ] {
        assert!(out.status.success(), "{what}: {}", combined(out));
    }
    let mut reported = Vec::new();
    for (child, tag, meta) in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{tag}: {}", combined(&out));
        let m = json(&meta);
        reported.push((
            tag,
            m["containerimage.digest"].as_str().unwrap().to_string(),
        ));
    }
    // Every reported image is complete.
    let blob = |d: &str| {
        root.path()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    for (tag, digest) in &reported {
        assert!(blob(digest).is_file(), "{tag}: manifest {digest} missing");
        let m = json(&blob(digest));
        let config = m["config"]["digest"].as_str().unwrap();
        assert!(blob(config).is_file(), "{tag}: config missing");
        for l in m["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap();
            assert!(blob(d).is_file(), "{tag}: layer {d} missing");
            assert_eq!(
                std::fs::metadata(blob(d)).unwrap().len(),
                l["size"].as_u64().unwrap(),
                "{tag}: layer {d} incomplete"
            );
        }
    }
    // The shared tag names one of the images built for it, whole; it runs.
    let index = json(&root.path().join("index.json"));
    let tagged = |name: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"] == name)
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let same = tagged("same:1");
    assert_eq!(same.len(), 1, "one entry per tag: {index}");
    assert!(
        reported
            .iter()
            .any(|(t, d)| *t == "same:1" && *d == same[0]),
        "same:1 names an image no build reported"
    );
    assert!(tagged("old:1").is_empty(), "rmi lost");
    let ran = kiln_at(root.path(), &["run", "same:1", "cat", "/x"]);
    let x = String::from_utf8_lossy(&ran.stdout).trim().to_string();
    assert!(x == "a" || x == "b", "{}", combined(&ran));
    let ran = kiln_at(root.path(), &["run", "other:2", "cat", "/y"]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "more",
        "{}",
        combined(&ran)
    );
    // The root serves the next build.
    let next = kiln_at(
        root.path(),
        &[
            "build",
            "-q",
            "-f",
            &a.to_string_lossy(),
            &ctx.path().to_string_lossy(),
        ],
    );
    assert!(next.status.success(), "{}", combined(&next));
}

/// Two stages at once, each mounting the same two `sharing=locked` caches nested the
/// other way round: neither waits for the other for ever, and both caches keep what was
/// written through the nested target.
#[test]
fn parallel_stages_with_nested_locked_caches_do_not_deadlock() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().expect("root");
    let base = BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS base", 1);
    let df = format!(
        "{base}FROM base AS a
RUN --mount=type=cache,id=one,target=/c,sharing=locked --mount=type=cache,id=two,target=/c/inner,sharing=locked sleep 1; echo a > /c/inner/a; echo a-done
FROM base AS b
RUN --mount=type=cache,id=two,target=/d,sharing=locked --mount=type=cache,id=one,target=/d/inner,sharing=locked sleep 1; echo b > /d/inner/b; echo b-done
FROM base
COPY --from=a /bin/busybox /a
COPY --from=b /bin/busybox /b
RUN --mount=type=cache,id=two,target=/two --mount=type=cache,id=one,target=/one cat /two/a /one/b
"
    );
    let file = ctx.path().join("Dockerfile.nested");
    std::fs::write(&file, df).unwrap();
    let mut child = Command::new(kiln_bin())
        .args(["build", "--progress", "plain", "-j", "2", "-f"])
        .arg(&file)
        .arg(ctx.path())
        .env("KILN_ROOT", root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the build did not finish in 120 s (deadlock?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("a-done") && text.contains("b-done"), "{text}");
    // The last step reads both caches: `a` went to "two" through /c/inner, `b` to "one"
    // through /d/inner.
    let last: Vec<&str> = text.lines().filter(|l| l.starts_with("#10 ")).collect();
    assert!(last.contains(&"#10 a") && last.contains(&"#10 b"), "{text}");
}
