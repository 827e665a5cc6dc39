//! Errors the Dockerfile frontend raises before anything runs, end to end through the
//! `kiln` binary: each bad Dockerfile fails `kiln build` (on a busybox context) and
//! `kiln debug plan` with exit code 1, the same `Dockerfile:LINE:COL: message`, a code
//! frame showing every line of the instruction, and nothing run or stored.

use std::path::Path;
use std::process::Command;

use kiln_tests::{busybox_context, kiln, kiln_bin, text, BUSYBOX_BASE};

/// A RUN whose output ("frontend-42-ran") differs from its text, placed before the bad
/// instruction: seeing the output means a step ran.
const MARKER_RUN: &str = "RUN echo frontend-$((40+2))-ran\n";
const MARKER_OUTPUT: &str = "frontend-42-ran";

/// One Dockerfile that must be refused.
struct Refused {
    /// The Dockerfile.
    dockerfile: String,
    /// `LINE:COL` the error is reported at.
    at: &'static str,
    /// The start of the message.
    message: &'static str,
    /// The lines the code frame shows, in order.
    frame: &'static [&'static str],
}

/// Busybox base, the marker RUN, then `tail` (its first line is line 4).
fn after_marker(tail: &str) -> String {
    format!("{BUSYBOX_BASE}{MARKER_RUN}{tail}")
}

fn refused_cases() -> Vec<Refused> {
    vec![
        Refused {
            dockerfile: after_marker("RUN --mount=type=cache \\\n    echo in-cache\n"),
            at: "4:1",
            message: "invalid mount target \"/\"",
            frame: &["RUN --mount=type=cache \\", "    echo in-cache"],
        },
        Refused {
            dockerfile: after_marker("RUN --mount=type=tmpfs,target=/ true\n"),
            at: "4:1",
            message: "invalid mount target \"/\"",
            frame: &["RUN --mount=type=tmpfs,target=/ true"],
        },
        Refused {
            dockerfile: after_marker("WORKDIR /app\nRUN --mount=type=bind,target=.. true\n"),
            at: "5:1",
            message: "invalid mount target \"/\"",
            frame: &["RUN --mount=type=bind,target=.. true"],
        },
        Refused {
            dockerfile: after_marker("RUN --mount=type=ssh,source=/agent true\n"),
            at: "4:1",
            message: "ssh does not support source",
            frame: &["RUN --mount=type=ssh,source=/agent true"],
        },
        Refused {
            dockerfile: after_marker("STOPSIGNAL SIGNOPE\n"),
            at: "4:1",
            message: "invalid signal: SIGNOPE",
            frame: &["STOPSIGNAL SIGNOPE"],
        },
        Refused {
            dockerfile: after_marker("STOPSIGNAL 0\n"),
            at: "4:1",
            message: "invalid signal: 0",
            frame: &["STOPSIGNAL 0"],
        },
        Refused {
            dockerfile: after_marker("ARG SIG=NOPE\nSTOPSIGNAL \\\n  SIG$SIG\n"),
            at: "5:1",
            message: "invalid signal: SIGNOPE",
            frame: &["STOPSIGNAL \\", "  SIG$SIG"],
        },
        Refused {
            dockerfile: after_marker(
                "RUN --network=bridge \\\n  --mount=type=cache,target=/c \\\n  true\n",
            ),
            at: "4:1",
            message: "invalid network mode \"bridge\" (allowed: default, none, host)",
            frame: &[
                "RUN --network=bridge \\",
                "  --mount=type=cache,target=/c \\",
                "  true",
            ],
        },
        Refused {
            dockerfile: after_marker("RUN --security=insecur true\n"),
            at: "4:1",
            message: "security \"insecur\" is not valid (did you mean insecure?)",
            frame: &["RUN --security=insecur true"],
        },
        Refused {
            dockerfile: after_marker("RUN --mount=type=cache,target=/c,sharing=everyone true\n"),
            at: "4:1",
            message: "unsupported sharing value \"everyone\" (allowed: shared, private, locked)",
            frame: &["RUN --mount=type=cache,target=/c,sharing=everyone true"],
        },
        Refused {
            dockerfile: after_marker("RUN --mount=type=overlay,target=/o true\n"),
            at: "4:1",
            message:
                "unsupported mount type \"overlay\" (allowed: bind, cache, tmpfs, secret, ssh)",
            frame: &["RUN --mount=type=overlay,target=/o true"],
        },
        Refused {
            dockerfile: after_marker("COPY --chmod=u*x rootfs/bin/busybox /b\n"),
            at: "4:1",
            message: "invalid chmod parameter \"u*x\"",
            frame: &["COPY --chmod=u*x rootfs/bin/busybox /b"],
        },
        Refused {
            dockerfile: format!(
                "# syntax=example.com/frontends/dockerfile:2\n{BUSYBOX_BASE}{MARKER_RUN}"
            ),
            at: "1:1",
            message: "kiln cannot run external frontends: \"example.com/frontends/dockerfile:2\"",
            frame: &["# syntax=example.com/frontends/dockerfile:2"],
        },
        Refused {
            dockerfile: format!(
                "# syntax=docker/dockerfile:1\n# check=error=maybe\n{BUSYBOX_BASE}{MARKER_RUN}"
            ),
            at: "2:1",
            message: "failed to parse check options: failed to parse check option \"error=maybe\"",
            frame: &["# check=error=maybe"],
        },
    ]
}

/// Checks one failed command's output against `case`; `what` names the command.
fn assert_refused(what: &str, code: Option<i32>, stdout: &str, stderr: &str, case: &Refused) {
    let ctx = format!(
        "{what} of\n{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        case.dockerfile
    );
    assert_eq!(code, Some(1), "{ctx}");
    let head = format!("Dockerfile:{}: {}", case.at, case.message);
    assert!(stderr.contains(&head), "wanted {head:?} in {ctx}");
    let first_line: usize = case
        .at
        .split(':')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut rest = stderr;
    for (n, line) in (first_line..).zip(case.frame) {
        let shown = format!("{n:>5} | {line}\n");
        let Some(at) = rest.find(&shown) else {
            panic!("frame line {shown:?} missing (or out of order) in {ctx}");
        };
        rest = &rest[at + shown.len()..];
    }
    assert!(
        !stdout.contains(MARKER_OUTPUT) && !stderr.contains(MARKER_OUTPUT),
        "a step ran: {ctx}"
    );
}

/// How many images the store at `root` has tagged.
fn stored_manifests(root: &Path) -> usize {
    let Ok(bytes) = std::fs::read(root.join("index.json")) else {
        return 0;
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).expect("index.json");
    index["manifests"].as_array().map_or(0, Vec::len)
}

/// `kiln build -t frontend-test` of `dockerfile` in `ctx`, storing into `root`.
fn build(ctx: &Path, root: &Path, dockerfile: &str) -> std::process::Output {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    Command::new(kiln_bin())
        .args(["build", "-t", "frontend-test"])
        .arg(ctx)
        .env("KILN_ROOT", root)
        .output()
        .expect("running kiln build")
}

#[test]
fn bad_dockerfiles_fail_build_and_debug_plan_alike_before_anything_runs() {
    let Some(ctx) = busybox_context() else { return };
    for case in refused_cases() {
        let root = tempfile::tempdir().expect("root");
        let out = build(ctx.path(), root.path(), &case.dockerfile);
        let (stdout, stderr) = text(&out);
        assert_refused("kiln build", out.status.code(), &stdout, &stderr, &case);
        assert_eq!(stored_manifests(root.path()), 0, "{stderr}");

        let out = kiln(&["debug", "plan", "-"], Some(case.dockerfile.as_bytes()));
        let (stdout, stderr) = text(&out);
        assert_refused(
            "kiln debug plan",
            out.status.code(),
            &stdout,
            &stderr,
            &case,
        );
    }
}

#[test]
fn dockerfile_frontend_directives_and_valid_values_are_accepted() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().expect("root");
    let dockerfile = format!(
        "# syntax=docker.io/docker/dockerfile:1.7-labs@sha256:{}\n# check=skip=JSONArgsRecommended,NoSuchCheck;error=true\n\
         {BUSYBOX_BASE}WORKDIR /work\nRUN --mount=type=cache \\\n    --network=none \\\n    touch in-cache\nSTOPSIGNAL sigrtmin+3\n{MARKER_RUN}",
        "0".repeat(64)
    );
    let out = kiln(&["debug", "plan", "-"], Some(dockerfile.as_bytes()));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let out = build(ctx.path(), root.path(), &dockerfile);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stored_manifests(root.path()), 1, "{stderr}");
    // The marker is seen when its step runs (so its absence above means something).
    assert!(
        stdout.contains(MARKER_OUTPUT) || stderr.contains(MARKER_OUTPUT),
        "{stdout}{stderr}"
    );
}
