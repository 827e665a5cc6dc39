//! `kiln bench snapshot` runs its workload on kiln's backends and reports every phase,
//! the stack-depth one (`--layers N`) included: a number for each backend that mounted
//! the stack (the depth phase also checks the top layer's file wins), none for a plain
//! directory; and each phase's peak RSS of the serving side: a positive number for kiln's
//! FUSE overlay (served in the bench's own process), none where the kernel serves the
//! mount. Small sizes: this checks the benchmark works, not how fast anything is.
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
        let rss = &r["peak_rss_kib"];
        for phase in [
            "extract", "stat", "read", "meta", "modify", "commit", "depth",
        ] {
            if name == "fuse" {
                assert!(
                    rss[phase].as_u64().is_some_and(|k| k > 0),
                    "fuse: no peak RSS for {phase}: {v}"
                );
            } else {
                assert!(
                    rss.get(phase).is_some_and(|k| k.is_null()),
                    "{name}: a peak RSS for {phase}, or no entry: {v}"
                );
            }
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

#[test]
fn snapshot_bench_table_has_a_peak_rss_row_per_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = kiln(
        &[
            "bench",
            "snapshot",
            "--files",
            "20",
            "--size",
            "1",
            "--backends",
            "fuse,overlay",
            "--dir",
            &dir.path().to_string_lossy(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", combined(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let rss: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("peak RSS"))
        .skip(1)
        .collect();
    let row = |name: &str| -> Vec<String> {
        rss.iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no peak RSS row for {name}:\n{table}"))
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    let fuse = row("fuse");
    assert_eq!(fuse.len(), 7, "{table}");
    // Every phase but depth (no --layers) has a positive figure in MiB.
    for v in &fuse[..6] {
        assert!(
            v.parse::<f64>().is_ok_and(|m| m > 0.0),
            "fuse: {v}:\n{table}"
        );
    }
    assert_eq!(fuse[6], "-", "{table}");
    assert!(row("overlay").iter().all(|v| v == "-"), "{table}");
}
