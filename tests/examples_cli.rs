//! The examples in `tests/examples/` build offline from a busybox base image (assembled as
//! an OCI layout by kiln, as `scripts/busybox-base.sh` does) and do what their comments
//! say: parallel builders feeding a minimal final image, a build-arg-selected branch, a
//! `--target debug` image, a test report extracted with `type=local`, a secret-using stage.
//! The example files are compiled in, so the test runs as users who cannot read the
//! checkout.

use std::path::Path;
use std::process::{Command, Output};

use kiln_tests::{busybox_context, kiln_bin};

const APP: &[(&str, &str)] = &[
    ("Dockerfile", include_str!("examples/app/Dockerfile")),
    ("src/app.sh.in", include_str!("examples/app/src/app.sh.in")),
    (".dockerignore", include_str!("examples/app/.dockerignore")),
    ("README.md", include_str!("examples/app/README.md")),
];
const CI_REPORT: &[(&str, &str)] = &[
    ("Dockerfile", include_str!("examples/ci-report/Dockerfile")),
    (
        "src/build.sh",
        include_str!("examples/ci-report/src/build.sh"),
    ),
    (
        "src/test.sh",
        include_str!("examples/ci-report/src/test.sh"),
    ),
];
const SECRETS: &[(&str, &str)] = &[("Dockerfile", include_str!("examples/secrets/Dockerfile"))];

fn write_example(dir: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

struct Env {
    root: tempfile::TempDir,
    base: String,
}

impl Env {
    /// A kiln root and the busybox base as an OCI layout.
    fn new() -> Option<Env> {
        let ctx = busybox_context()?;
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n",
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let layout = root.path().join("busybox-layout");
        let env = Env {
            base: format!("busybox=oci-layout://{}", layout.display()),
            root,
        };
        let out = env.kiln(&[
            "build",
            "-q",
            "-t",
            "busybox:latest",
            "-o",
            &format!("type=oci,dest={}", layout.display()),
            ctx.path().to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{out:?}");
        Some(env)
    }

    fn kiln(&self, args: &[&str]) -> Output {
        Command::new(kiln_bin())
            .args(args)
            .env("KILN_ROOT", self.root.path())
            .output()
            .unwrap()
    }

    fn build(&self, example: &Path, extra: &[&str]) -> String {
        let mut args = vec!["build", "--build-context", self.base.as_str()];
        args.extend_from_slice(extra);
        args.push(example.to_str().unwrap());
        let out = self.kiln(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    }

    fn run(&self, args: &[&str]) -> String {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        let out = self.kiln(&a);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn app_example_final_branch_and_debug_targets() {
    let Some(env) = Env::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_example(dir.path(), APP);
    env.build(dir.path(), &["-t", "app"]);
    assert_eq!(env.run(&["app"]), "api serve (mode=release)\n");
    assert_eq!(env.run(&["app", "health"]), "api health (mode=release)\n");
    // The final image holds only what it needs.
    let listing = env.run(&["--entrypoint", "/bin/sh", "app", "-c", "echo /*"]);
    // (/dev and /proc are the sandbox's own mounts.)
    assert_eq!(listing.trim(), "/bin /dev /etc /proc /usr");
    env.build(
        dir.path(),
        &["--build-arg", "VARIANT=debug", "-t", "app:dbg"],
    );
    assert_eq!(env.run(&["app:dbg"]), "api serve (mode=debug)\n");
    env.build(dir.path(), &["--target", "debug", "-t", "app:debug"]);
    let out = env.run(&[
        "app:debug",
        "sh",
        "-c",
        "worker once; test -e /src/README.md || echo no-readme",
    ]);
    assert_eq!(out, "worker once (mode=release)\nno-readme\n");
}

#[test]
fn ci_report_example_extracts_the_report() {
    let Some(env) = Env::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_example(dir.path(), CI_REPORT);
    let out = dir.path().join("out");
    env.build(
        dir.path(),
        &[
            "--target",
            "report",
            "-o",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    let report = std::fs::read_to_string(out.join("junit.txt")).unwrap();
    assert_eq!(report, "ok 1 - artifact line: artifact version 1\n1..1\n");
    let entries: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the report leaves the build");
}

#[test]
fn secrets_example_needs_and_hides_the_token() {
    let Some(env) = Env::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_example(dir.path(), SECRETS);
    let token = dir.path().join("token.txt");
    std::fs::write(&token, "example-token-value").unwrap();
    let secret = format!("id=api_token,src={}", token.display());
    env.build(dir.path(), &["--secret", &secret, "-t", "fetched"]);
    assert_eq!(env.run(&["fetched"]), "fetched with a token of 19 bytes\n");
    // Without the secret the build fails, naming it (--no-cache: a cached step is not
    // run, so its secret is not needed, as in BuildKit).
    let mut args = vec!["build", "--no-cache", "--build-context", env.base.as_str()];
    let d = dir.path().to_str().unwrap();
    args.push(d);
    let out = env.kiln(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("api_token"),
        "{out:?}"
    );
}
