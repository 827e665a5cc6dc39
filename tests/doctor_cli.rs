//! `kiln doctor` end to end: every check is reported; under CI (where `.ci/run` prepared
//! the machine) user namespaces, /dev/fuse and overlayfs inside kiln's namespaces work,
//! both as root and as the unprivileged user.

use kiln_tests::{kiln, text};

#[test]
fn doctor_reports_every_check() {
    let out = kiln(&["doctor"], None);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for name in [
        "kernel",
        "user namespaces",
        "subordinate ids",
        "/dev/fuse",
        "overlay in user namespace",
        "FUSE passthrough",
        "cgroups",
        "snapshotter auto",
    ] {
        assert!(stdout.contains(name), "missing {name:?} in:\n{stdout}");
    }
    for line in stdout.lines().filter(|l| l.starts_with("FAIL")) {
        // Every failing check says what to do.
        let next = stdout
            .lines()
            .skip_while(|l| *l != line)
            .nth(1)
            .unwrap_or_default();
        assert!(next.contains("fix:"), "{line} has no fix line");
    }
    if std::env::var_os("CI").is_some() {
        for must in [
            "ok   user namespaces",
            "ok   /dev/fuse",
            "ok   overlay in user namespace",
        ] {
            assert!(
                stdout.contains(must),
                "under CI expected {must:?}:\n{stdout}"
            );
        }
        assert!(stdout.contains("picks overlay"), "{stdout}");
        // Only real root may register backing files; Linux 6.9 brought passthrough.
        let expected = if !kiln_tests::real_root() {
            "FUSE passthrough           not used: only real root"
        } else if kiln_tests::kernel_at_least(6, 9) {
            "FUSE passthrough           used:"
        } else {
            "FUSE passthrough           asked for and not given"
        };
        assert!(
            stdout.contains(expected),
            "expected {expected:?}:\n{stdout}"
        );
    }
}
