//! The build cache end to end: an unchanged step is `CACHED` (and not run again), a change
//! re-runs only what depends on it, files a COPY does not match and secrets never bust
//! the cache, `--no-cache` runs everything, and an entry whose snapshot is gone is a
//! miss. Runs as root and (scripts/test.sh) as unprivileged users.

use std::path::Path;
use std::process::Command;

use kiln_tests::{busybox_context, kiln_bin, BUSYBOX_BASE};

struct Build {
    stderr: String,
    image: String,
}

fn build(root: &Path, ctx: &Path, args: &[&str]) -> Build {
    let out = Command::new(kiln_bin())
        .arg("build")
        .args(["-t", "cached:latest", "--iidfile"])
        .arg(root.join("iid"))
        .args(args)
        .arg(ctx)
        .env("KILN_ROOT", root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("running kiln build");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{stderr}");
    let image = std::fs::read_to_string(root.join("iid")).expect("iidfile");
    Build { stderr, image }
}

fn cached(b: &Build) -> usize {
    b.stderr.lines().filter(|l| l.ends_with(" CACHED")).count()
}

const DOCKERFILE: &str = "COPY package.json /app/\n\
RUN cat /app/package.json > /app/installed && cat /proc/sys/kernel/random/uuid > /app/stamp1\n\
COPY src/ /app/src/\n\
RUN ls /app/src > /app/listing && cat /proc/sys/kernel/random/uuid > /app/stamp2\n";

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn unchanged_steps_are_cached_and_changes_rerun_only_what_follows() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().expect("root");
    let ctx = ctx.path();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("{BUSYBOX_BASE}{DOCKERFILE}"),
    )
    .unwrap();
    std::fs::write(ctx.join("package.json"), "{\"name\":\"app\"}").unwrap();
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(ctx.join("src/a.js"), "one").unwrap();
    std::fs::write(ctx.join("README"), "not copied").unwrap();

    let out1 = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out1.path().display());
    let cold = build(root.path(), ctx, &["-o", &dest]);
    assert_eq!(cached(&cold), 0, "{}", cold.stderr);

    // Nothing changed: every filesystem step (COPY rootfs, COPY, RUN, COPY, RUN) is
    // reused, and the image is the same, byte for byte.
    let warm = build(root.path(), ctx, &[]);
    assert_eq!(cached(&warm), 5, "{}", warm.stderr);
    assert_eq!(warm.image, cold.image);

    // A file no COPY matches, and a touch of a copied one: still all cached.
    std::fs::write(ctx.join("README"), "changed, still not copied").unwrap();
    std::fs::write(ctx.join("src/a.js"), "one").unwrap();
    let b = build(root.path(), ctx, &[]);
    assert_eq!(cached(&b), 5, "{}", b.stderr);
    assert_eq!(b.image, cold.image);

    // A source file changed: the steps before its COPY stay cached, the COPY and the RUN
    // after it run again.
    std::fs::write(ctx.join("src/b.js"), "two").unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let dest2 = format!("type=local,dest={}", out2.path().display());
    let changed = build(root.path(), ctx, &["-o", &dest2]);
    assert_eq!(cached(&changed), 3, "{}", changed.stderr);
    assert_ne!(changed.image, cold.image);
    assert_eq!(
        read(out1.path(), "app/stamp1"),
        read(out2.path(), "app/stamp1")
    );
    assert_ne!(
        read(out1.path(), "app/stamp2"),
        read(out2.path(), "app/stamp2")
    );
    assert_eq!(read(out2.path(), "app/listing"), "a.js\nb.js\n");

    // --no-cache runs every step.
    let all = build(root.path(), ctx, &["--no-cache"]);
    assert_eq!(cached(&all), 0, "{}", all.stderr);

    // Entries whose snapshots are gone rebuild them from their layers' blobs (as an
    // imported cache does): every step is a hit, the image the same.
    let remove_all = |dir: &str| {
        for e in std::fs::read_dir(root.path().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let _ = Command::new("rm").arg("-rf").arg(&p).status();
        }
    };
    remove_all("snapshots");
    let rebuilt = build(root.path(), ctx, &[]);
    assert_eq!(cached(&rebuilt), 5, "{}", rebuilt.stderr);
    assert_eq!(rebuilt.image, all.image);
    // With the blobs gone too they are misses, and the build still succeeds.
    remove_all("snapshots");
    remove_all("blobs/sha256");
    let rebuilt = build(root.path(), ctx, &[]);
    assert_eq!(cached(&rebuilt), 0, "{}", rebuilt.stderr);
}

#[test]
fn secrets_are_not_part_of_the_key() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().expect("root");
    let ctx = ctx.path();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo ok > /done\n"),
    )
    .unwrap();
    let secret = root.path().join("tok");
    std::fs::write(&secret, "first-value").unwrap();
    let spec = format!("id=tok,src={}", secret.display());
    let a = build(root.path(), ctx, &["--secret", &spec]);
    assert_eq!(cached(&a), 0, "{}", a.stderr);
    std::fs::write(&secret, "second-value").unwrap();
    let b = build(root.path(), ctx, &["--secret", &spec]);
    assert_eq!(cached(&b), 2, "{}", b.stderr);
    assert_eq!(a.image, b.image);
    // The secret's value is in no cache entry.
    for e in std::fs::read_dir(root.path().join("cache/steps")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("first-value") && !text.contains("second-value"));
    }
}
