//! A real-world build end to end, offline but for the package mirrors: a Debian base
//! image made by `mmdebstrap` (setup-host.sh writes it to
//! /var/cache/kiln-tests/debian-bookworm.tar, or `$KILN_TEST_DEBIAN_TAR`) is built,
//! pushed to a real `docker-registry`, and a multi-stage Python app is built FROM it
//! through the registry in an empty root: `apt-get update && apt-get install` and `pip
//! install -r requirements.txt` in RUN steps (DNS and TLS to the mirrors from inside the
//! step), a slim final stage, a test stage whose report is exported with `-o
//! type=local`; the app is pushed, pulled into another empty root and run.
//!
//! The host's CA bundle is bind-mounted for `pip` (`--build-context hostcerts=/etc/ssl/certs`),
//! as users behind a TLS-intercepting proxy do with BuildKit: this machine reaches PyPI
//! through one.
//!
//! As `kiln-ci-single` (one id: no `_apt` user can be switched to) apt is told to stay
//! root with `APT::Sandbox::User=root`, as rootless BuildKit users with one id must too.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use kiln_tests::registry::TestRegistry;
use kiln_tests::{combined, kiln_at, skipped};

fn debian_tar() -> Option<PathBuf> {
    let p = std::env::var_os("KILN_TEST_DEBIAN_TAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln-tests/debian-bookworm.tar"));
    if p.is_file() {
        return Some(p);
    }
    skipped(&format!(
        "{} missing (scripts/setup-host.sh makes it with mmdebstrap)",
        p.display()
    ));
    assert!(
        std::env::var_os("CI").is_none(),
        "{} missing under CI",
        p.display()
    );
    None
}

fn build(root: &Path, ctx: &Path, args: &[&str]) -> (Output, f64) {
    let started = Instant::now();
    let ctx = ctx.to_string_lossy().into_owned();
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    all.push(&ctx);
    let out = kiln_at(root, &all);
    (out, started.elapsed().as_secs_f64())
}

const APP_DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS build
ARG APT_OPTS=""
RUN apt-get $APT_OPTS update \
 && apt-get $APT_OPTS install -y --no-install-recommends jq \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=bind,from=hostcerts,source=ca-certificates.crt,target=/etc/ssl/certs/ca-certificates.crt \
    /opt/venv/bin/pip install --no-cache-dir -r requirements.txt
COPY app.py .
RUN echo '{"answer": 42}' | jq .answer > /app/answer

FROM build AS test
RUN /opt/venv/bin/python -c "import six; print('tests passed with six', six.__version__)" > /report.txt

FROM scratch AS report
COPY --from=test /report.txt /

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
CMD ["/opt/venv/bin/python", "app.py"]
"#;

#[test]
fn python_app_on_a_debian_base_through_the_registry() {
    let Some(tar) = debian_tar() else { return };
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let root = |n: &str| work.path().join(n);

    // The base: mmdebstrap's tree as one layer, pushed.
    let base_ctx = root("base-ctx");
    std::fs::create_dir_all(&base_ctx).unwrap();
    std::fs::copy(&tar, base_ctx.join("debian.tar")).expect("copy the base tar");
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nADD debian.tar /\nCMD [\"bash\"]\n",
    )
    .unwrap();
    let base = format!("{}/kiln/debian:bookworm", reg.host);
    let (out, base_secs) = build(&root("base-root"), &base_ctx, &["-t", &base, "--push"]);
    assert!(out.status.success(), "{}", combined(&out));

    // The app, built in an empty root: the base comes from the registry.
    let app_ctx = root("app-ctx");
    std::fs::create_dir_all(&app_ctx).unwrap();
    std::fs::write(app_ctx.join("Dockerfile"), APP_DOCKERFILE).unwrap();
    std::fs::write(app_ctx.join("requirements.txt"), "six==1.16.0\n").unwrap();
    std::fs::write(
        app_ctx.join("app.py"),
        "import six\nprint('app running with six', six.__version__, 'answer', open('/app/answer').read().strip())\n",
    )
    .unwrap();
    let base_arg = format!("BASE={base}");
    let single = std::env::var("KILN_TEST_IDS").as_deref() == Ok("single");
    let mut args = vec![
        "--build-arg",
        &base_arg,
        "--build-context",
        "hostcerts=/etc/ssl/certs",
    ];
    if single {
        args.extend(["--build-arg", "APT_OPTS=-oAPT::Sandbox::User=root"]);
    }
    let app = format!("{}/kiln/pyapp:1", reg.host);
    let mut app_args = args.clone();
    app_args.extend(["-t", &app, "--push"]);
    let (out, app_secs) = build(&root("builder"), &app_ctx, &app_args);
    let text = combined(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("pulled {base}")), "{text}");
    assert!(text.contains("Successfully installed six-1.16.0"), "{text}");

    // The test stage's report, exported as files.
    let report = root("report");
    let dest = format!("type=local,dest={}", report.display());
    let mut report_args = args.clone();
    report_args.extend(["--target", "report", "-o", &dest]);
    let (out, report_secs) = build(&root("builder"), &app_ctx, &report_args);
    assert!(out.status.success(), "{}", combined(&out));
    let text = std::fs::read_to_string(report.join("report.txt")).expect("report.txt");
    assert_eq!(text.trim(), "tests passed with six 1.16.0");

    // Pulled into another empty root and run.
    let runner = root("runner");
    let out = kiln_at(&runner, &["pull", &app]);
    assert!(out.status.success(), "{}", combined(&out));
    let out = kiln_at(&runner, &["run", &app]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "app running with six 1.16.0 answer 42",
        "{}",
        combined(&out)
    );
    eprintln!(
        "real-world timings: base {base_secs:.1}s, python app (apt-get + pip, cold) {app_secs:.1}s, report stage {report_secs:.1}s"
    );
}
