//! `kiln build --progress` end to end: plain names steps as BuildKit does and says
//! `CACHED` on a rebuild; rawjson is JSON on every line, in event order; quiet prints
//! only the image id; a bogus mode is refused; the tty view, run inside tmux, shows the
//! finished steps and the summary. Runs as root and (scripts/test.sh) as unprivileged
//! users.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_tests::{busybox_context, have, kiln_bin};

/// Two stages: `base` (FROM scratch, COPY, RUN with output) and the last one (FROM base,
/// RUN, ENV).
const DOCKERFILE: &str = "FROM scratch AS base\n\
COPY rootfs/ /\n\
RUN echo progress-says-hello > /hello && cat /hello\n\
FROM base\n\
RUN echo second-stage\n\
ENV DONE=yes\n";

struct Built {
    code: i32,
    stdout: String,
    stderr: String,
}

fn build(root: &Path, ctx: &Path, args: &[&str]) -> Built {
    let out = Command::new(kiln_bin())
        .arg("build")
        .args(args)
        .arg(ctx)
        .env("KILN_ROOT", root)
        .output()
        .expect("running kiln build");
    Built {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A busybox context with [`DOCKERFILE`] (or `dockerfile`), and an empty kiln root.
fn fixture(dockerfile: &str) -> Option<(tempfile::TempDir, tempfile::TempDir)> {
    let ctx = busybox_context()?;
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    Some((tempfile::tempdir().expect("root"), ctx))
}

fn has_line(text: &str, wanted: &str) -> bool {
    text.lines().any(|l| l == wanted)
}

#[test]
fn plain_names_steps_as_buildkit_and_says_cached_on_a_rebuild() {
    let Some((root, ctx)) = fixture(DOCKERFILE) else {
        return;
    };
    let b = build(root.path(), ctx.path(), &["--progress=plain"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let e = &b.stderr;
    for line in [
        "#1 [base 1/3] FROM scratch",
        "#2 [base 2/3] COPY rootfs/ /",
        "#3 [base 3/3] RUN echo progress-says-hello > /hello && cat /hello",
        "#3 progress-says-hello",
        "#4 [stage-1 1/3] FROM base",
        "#5 [stage-1 2/3] RUN echo second-stage",
        "#5 second-stage",
        "#6 [stage-1 3/3] ENV DONE=yes",
    ] {
        assert!(has_line(e, line), "no line {line:?} in:\n{e}");
    }
    assert!(
        e.lines()
            .any(|l| l.starts_with("#2 DONE ") && l.contains("layer ")),
        "{e}"
    );
    assert!(!e.contains(" CACHED"), "{e}");
    let summary = e.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("built in ") && summary.contains("4 steps (4 run, 0 cached)"),
        "{e}"
    );
    // No log records in the progress (they are errors-only without --debug).
    assert!(!e.contains(" WARN kiln") && !e.contains(" INFO "), "{e}");

    let again = build(root.path(), ctx.path(), &["--progress=plain"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let e = &again.stderr;
    assert!(has_line(e, "#2 CACHED"), "{e}");
    assert!(has_line(e, "#3 CACHED"), "{e}");
    assert!(has_line(e, "#5 CACHED"), "{e}");
    assert!(
        e.lines().any(|l| l.contains("4 steps (1 run, 3 cached)")),
        "{e}"
    );
}

#[test]
fn plain_marks_the_failed_step() {
    let Some((root, ctx)) =
        fixture("FROM scratch\nCOPY rootfs/ /\nRUN echo about-to-fail; exit 3\n")
    else {
        return;
    };
    let b = build(root.path(), ctx.path(), &["--progress=plain"]);
    assert_eq!(b.code, 1, "{}", b.stderr);
    let e = &b.stderr;
    assert!(has_line(e, "#3 about-to-fail"), "{e}");
    let error = e
        .lines()
        .find(|l| l.starts_with("#3 ERROR: "))
        .unwrap_or_else(|| panic!("no #3 ERROR line:\n{e}"));
    assert!(error.contains("exit code 3"), "{e}");
    assert!(e.contains("error: Dockerfile:3:1"), "{e}");
}

/// Every line of `stderr` as JSON; fails on the first that is not.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect()
}

#[test]
fn rawjson_is_one_object_per_line_in_event_order() {
    let Some((root, ctx)) = fixture(DOCKERFILE) else {
        return;
    };
    let b = build(root.path(), ctx.path(), &["--progress=rawjson"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let events = json_lines(&b.stderr);
    let kind = |v: &serde_json::Value| v["type"].as_str().unwrap_or_default().to_string();
    let kinds: Vec<String> = events.iter().map(kind).collect();
    // Warnings (the single id mapping says one) may come before the snapshotter, nothing
    // else.
    let first = kinds
        .iter()
        .position(|k| k != "warning")
        .expect("some event");
    assert_eq!(kinds[first], "snapshotter", "{kinds:?}");
    assert!(events[first]["kind"].is_string() && events[first]["reason"].is_string());

    // Per stage: stage_started, then each step started and done in order.
    let mut expected = Vec::new();
    let stages = [("base", 2), ("stage-1", 2)];
    let mut id = 0;
    for (stage, total) in stages {
        id += 1;
        expected.push(format!("stage_started {id} {stage} total={total}"));
        for index in 1..=total {
            id += 1;
            expected.push(format!("step_started {id} {stage} {index}/{total}"));
            expected.push(format!("step_done {id}"));
        }
    }
    let seen: Vec<String> = events
        .iter()
        .filter_map(|v| {
            let id = v["id"].as_u64().unwrap_or(0);
            match v["type"].as_str()? {
                "stage_started" => Some(format!(
                    "stage_started {id} {} total={}",
                    v["stage"].as_str()?,
                    v["total"]
                )),
                "step_started" => Some(format!(
                    "step_started {id} {} {}/{}",
                    v["stage"].as_str()?,
                    v["index"],
                    v["total"]
                )),
                "step_done" => Some(format!("step_done {id}")),
                _ => None,
            }
        })
        .collect();
    assert_eq!(seen, expected, "{}", b.stderr);
    let base = events
        .iter()
        .filter(|v| v["type"] == "stage_started")
        .map(|v| v["base"].as_str().unwrap_or_default())
        .collect::<Vec<_>>();
    assert_eq!(base, ["scratch", "base"]);

    let step3 = events
        .iter()
        .find(|v| v["type"] == "step_started" && v["id"] == 3)
        .expect("step 3");
    assert_eq!(
        step3["text"],
        "RUN echo progress-says-hello > /hello && cat /hello"
    );
    assert!(
        events
            .iter()
            .any(|v| v["type"] == "output" && v["id"] == 3 && v["text"] == "progress-says-hello\n"),
        "{}",
        b.stderr
    );
    let copy_done = events
        .iter()
        .find(|v| v["type"] == "step_done" && v["id"] == 2)
        .expect("step 2 done");
    assert_eq!(copy_done["cached"], false);
    assert!(copy_done["seconds"].is_f64());
    assert!(copy_done["layer"]
        .as_str()
        .is_some_and(|l| l.starts_with("sha256:")));
    assert!(copy_done["layer_size"].as_u64().is_some_and(|n| n > 0));
    let env_done = events
        .iter()
        .find(|v| v["type"] == "step_done" && v["id"] == 6)
        .expect("step 6 done");
    assert!(env_done["layer"].is_null() && env_done["layer_size"].is_null());

    let written = events
        .iter()
        .position(|v| v["type"] == "image_written")
        .expect("image_written");
    let config = events[written]["config"].as_str().unwrap_or_default();
    assert!(config.starts_with("sha256:"), "{}", b.stderr);
    let last = events.last().expect("events");
    assert_eq!(last["type"], "summary", "{}", b.stderr);
    assert_eq!(last["image"], config);
    assert_eq!(last["steps_run"], 4);
    assert_eq!(last["steps_cached"], 0);
    assert!(written > kinds.iter().rposition(|k| k == "step_done").unwrap_or(0));
}

#[test]
fn rawjson_failure_is_json_too() {
    let Some((root, ctx)) = fixture("FROM scratch\nCOPY rootfs/ /\nRUN exit 4\n") else {
        return;
    };
    let b = build(root.path(), ctx.path(), &["--progress=rawjson"]);
    assert_eq!(b.code, 1, "{}", b.stderr);
    let events = json_lines(&b.stderr);
    let n = events.len();
    assert!(n >= 2, "{}", b.stderr);
    assert_eq!(events[n - 2]["type"], "step_failed", "{}", b.stderr);
    assert_eq!(events[n - 2]["id"], 3);
    assert_eq!(events[n - 1]["type"], "build_failed");
    assert!(events[n - 1]["message"]
        .as_str()
        .is_some_and(|m| m.contains("exit code 4")));
}

#[test]
fn quiet_prints_only_the_image_id() {
    let Some((root, ctx)) = fixture(DOCKERFILE) else {
        return;
    };
    let iid = root.path().join("iid");
    let iid_arg = iid.to_string_lossy().into_owned();
    for flags in [
        &["-q"][..],
        &["--progress=quiet"],
        &["-q", "--progress=quiet"],
    ] {
        let mut args = flags.to_vec();
        args.extend(["--iidfile", &iid_arg]);
        let b = build(root.path(), ctx.path(), &args);
        assert_eq!(b.code, 0, "{flags:?}: {}", b.stderr);
        let id = std::fs::read_to_string(&iid).expect("iidfile");
        assert_eq!(b.stdout, format!("{id}\n"), "{flags:?}");
        // Only warnings may be said.
        assert!(
            b.stderr.lines().all(|l| l.starts_with("WARN: ")),
            "{flags:?}: {}",
            b.stderr
        );
    }
}

#[test]
fn bad_progress_modes_are_refused() {
    let Some((root, ctx)) = fixture(DOCKERFILE) else {
        return;
    };
    for args in [&["--progress=bogus"][..], &["-q", "--progress=plain"]] {
        let b = build(root.path(), ctx.path(), args);
        assert_eq!(b.code, 2, "{args:?}: {}", b.stderr);
        assert!(b.stderr.contains("error:"), "{args:?}: {}", b.stderr);
    }
    // Refused before anything was set up.
    let left = std::fs::read_dir(root.path()).expect("root").count();
    assert_eq!(left, 0);
}

#[test]
fn tty_view_in_tmux_shows_finished_steps_and_the_summary() {
    if !have("tmux") {
        return;
    }
    let Some((root, ctx)) = fixture(DOCKERFILE) else {
        return;
    };
    let socket = root.path().join("tmux.sock");
    let marker = root.path().join("exit-code");
    let script = root.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "KILN_ROOT='{}' '{}' build --progress=tty '{}'\necho $? > '{}'\nsleep 30\n",
            root.path().display(),
            kiln_bin().display(),
            ctx.path().display(),
            marker.display()
        ),
    )
    .expect("script");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("running tmux")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        &format!("sh '{}'", script.display()),
    ]);
    assert!(
        started.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the last frame reach the pane.
    std::thread::sleep(Duration::from_millis(500));
    let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let _ = tmux(&["kill-server"]);
    let code = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(code.trim(), "0", "build did not finish well:\n{screen}");
    let line_of = |name: &str| {
        screen
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name:?} on the screen:\n{screen}"))
            .to_string()
    };
    let from = line_of("[base 1/3] FROM scratch");
    assert!(from.starts_with(" ✔ "), "{from:?}\n{screen}");
    for step in [
        "[base 2/3] COPY rootfs/ /",
        "[base 3/3] RUN echo progress-says-hello",
        "[stage-1 2/3] RUN echo second-stage",
        "[stage-1 3/3] ENV DONE=yes",
    ] {
        let line = line_of(step);
        assert!(line.contains(" DONE "), "{step}: {line:?}\n{screen}");
    }
    // The COPY's line gives the size of the layer it wrote.
    assert!(line_of("[base 2/3] COPY").contains("MiB"), "{screen}");
    assert!(
        line_of("built in ").contains("4 steps (4 run, 0 cached)"),
        "{screen}"
    );
    // Finished steps are single lines: their output is gone from the screen.
    assert!(!screen.contains("     second-stage"), "{screen}");
}

#[test]
fn a_copied_fifo_leaves_no_log_records_in_the_progress() {
    let Some((root, ctx)) = fixture(
        "FROM scratch\nCOPY rootfs/ /\nCOPY . /ctx/\nRUN test -p /ctx/pipe && echo fifo-copied\n",
    ) else {
        return;
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ctx.path().join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let b = build(root.path(), ctx.path(), &["--progress=plain"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert!(b.stderr.contains("fifo-copied"), "{}", b.stderr);
    // Nothing of the library's logs (tracing records name their module) reaches the
    // progress, and a FIFO is copied, not warned about.
    assert!(
        !b.stderr.contains("kiln_executor::") && !b.stderr.contains("kiln_snapshotter::"),
        "{}",
        b.stderr
    );
    assert!(!b.stderr.contains("COPY skipped"), "{}", b.stderr);
}
