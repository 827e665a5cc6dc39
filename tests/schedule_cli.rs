//! The scheduler end to end: `-j` caps how many stages build at once, the first failure
//! stops the rest at once (its error names the stage and step), SIGTERM and SIGINT
//! cancel a build (exit 143/130, no process left, the store builds again),
//! `--no-cache-filter` re-runs the stages it names and what depends on them, and
//! `--metadata-file` records the result. Runs as root and (scripts/test.sh) as
//! unprivileged users.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{busybox_context, kiln_bin, BUSYBOX_BASE};

fn build(root: &Path, ctx: &Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .arg("build")
        .args(args)
        .arg(ctx)
        .env("KILN_ROOT", root)
        .output()
        .expect("running kiln build")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stage(name: &str, body: &str) -> String {
    format!(
        "{}{body}\n",
        BUSYBOX_BASE.replacen("FROM scratch", &format!("FROM scratch AS {name}"), 1)
    )
}

/// Whether two independent stages, each pausing for a second between two uptime stamps,
/// ran at the same time with `-j jobs`.
fn stages_overlap(jobs: &str) -> bool {
    let Some(ctx) = busybox_context() else {
        return false;
    };
    let root = tempfile::tempdir().unwrap();
    let step = |me: &str| {
        format!(
            "RUN cut -d' ' -f1 /proc/uptime > /{me}-start && sleep 1 && cut -d' ' -f1 /proc/uptime > /{me}-end"
        )
    };
    let df = format!(
        "{}{}FROM scratch\nCOPY --from=a /a-start /a-end /\nCOPY --from=b /b-start /b-end /\n",
        stage("a", &step("a")),
        stage("b", &step("b"))
    );
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let out = root.path().join("out");
    let dest = format!("type=local,dest={}", out.display());
    let o = build(root.path(), ctx.path(), &["-j", jobs, "-o", &dest]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = |name: &str| -> f64 {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    t("a-start") < t("b-end") && t("b-start") < t("a-end")
}

#[test]
fn jobs_cap_how_many_stages_run_at_once() {
    if busybox_context().is_none() {
        return;
    }
    assert!(!stages_overlap("1"), "-j 1 ran two stages at once");
    assert!(stages_overlap("2"), "-j 2 did not run two stages at once");
    // -j 0 is refused by the command line.
    let ctx = busybox_context().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), BUSYBOX_BASE).unwrap();
    let out = build(root.path(), ctx.path(), &["-j", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn the_first_failure_stops_the_rest() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let df = format!(
        "{}{}FROM scratch\nCOPY --from=slow /bin/busybox /a\nCOPY --from=broken /bin/busybox /b\n",
        stage("slow", "RUN sleep 41.25"),
        stage("broken", "RUN sleep 1 && exit 7")
    );
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let t0 = Instant::now();
    let out = build(root.path(), ctx.path(), &[]);
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("exit code 7") && text.contains("Dockerfile:"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the slow stage was not stopped: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let left = Command::new("pgrep")
        .args(["-f", "sleep 41.25"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "a RUN process was left behind");
}

fn interrupted(signal: &str, code: i32) {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let marker = format!("sleep 43.{code}");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN echo started && {marker}\n"),
    )
    .unwrap();
    let mut child = Command::new(kiln_bin())
        .args(["build", "-t", "never:latest"])
        .arg(ctx.path())
        .env("KILN_ROOT", root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the RUN has started.
    let t0 = Instant::now();
    loop {
        let running = Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap();
        if !running.stdout.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the RUN never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(code), "{signal}: {err}");
    assert!(err.contains("interrupted"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let left = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "{signal}: a RUN process was left behind"
    );
    // Nothing was tagged, no active snapshot is left, and the store builds again.
    let index = std::fs::read_to_string(root.path().join("index.json")).unwrap_or_default();
    assert!(!index.contains("never:latest"), "{index}");
    let work = root.path().join("work");
    let active = std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0);
    assert_eq!(active, 0, "active snapshots left in {}", work.display());
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN echo again\n"),
    )
    .unwrap();
    let again = build(root.path(), ctx.path(), &[]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn sigterm_cancels_with_143() {
    interrupted("-TERM", 143);
}

#[test]
fn sigint_cancels_with_130() {
    interrupted("-INT", 130);
}

#[test]
fn no_cache_filter_reruns_the_named_stage_and_its_dependents() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let df = format!(
        "{}{}{}FROM scratch\nCOPY --from=app /f /app\nCOPY --from=tool /f /tool\n",
        stage("base", "RUN cat /proc/sys/kernel/random/uuid > /f"),
        "FROM base AS app\nRUN cat /proc/sys/kernel/random/uuid >> /f\n",
        stage("tool", "RUN cat /proc/sys/kernel/random/uuid > /f"),
    );
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let cached = |o: &Output| stderr(o).lines().filter(|l| l.ends_with(" CACHED")).count();
    let first = build(root.path(), ctx.path(), &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let all = build(root.path(), ctx.path(), &[]);
    // base: COPY rootfs + RUN; app: RUN; tool: COPY rootfs + RUN; final: 2 COPY.
    assert_eq!(cached(&all), 7, "{}", stderr(&all));
    let meta = root.path().join("meta.json");
    let filtered = build(
        root.path(),
        ctx.path(),
        &[
            "--no-cache-filter",
            "base",
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    assert!(filtered.status.success(), "{}", stderr(&filtered));
    // base and app (built on base) and the final stage (reads app) run; tool is cached.
    assert_eq!(cached(&filtered), 2, "{}", stderr(&filtered));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert!(
        m["containerimage.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
            && m["containerimage.config.digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
        "{m}"
    );
    let unknown = build(root.path(), ctx.path(), &["--no-cache-filter", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("\"nope\""),
        "{}",
        stderr(&unknown)
    );
}
