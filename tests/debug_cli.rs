//! End to end through the `kiln` binary: `kiln debug parse` and `kiln debug plan` on real
//! Dockerfiles, their exit codes and their error frames.

use kiln_tests::{kiln, text};

/// The multi-stage fixture, embedded so the test also runs where the checkout is unreadable.
const MULTISTAGE: &[u8] = include_bytes!("fixtures/multistage/Dockerfile");

#[test]
fn plan_prunes_unused_stages_and_groups_parallel_ones() {
    let out = kiln(&["debug", "plan", "-"], Some(MULTISTAGE));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("target: final (stage 6)"), "{stdout}");
    assert!(
        stdout.contains("stages: 7 in the file, 5 needed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("level 0: branch-slim, backend, frontend, docs"),
        "{stdout}"
    );
    assert!(stdout.contains("level 1: final"), "{stdout}");
    assert!(
        stdout.contains("[1] branch-full FROM image debian:bookworm (not needed, skipped)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[5] debug FROM image busybox (not needed, skipped)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[6] final FROM stage branch-slim (level 1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("needs stage docs via mount_from"),
        "{stdout}"
    );
}

#[test]
fn plan_follows_build_args_and_target() {
    let out = kiln(
        &[
            "debug",
            "plan",
            "--build-arg",
            "VARIANT=full",
            "--format",
            "json",
            "-",
        ],
        Some(MULTISTAGE),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let stages = v["stages"].as_array().expect("stages");
    let needed: Vec<&str> = stages
        .iter()
        .filter(|s| s["needed"] == true)
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert_eq!(
        needed,
        ["branch-full", "backend", "frontend", "docs", "final"]
    );

    let out = kiln(
        &["debug", "plan", "--target", "DOCS", "-"],
        Some(MULTISTAGE),
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("stages: 7 in the file, 1 needed"),
        "{stdout}"
    );

    let out = kiln(
        &["debug", "plan", "--target", "bakend", "-"],
        Some(MULTISTAGE),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("target stage \"bakend\" could not be found (did you mean backend?)"),
        "{stderr}"
    );
}

#[test]
fn parse_prints_instructions_and_json() {
    let out = kiln(&["debug", "parse", "-"], Some(MULTISTAGE));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("4:1-4\t(arg \"VARIANT=slim\")"), "{stdout}");
    assert!(
        stdout.contains("heredoc <<EOF fd=0 expand=true (14 bytes)"),
        "{stdout}"
    );

    let out = kiln(
        &["debug", "parse", "--format", "json", "-"],
        Some(MULTISTAGE),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["directives"]["syntax"], "docker/dockerfile:1");
    let run = &v["instructions"][8];
    assert_eq!(run["keyword"], "run");
    assert_eq!(
        run["flags"][0],
        "--mount=type=cache,target=/root/.cache/go-build"
    );
}

#[test]
fn errors_name_file_line_column_and_show_the_line() {
    let df = b"FROM busybox\nFNTRYPOINT [\"/app\"]\n";
    let out = kiln(&["debug", "plan", "-"], Some(df));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("Dockerfile:2:1: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"),
        "{stderr}"
    );
    assert!(stderr.contains("2 | FNTRYPOINT [\"/app\"]"), "{stderr}");

    let out = kiln(&["debug", "plan", "--no-such-flag", "-"], Some(df));
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn plan_refuses_what_lowering_refuses() {
    let out = kiln(
        &["debug", "plan", "-"],
        Some(b"FROM scratch\nCOPY --chmod=u*x a /b\n"),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("Dockerfile:2:1: invalid chmod parameter \"u*x\"\n"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}
