//! `kiln bench snapshot` runs its workload on kiln's backends and reports every phase,
//! the stack-depth one (`--layers N`) included: a number for each backend that mounted
//! the stack (the depth phase also checks the top layer's file wins), none for a plain
//! directory. Small sizes: this checks the benchmark works, not how fast anything is.
//! Runs as root and (scripts/test.sh) as `kiln-ci` and `kiln-ci-single`.

use kiln_tests::{combined, kiln};

#[test]
fn snapshot_bench_reports_every_phase_with_a_deep_stack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kiln(
        &[
            "bench",
            "snapshot",
            "--files",
            "40",
            "--size",
            "1",
            "--layers",
            "60",
            "--backends",
            "fuse,overlay,copy,plain",
            "--json",
            "--dir",
            &dir.path().to_string_lossy(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", combined(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", combined(&out)));
    assert_eq!(v["layers"], 60);
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{v}");
    for r in results {
        let name = r["backend"].as_str().unwrap_or_default();
        assert!(r.get("skipped").is_none(), "{name} skipped: {v}");
        let s = &r["seconds"];
        for phase in ["extract", "stat", "read", "meta", "modify"] {
            assert!(s[phase].as_f64().is_some(), "{name}: no {phase}: {v}");
        }
        if name == "plain" {
            assert!(s["depth"].is_null() && s["commit"].is_null(), "{v}");
        } else {
            assert!(s["commit"].as_f64().is_some(), "{name}: no commit: {v}");
            assert!(
                s["depth"].as_f64().is_some_and(|d| d > 0.0),
                "{name}: no depth: {v}"
            );
        }
    }
}
