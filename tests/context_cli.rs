//! Contexts and Dockerfile discovery as BuildKit does them: a context with only
//! `dockerfile` (lower case) builds and `Dockerfile` wins when both exist;
//! `--build-context NAME=oci-layout://PATH@sha256:…` picks a manifest, or this platform's
//! manifest of an index, by digest, and `PATH:TAG@sha256:…` must agree with the tag.

use std::path::Path;
use std::process::Command;

use kiln_tests::{busybox_context, combined, kiln_at, BUSYBOX_BASE};

#[test]
fn a_lower_case_dockerfile_is_found_and_dockerfile_wins() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let dir = ctx.path().to_str().unwrap();
    std::fs::write(
        ctx.path().join("dockerfile"),
        format!("{BUSYBOX_BASE}RUN echo from-lower-case\n"),
    )
    .unwrap();
    let o = kiln_at(root.path(), &["build", "--no-cache", dir]);
    assert!(o.status.success(), "{}", combined(&o));
    assert!(combined(&o).contains("from-lower-case"), "{}", combined(&o));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN echo from-upper-case\n"),
    )
    .unwrap();
    let o = kiln_at(root.path(), &["build", "--no-cache", dir]);
    assert!(o.status.success(), "{}", combined(&o));
    assert!(combined(&o).contains("from-upper-case") && !combined(&o).contains("from-lower-case"));
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!("sha256:{hex}")
}

#[test]
fn oci_layout_contexts_by_digest() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let layout = root.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN echo inside-the-layout > /marker\n"),
    )
    .unwrap();
    let out = format!("type=oci,dest={},name=base:1", layout.display());
    let o = kiln_at(
        root.path(),
        &["build", "-o", &out, ctx.path().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", combined(&o));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let size = index["manifests"][0]["size"].as_u64().unwrap();
    // An index naming it for this platform and a manifest for another.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 2, "platform": {"os": "plan9", "architecture": "mips"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": size, "platform": {"os": "linux", "architecture": arch}},
        ]
    });
    let tmp = layout.join("index-blob");
    std::fs::write(&tmp, serde_json::to_vec(&idx).unwrap()).unwrap();
    let idx_digest = sha256(&tmp);
    std::fs::rename(
        &tmp,
        layout
            .join("blobs/sha256")
            .join(idx_digest.trim_start_matches("sha256:")),
    )
    .unwrap();

    let user = tempfile::tempdir().unwrap();
    std::fs::write(
        user.path().join("Dockerfile"),
        "FROM base\nRUN cat /marker\n",
    )
    .unwrap();
    let build = |reference: &str| {
        let arg = format!("base=oci-layout://{}{reference}", layout.display());
        kiln_at(
            root.path(),
            &[
                "build",
                "--no-cache",
                "--build-context",
                &arg,
                user.path().to_str().unwrap(),
            ],
        )
    };
    for reference in [
        format!("@{manifest}"),
        format!(":1@{manifest}"),
        format!("@{idx_digest}"),
    ] {
        let o = build(&reference);
        assert!(o.status.success(), "{reference}: {}", combined(&o));
        assert!(
            combined(&o).contains("inside-the-layout"),
            "{reference}: {}",
            combined(&o)
        );
    }
    let o = build(&format!(":1@{idx_digest}"));
    assert_eq!(o.status.code(), Some(1), "{}", combined(&o));
    assert!(combined(&o).contains("not sha256:"), "{}", combined(&o));
}

#[test]
fn onbuild_triggers_of_an_oci_layout_base_run_heredocs_and_copy_from_stages() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let layout = root.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("{BUSYBOX_BASE}ONBUILD RUN <<EOF\necho trigger-heredoc-ran\nEOF\nONBUILD COPY --from=helper /made /made\n"),
    )
    .unwrap();
    let out = format!("type=oci,dest={}", layout.display());
    let o = kiln_at(
        root.path(),
        &["build", "-o", &out, ctx.path().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", combined(&o));
    // `helper` is needed only by the image's trigger.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "{}RUN echo made-by-helper > /made\nFROM base\nRUN cat /made\n",
            BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS helper", 1)
        ),
    )
    .unwrap();
    let arg = format!("base=oci-layout://{}", layout.display());
    let o = kiln_at(
        root.path(),
        &[
            "build",
            "--no-cache",
            "--build-context",
            &arg,
            ctx.path().to_str().unwrap(),
        ],
    );
    let t = combined(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("trigger-heredoc-ran") && t.contains("made-by-helper"),
        "{t}"
    );
}
