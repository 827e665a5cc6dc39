//! The snapshotters side by side, end to end: the same image byte for byte from every
//! snapshotter and identity, real workloads (unpack, copy, rename across layers, git)
//! on each, what a later step reads of an earlier one's writes, processes a step leaves
//! running, and the snapshot benchmark. Runs as root and (scripts/test.sh) as
//! unprivileged users with and without subordinate ids.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use kiln_tests::build::{blob, copy_program_with_libs, decompressed, reproducible_build, Fixture};
use kiln_tests::{kiln_bin, real_root, sha256_hex, BUSYBOX_BASE};

/// The same image, byte for byte (manifest, config and every compressed blob), from
/// every snapshotter, twice, and — run as root with CI's users present — as the user with
/// subordinate ids and the one with the single mapping.
#[test]
fn reproducible_across_builds_snapshotters_and_identities() {
    let Some(f) = Fixture::new() else { return };
    let df = format!(
        "{BUSYBOX_BASE}RUN echo data > /f && mkdir -p /d && touch /d/x && ln -s f /l\nCMD [\"cat\", \"/f\"]\n"
    );
    // A context other users can read (for the runs as them).
    let shared = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = shared.path().join("ctx");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(f.ctx())
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(copied.success());
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&ctx)
        .status();
    std::fs::write(ctx.join("Dockerfile"), &df).unwrap();
    let mut digests = Vec::new();
    for sn in ["overlay", "copy", "fuse", "overlay"] {
        digests.push((
            format!("{sn} as this user"),
            reproducible_build(&ctx, sn, None),
        ));
    }
    let users = ["kiln-ci", "kiln-ci-single"];
    let have_users = users.iter().all(|u| {
        Command::new("id")
            .arg(u)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if real_root() && have_users {
        for u in users {
            for sn in ["overlay", "fuse"] {
                digests.push((
                    format!("{sn} as {u}"),
                    reproducible_build(&ctx, sn, Some(u)),
                ));
            }
        }
    } else if real_root() {
        kiln_tests::skipped("reproducibility across identities: CI's users are missing");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI's users missing under CI"
        );
    }
    assert!(digests[0].1.starts_with("sha256:"), "{digests:?}");
    assert!(
        digests.iter().all(|(_, d)| *d == digests[0].1),
        "{digests:#?}"
    );
}

#[test]
fn workloads_give_the_same_image_on_every_snapshotter() {
    let Some(f) = Fixture::new() else { return };
    // Real work on the stage filesystem: unpack a tree, copy and chmod it, rename
    // directories across layers, delete, hard-link, and truncate. (The tarball comes from
    // the context: a tar made inside a RUN would record the build's own clock.)
    let src = f.ctx().join("tree");
    for d in 0..8 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for i in 0..20 {
            std::fs::write(src.join(format!("d{d}/f{i}")), format!("{d}-{i}\n")).unwrap();
        }
    }
    let st = Command::new("tar")
        .args([
            "--mtime=@1000000000",
            "--owner=0",
            "--group=0",
            "--sort=name",
            "-cf",
        ])
        .arg(f.ctx().join("t.tar"))
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&src).unwrap();
    let df = format!(
        "{BUSYBOX_BASE}COPY t.tar /
RUN mkdir /src && tar -xf /t.tar -C /src
RUN mkdir /unpacked && tar -xf /t.tar -C /unpacked && cp -a /unpacked /copy && chmod -R go-w /copy && find /copy -type f | wc -l
RUN mv /unpacked/d1 /moved && mv /src /src-renamed && rm -rf /unpacked/d2 && rm /t.tar && ln /copy/d3/f1 /copy/link && : > /copy/d3/f2
RUN sync && find / -xdev -path /proc -prune -o -print | wc -l
"
    );
    let mut digests = Vec::new();
    std::fs::write(f.ctx().join("Dockerfile"), &df).unwrap();
    for sn in ["overlay", "fuse", "copy"] {
        digests.push((sn, reproducible_build(f.ctx(), sn, None)));
    }
    assert!(
        digests.iter().all(|(_, d)| *d == digests[0].1),
        "{digests:?}"
    );
}

#[test]
fn snapshot_benchmark_runs_every_backend() {
    let out = Command::new(kiln_bin())
        .args([
            "bench",
            "snapshot",
            "--files",
            "300",
            "--size",
            "1",
            "--json",
            "--backends",
            "fuse,overlay,copy,plain",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{v}");
    for r in results {
        assert!(r.get("skipped").is_none(), "{r}");
        assert!(r["seconds"]["extract"].as_f64().is_some(), "{r}");
    }
}

#[test]
fn git_works_inside_run_on_every_snapshotter() {
    let Some(f) = Fixture::new() else { return };
    if !Path::new("/usr/bin/git").exists() {
        kiln_tests::skipped("/usr/bin/git missing");
        assert!(std::env::var_os("CI").is_none(), "git missing under CI");
        return;
    }
    assert!(copy_program_with_libs("/usr/bin/git", &f.ctx().join("sys")));
    let df = format!(
        "{BUSYBOX_BASE}COPY sys/ /
RUN git init -q /repo && cd /repo && echo hello > f && git add f \\
 && git -c user.email=k@example.com -c user.name=kiln commit -qm first \\
 && echo again >> f && git -c user.email=k@example.com -c user.name=kiln commit -qam second \\
 && echo commits=$(git log --oneline | wc -l) && git fsck && git gc -q && git status --short | wc -l
"
    );
    for sn in ["fuse", "overlay"] {
        // --no-cache: the second snapshotter runs the step too (not the cached result).
        let out = f.ok(&df, &["--snapshotter", sn, "--no-cache"]);
        assert!(out.contains("commits=2"), "{sn}: {out}");
    }
}

#[test]
fn changes_across_steps_read_back_the_same_on_fuse_as_on_kernel_overlayfs() {
    let Some(f) = Fixture::new() else { return };
    // What a later step must see of an earlier one's writes (the writeback cache, and
    // passthrough as root, keep pages the diff and the next mount must not miss): a
    // binary written in one step and executed (mapped) in the next; truncate, then
    // extend; a hard link made in one step and written through in the next; a directory
    // renamed after its commit. Kernel overlayfs (BuildKit's snapshotter) is the
    // reference: writing through a hard link to a lower file copies up that name alone,
    // so the other name keeps the old content. (The copy backend copies a snapshot's hard
    // links as links, as overlayfs with `index=on` would keep them: not compared here.)
    let df = format!(
        "{BUSYBOX_BASE}RUN mkdir -p /opt && cp /bin/busybox /opt/busybox && printf 'hello world\\n' > /t && mkdir -p /d/sub && echo in > /d/sub/f && echo one > /h1 && ln /h1 /h2
RUN /opt/busybox echo mapped-ok && truncate -s 3 /t && printf 'XYZ' >> /t && echo \"t=$(cat /t)\" && echo two >> /h2 && echo \"h1=$(cat /h1 | tr '\\n' ,) h2=$(cat /h2 | tr '\\n' ,)\" && mv /d /renamed && echo \"f=$(cat /renamed/sub/f)\"
RUN echo \"again t=$(cat /t) h2=$(cat /h2 | tr '\\n' ,) f=$(cat /renamed/sub/f) d=$(ls -d /d 2>/dev/null | wc -l)\"
"
    );
    let mut seen = Vec::new();
    for sn in ["overlay", "fuse"] {
        let out = f.ok(
            &df,
            &["--snapshotter", sn, "--no-cache", "--progress", "plain"],
        );
        let lines: Vec<String> = out
            .lines()
            .filter(|l| !l.contains(" RUN "))
            .filter_map(|l| {
                ["mapped-ok", "t=", "h1=", "f=", "again "]
                    .iter()
                    .find_map(|k| l.find(k).map(|i| l[i..].to_string()))
            })
            .collect();
        seen.push((sn, lines));
    }
    for (sn, lines) in &seen {
        assert_eq!(lines, &seen[0].1, "{sn} against {}", seen[0].0);
    }
    std::fs::write(f.ctx().join("Dockerfile"), &df).unwrap();
    assert!(
        seen[0].1.iter().any(|l| l == "h1=one, h2=one,two,"),
        "{seen:?}"
    );
    let digests: Vec<(&str, String)> = ["overlay", "fuse"]
        .into_iter()
        .map(|sn| (sn, reproducible_build(f.ctx(), sn, None)))
        .collect();
    assert!(
        digests.iter().all(|(_, d)| *d == digests[0].1),
        "{digests:?}"
    );
}

/// A step's background processes end with the step: a writer still appending through
/// an fd it holds, and one that would write a file later, are gone before the layer is
/// written (the step's pid namespace dies with its first process), so the layer, the
/// next step's view and the committed snapshot below it agree, line for line complete.
/// Kernel overlayfs would let a surviving writer change the committed upper under the
/// next step; FUSE's writeback cache must have flushed before the diff.
#[test]
fn processes_a_step_leaves_running_end_before_its_layer() {
    let Some(f) = Fixture::new() else { return };
    let df = format!(
        "{BUSYBOX_BASE}RUN : > /log; (exec 3>>/log; i=0; while :; do echo \"line $i\" >&3; i=$((i + 1)); done) & (sleep 2; echo late > /late) & exec 4</log; sleep 1; echo started
RUN sleep 2; n1=$(wc -l < /log); sleep 1; n2=$(wc -l < /log); echo \"lines=$n1,$n2 torn=$(grep -cv '^line [0-9]*$' /log) late=$(ls /late 2>/dev/null | wc -l) sum=$(sha256sum /log | cut -d' ' -f1)\"
"
    );
    for sn in ["overlay", "fuse", "copy"] {
        let out = f.ok(
            &df,
            &[
                "--snapshotter",
                sn,
                "--no-cache",
                "--progress",
                "plain",
                "-t",
                sn,
            ],
        );
        let line = out
            .lines()
            .filter(|l| !l.contains(" RUN "))
            .find_map(|l| l.find("lines=").map(|i| &l[i..]))
            .unwrap_or_else(|| panic!("{sn}: no report in\n{out}"));
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("{sn}: no {k} in {line}"))
                .to_string()
        };
        let lines = field("lines=");
        let (n1, n2) = lines.split_once(',').expect("two counts");
        assert_eq!(n1, n2, "{sn}: /log grew under the next step: {line}");
        assert!(n1.parse::<u64>().is_ok_and(|n| n > 0), "{sn}: {line}");
        assert_eq!(field("torn="), "0", "{sn}: a partial line in /log: {line}");
        assert_eq!(
            field("late="),
            "0",
            "{sn}: a background process outlived its step"
        );
        // The layer holds the /log the next step read.
        let (manifest, _) = f.image(&format!("{sn}:latest"));
        let mut in_layer = None;
        for l in manifest["layers"].as_array().expect("layers") {
            let bytes = std::fs::read(blob(f.root(), l["digest"].as_str().expect("digest")))
                .expect("layer blob");
            let tar_bytes = decompressed(&bytes);
            let mut ar = tar::Archive::new(&tar_bytes[..]);
            for e in ar.entries().expect("tar") {
                let mut e = e.expect("entry");
                if e.path()
                    .expect("path")
                    .to_string_lossy()
                    .trim_start_matches("./")
                    == "log"
                {
                    let mut content = Vec::new();
                    e.read_to_end(&mut content).expect("log");
                    in_layer = Some(content);
                }
            }
        }
        let in_layer = in_layer.unwrap_or_else(|| panic!("{sn}: no /log in any layer"));
        assert_eq!(
            sha256_hex(&in_layer),
            field("sum="),
            "{sn}: the layer's /log differs"
        );
    }
}
