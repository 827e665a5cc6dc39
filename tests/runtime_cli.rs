//! What a RUN step gets from the runtime, as BuildKit gives it, and options that work or
//! are refused: HOME and HOSTNAME, nothing of kiln's own environment, `--allow`
//! entitlements (`network.host`, `security.insecure`), the build's `--network` and
//! `--add-host`, `-o` image options (`name=`, `compression=`, `oci-mediatypes`), and
//! `kiln run` flags. Runs as root and (scripts/test.sh) as unprivileged users.

use std::path::Path;
use std::process::{Command, Output};

use kiln_tests::{busybox_context, combined, full_ids, kiln_bin, BUSYBOX_BASE};

fn build(root: &Path, ctx: &Path, dockerfile: &str, args: &[&str]) -> Output {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    Command::new(kiln_bin())
        .arg("build")
        .args(args)
        .arg(ctx)
        .env("KILN_ROOT", root)
        .env("KILN_LEAK_CHECK", "from-kilns-environment")
        .output()
        .expect("running kiln build")
}

#[test]
fn run_gets_home_and_hostname_and_nothing_of_kilns_environment() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let mut df = format!(
        "{BUSYBOX_BASE}RUN echo \"root home=$HOME host=$HOSTNAME leak=$KILN_LEAK_CHECK\"\n"
    );
    if full_ids() {
        df.push_str("USER app\nRUN echo \"app home=$HOME\"\nUSER 4242\nRUN echo \"nobody home=$HOME\"\nUSER root\n");
    }
    df.push_str("ENV HOME=/custom\nRUN echo \"env home=$HOME\"\n");
    let o = build(root.path(), ctx.path(), &df, &["--no-cache"]);
    let t = combined(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("root home=/root host=buildkitsandbox leak=\n"),
        "{t}"
    );
    if full_ids() {
        assert!(t.contains("app home=/home/app\n"), "{t}");
        assert!(t.contains("nobody home=/\n"), "{t}");
    }
    assert!(t.contains("env home=/custom\n"), "{t}");
}

#[test]
fn entitlements_are_needed_and_work() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let host = format!("{BUSYBOX_BASE}RUN --network=host echo host-ok\n");
    let o = build(root.path(), ctx.path(), &host, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", combined(&o));
    assert!(
        combined(&o).contains("network.host is not allowed"),
        "{}",
        combined(&o)
    );
    let o = build(root.path(), ctx.path(), &host, &["--allow", "network.host"]);
    assert!(
        o.status.success() && combined(&o).contains("host-ok"),
        "{}",
        combined(&o)
    );
    // Allowed, the step is on the host's network: the host's own interfaces, more than lo,
    // listed in the step (a step with only lo, as under --network=none, fails this).
    if let Some(want) = kiln_tests::host_interfaces() {
        let listing = format!(
            "{BUSYBOX_BASE}RUN --network=host sed 's/^/if /' /proc/net/dev\n\
             RUN --network=none sed 's/^/none /' /proc/net/dev\n"
        );
        let o = build(
            root.path(),
            ctx.path(),
            &listing,
            &["--allow", "network.host", "--no-cache", "--progress=plain"],
        );
        let t = combined(&o);
        assert!(o.status.success(), "{t}");
        let tagged = |tag: &str| -> String {
            t.lines()
                .filter_map(|l| l.split_once(&format!(" {tag} ")).map(|(_, r)| r))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(kiln_tests::interfaces(&tagged("if")), want, "{t}");
        assert_eq!(kiln_tests::interfaces(&tagged("none")), ["lo"], "{t}");
    }

    // security.insecure: every capability the namespace has, not Docker's default set.
    let caps = "RUN grep CapBnd /proc/self/status\n";
    let insecure = format!("{BUSYBOX_BASE}RUN --security=insecure grep CapBnd /proc/self/status\n");
    let o = build(root.path(), ctx.path(), &insecure, &[]);
    assert!(
        combined(&o).contains("security.insecure is not allowed"),
        "{}",
        combined(&o)
    );
    let o = build(
        root.path(),
        ctx.path(),
        &insecure,
        &["--allow", "security.insecure"],
    );
    assert!(o.status.success(), "{}", combined(&o));
    assert!(
        !combined(&o).contains("CapBnd:\t00000000a80425fb"),
        "{}",
        combined(&o)
    );
    let o = build(
        root.path(),
        ctx.path(),
        &format!("{BUSYBOX_BASE}{caps}"),
        &[],
    );
    assert!(
        combined(&o).contains("CapBnd:\t00000000a80425fb"),
        "{}",
        combined(&o)
    );

    let o = build(
        root.path(),
        ctx.path(),
        BUSYBOX_BASE,
        &["--allow", "bogus.thing"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", combined(&o));
    assert!(
        combined(&o).contains("unknown entitlement bogus.thing"),
        "{}",
        combined(&o)
    );
}

#[test]
fn build_network_and_add_host() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let df = format!(
        "{BUSYBOX_BASE}RUN echo links=$(grep -c : /proc/net/dev) && grep db.internal /etc/hosts\n"
    );
    let o = build(
        root.path(),
        ctx.path(),
        &df,
        &["--network", "none", "--add-host", "db.internal:10.1.2.3"],
    );
    let t = combined(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("links=1\n"),
        "only lo in a --network=none build: {t}"
    );
    assert!(t.contains("10.1.2.3\tdb.internal"), "{t}");
    let o = build(
        root.path(),
        ctx.path(),
        &df,
        &["--add-host", "db:not-an-ip"],
    );
    assert_ne!(o.status.code(), Some(0), "{}", combined(&o));
    let o = build(root.path(), ctx.path(), &df, &["--network", "bridge"]);
    assert_eq!(o.status.code(), Some(2), "{}", combined(&o));
}

#[test]
fn image_output_options_work_or_are_refused() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let df = format!("{BUSYBOX_BASE}RUN echo hi > /hi\n");
    let spec = format!(
        "type=oci,dest={},name=named:1,compression=gzip",
        out.display()
    );
    std::fs::create_dir_all(&out).unwrap();
    let o = build(root.path(), ctx.path(), &df, &["-o", &spec]);
    assert!(o.status.success(), "{}", combined(&o));
    // The layout's layers are gzip (the build's own are zstd) and it is named named:1;
    // the local store has the tag too.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"]["org.opencontainers.image.ref.name"], "1",
        "{index}"
    );
    let digest = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{manifest}"
        );
    }
    let store: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("index.json")).unwrap()).unwrap();
    assert!(store.to_string().contains("named:1"), "{store}");
    for bad in [
        "type=local,dest=/tmp/x,name=a",
        "type=oci,dest=/tmp/x,oci-mediatypes=false",
        "type=oci,dest=/tmp/x,compression=estargz",
        "type=oci,dest=/tmp/x,compression-level=5",
    ] {
        let o = build(root.path(), ctx.path(), &df, &["-o", bad]);
        assert_ne!(
            o.status.code(),
            Some(0),
            "{bad} was accepted: {}",
            combined(&o)
        );
    }
}

#[test]
fn kiln_run_flags_work_or_are_refused() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let o = build(root.path(), ctx.path(), BUSYBOX_BASE, &["-t", "runflags"]);
    assert!(o.status.success(), "{}", combined(&o));
    let run = |args: &[&str]| {
        Command::new(kiln_bin())
            .arg("run")
            .args(args)
            .env("KILN_ROOT", root.path())
            .output()
            .unwrap()
    };
    let o = run(&["-t", "runflags", "true"]);
    assert_ne!(o.status.code(), Some(0), "{}", combined(&o));
    assert!(combined(&o).contains("pseudo-terminal"), "{}", combined(&o));
    let o = run(&["--network", "bridge", "runflags", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", combined(&o));
    let o = run(&[
        "--rm",
        "--network",
        "none",
        "runflags",
        "sh",
        "-c",
        "echo home=$HOME host=$HOSTNAME",
    ]);
    assert!(o.status.success(), "{}", combined(&o));
    assert!(
        combined(&o).contains("home=/root host="),
        "{}",
        combined(&o)
    );
}
