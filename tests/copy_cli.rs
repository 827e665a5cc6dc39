//! COPY and ADD as BuildKit does them, end to end: archives matched by a wildcard are
//! unpacked, `ADD --chown` owns the unpacked entries, `.wh.` names in a user's archive are
//! plain files, an existing destination directory keeps its owner and mode, `--chmod`
//! gives the parent directories it creates the same mode, FIFOs and sockets are copied.
//! Runs as root and (scripts/test.sh) as unprivileged users.

use std::path::Path;
use std::process::{Command, Output};

use kiln_tests::{busybox_context, combined, full_ids, kiln_bin, BUSYBOX_BASE};

fn build(root: &Path, ctx: &Path, dockerfile: &str) -> Output {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    Command::new(kiln_bin())
        .args(["build", "--no-cache"])
        .arg(ctx)
        .env("KILN_ROOT", root)
        .output()
        .expect("running kiln build")
}

/// A tar at `path` with `files` (name, content) owned by 0:0.
fn tar_file(path: &Path, files: &[(&str, &str)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn add_unpacks_every_archive_a_wildcard_matches() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    tar_file(&ctx.path().join("a1.tar"), &[("one", "1")]);
    tar_file(&ctx.path().join("a2.tar"), &[("two", "2")]);
    let o = build(
        root.path(),
        ctx.path(),
        &format!("{BUSYBOX_BASE}ADD a*.tar /dest\nRUN cat /dest/one /dest/two\n"),
    );
    assert!(o.status.success(), "{}", combined(&o));
    assert!(combined(&o).contains("12"), "{}", combined(&o));
    // Several plain files still need a directory destination.
    std::fs::write(ctx.path().join("p1.txt"), "x").unwrap();
    std::fs::write(ctx.path().join("p2.txt"), "y").unwrap();
    let o = build(
        root.path(),
        ctx.path(),
        &format!("{BUSYBOX_BASE}ADD p*.txt /dest\n"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", combined(&o));
    assert!(
        combined(&o).contains("the destination must be a directory and end with a /"),
        "{}",
        combined(&o)
    );
}

#[test]
fn whiteout_names_in_a_users_archive_are_plain_files() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    tar_file(
        &ctx.path().join("wh.tar"),
        &[("d/.wh.keep", "plain"), ("d/.wh..wh..opq", "plain too")],
    );
    let df = format!(
        "{BUSYBOX_BASE}RUN mkdir -p /d && echo kept > /d/keep\nADD wh.tar /\nRUN cat /d/keep && ls -a /d | tr '\\n' ' '\n"
    );
    let o = build(root.path(), ctx.path(), &df);
    let t = combined(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("kept"), "the archive deleted /d/keep: {t}");
    assert!(t.contains(".wh.keep") && t.contains(".wh..wh..opq"), "{t}");
}

#[test]
fn ownership_and_modes_follow_buildkit() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    tar_file(&ctx.path().join("owned.tar"), &[("a/f", "x")]);
    std::fs::create_dir_all(ctx.path().join("src/sub")).unwrap();
    std::fs::write(ctx.path().join("src/sub/file"), "y").unwrap();
    std::fs::write(ctx.path().join("f"), "z").unwrap();
    let ids = full_ids();
    let (chown, expect_owner) = if ids {
        ("--chown=1000:2000 ", "1000:2000")
    } else {
        ("", "0:0")
    };
    let df = format!(
        "{BUSYBOX_BASE}RUN mkdir -m 0700 /existing\n\
         ADD {chown}owned.tar /unpacked/\n\
         COPY {chown}src/ /existing/\n\
         COPY --chmod=777 f /parent/deeper/f\n\
         RUN stat -c '%n %u:%g %a' /unpacked/a /unpacked/a/f /existing /existing/sub /existing/sub/file /parent /parent/deeper /parent/deeper/f /etc\n"
    );
    let o = build(root.path(), ctx.path(), &df);
    let t = combined(&o);
    assert!(o.status.success(), "{t}");
    let has = |line: &str| t.lines().any(|l| l.ends_with(line));
    assert!(has(&format!("/unpacked/a/f {expect_owner} 644")), "{t}");
    // A parent the archive does not list is made as Docker's unpacker makes it: root's.
    assert!(has("/unpacked/a 0:0 755"), "{t}");
    // The existing destination keeps its owner and mode; what is copied is owned.
    assert!(has("/existing 0:0 700"), "{t}");
    assert!(
        has(&format!("/existing/sub/file {expect_owner} 644")),
        "{t}"
    );
    // --chmod=777: the file and the parents it creates; /etc untouched.
    assert!(
        has("/parent 0:0 777") && has("/parent/deeper 0:0 777"),
        "{t}"
    );
    assert!(has("/parent/deeper/f 0:0 777"), "{t}");
    assert!(has("/etc 0:0 755"), "{t}");
}

#[test]
fn fifos_and_sockets_are_copied_without_hanging() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    let special = ctx.path().join("special");
    std::fs::create_dir_all(&special).unwrap();
    assert!(Command::new("mkfifo")
        .arg(special.join("pipe"))
        .status()
        .unwrap()
        .success());
    let _listener = std::os::unix::net::UnixListener::bind(special.join("sock")).unwrap();
    let o = build(
        root.path(),
        ctx.path(),
        &format!("{BUSYBOX_BASE}COPY special/ /special/\nRUN test -p /special/pipe && test -S /special/sock && echo specials-ok\n"),
    );
    assert!(o.status.success(), "{}", combined(&o));
    assert!(combined(&o).contains("specials-ok"), "{}", combined(&o));
}

/// The manifest of the image `iid` names, from the root's OCI layout.
fn last_layer(root: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|n| n.ends_with(tag))
        })
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let digest = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    layers[layers.len() - 1]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn copy_link_makes_a_layer_independent_of_what_is_below() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx.path().join("app")).unwrap();
    std::fs::write(ctx.path().join("app/main.sh"), "echo linked\n").unwrap();
    let tagged = |tag: &str, before: &str| {
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("{BUSYBOX_BASE}RUN {before}\nCOPY --link app/ /opt/app/\nRUN stat -c '%n %a %u:%g %s' /opt/app/main.sh\n"),
        )
        .unwrap();
        Command::new(kiln_bin())
            .args(["build", "-t", tag])
            .arg(ctx.path())
            .env("KILN_ROOT", root.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap()
    };
    let a = tagged("linked:a", "echo one > /one");
    assert!(a.status.success(), "{}", combined(&a));
    assert!(
        combined(&a).contains("/opt/app/main.sh 644 0:0 12"),
        "{}",
        combined(&a)
    );
    let b = tagged(
        "linked:b",
        "echo two > /two && mkdir -p /opt && chmod 700 /opt && touch -d @1600000000 /opt",
    );
    assert!(b.status.success(), "{}", combined(&b));
    // The --link layer is the same blob whatever came before it (the RUN after it makes
    // no layer: it only reads).
    assert_eq!(last_layer(root.path(), "a"), last_layer(root.path(), "b"));
}

/// A tar of `(name, symlink target or None, content)` entries: symlinks, directories
/// (names ending in `/`) and files.
fn tar_with_links(path: &Path, entries: &[(&str, Option<&str>, &str)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, link, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
            None if name.ends_with('/') => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_cksum();
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            None => {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
        }
    }
    b.finish().unwrap();
}

/// ADD of an archive goes through absolute symlinks, the archive's own or the image's,
/// inside the tree it unpacks into (BuildKit unpacks in a root at the destination, where
/// an absolute link starts from that root); a link that climbs out is refused.
#[test]
fn add_archive_entries_go_through_absolute_symlinks_inside_the_tree() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    tar_with_links(
        &ctx.path().join("links.tar"),
        &[
            ("etc-link", Some("/etc"), ""),
            ("etc-link/added.conf", None, "via-archive-link"),
            ("libalias/from-tar", None, "via-image-link"),
        ],
    );
    tar_with_links(
        &ctx.path().join("nested.tar"),
        &[
            ("l", Some("/inner"), ""),
            ("inner/", None, ""),
            ("l/f", None, "nested-through-link"),
        ],
    );
    let o = build(
        root.path(),
        ctx.path(),
        &format!(
            "{BUSYBOX_BASE}RUN mkdir -p /usr/lib && ln -s /usr/lib /libalias
ADD links.tar /
ADD nested.tar /dst/
RUN cat /etc/added.conf /usr/lib/from-tar /dst/inner/f && test -L /etc-link && test -L /libalias
"
        ),
    );
    let out = combined(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("via-archive-linkvia-image-linknested-through-link"),
        "{out}"
    );
    tar_with_links(
        &ctx.path().join("escape.tar"),
        &[("up", Some("../../.."), ""), ("up/pwned", None, "x")],
    );
    let o = build(
        root.path(),
        ctx.path(),
        &format!("{BUSYBOX_BASE}ADD escape.tar /dst/\n"),
    );
    let out = combined(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("up/pwned"), "{out}");
    assert!(out.contains("Dockerfile:3"), "{out}");
}

/// `COPY --parents` keeps the parent chain BuildKit keeps (its TestCopyParents,
/// TestCopyRelativeParents and TestCopyParentsMissingDirectory): the full path without
/// a `/./` pivot, the part after the first pivot with one, wildcards on both sides,
/// `**`, and only the directories a match needs.
#[test]
fn copy_parents_keeps_the_chain_buildkit_keeps() {
    let Some(ctx) = busybox_context() else { return };
    let root = tempfile::tempdir().unwrap();
    for (p, body) in [
        ("foo1/foo2/bar", "testing"),
        ("foo1/foo2/baz", "testing2"),
        ("x/y/z", "pivoted"),
        ("x/other", "not-copied"),
    ] {
        let path = ctx.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let df = format!(
        "{base}WORKDIR /test
RUN mkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2 && touch a/b/c/d/foo a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz
FROM scratch
COPY rootfs/ /
COPY --parents foo1/foo2/bar /
COPY --parents ./x/./y/z /px/
WORKDIR /t
COPY --parents foo1/foo2/ba* .
COPY --from=base --parents /test/a/b/./c/d /middle/
COPY --from=base --parents /test/a/b/c/d/. /end/
COPY --from=base --parents ./test/a/b/c/d /start/
COPY --from=base --parents /test/a/./b/./c /double/
COPY --from=base --parents /test/a/./*/c /wildcard/
COPY --from=base --parents /test/a/b*/./c/**/e /dw/
COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /di/
COPY --from=base --parents /test/a/b3*/c /wn/
COPY --from=base --parents /test/a/b/./c3* /wa/
COPY --from=base --parents --exclude=c/d/foo --exclude=c/d/e /test/a/b/./c/d /ex/
RUN set -e; cat /foo1/foo2/bar /t/foo1/foo2/bar /t/foo1/foo2/baz /px/y/z; echo; \\
  test ! -e /px/x; test ! -e /px/other; test ! -e /foo1/foo2/baz; \\
  test -d /middle/c/d/e; test -f /middle/c/d/foo; test ! -d /middle/a; test ! -d /middle/e; \\
  test -d /end/test/a/b/c/d/e; test -f /end/test/a/b/c/d/foo; \\
  test -d /start/test/a/b/c/d/e; test -f /start/test/a/b/c/d/foo; \\
  test -d /double/b/c/d/e; test -f /double/b/c/d/foo; test ! -e /double/a; \\
  test -d /wildcard/b/c/d/e; test -f /wildcard/b2/c/d/e/bar; test ! -e /wildcard/b/c2; \\
  test -f /dw/c/d/e/bay; test -f /dw/c/d/e/bar; test ! -e /dw/c/d/foo; test ! -e /dw/b; \\
  test -f /di/d/e/baz; test ! -e /di/d/e/bay; test -f /di/d/e2/baz; test -f /di/c/d/e/bar; \\
  test ! -e /di/d/foo; test ! -e /di/c/d/foo; \\
  test -d /ex/c/d; test ! -e /ex/c/d/e; test ! -e /ex/c/d/foo; \\
  test -d /wn; test -z \"$(ls -A /wn)\"; test -d /wa; test -z \"$(ls -A /wa)\"; \\
  echo parents-ok
",
        base = BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS base", 1)
    );
    // Each check on its own (set -e ignores a failure inside an && list).
    assert!(!df[df.find("RUN set -e").unwrap()..].contains("&&"));
    let o = build(root.path(), ctx.path(), &df);
    let out = combined(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("testingtestingtesting2pivoted"), "{out}");
    assert!(out.contains("parents-ok"), "{out}");
    // A source without wildcards must exist (BuildKit: "/test/nonexistent-file": not found).
    let o = build(
        root.path(),
        ctx.path(),
        &format!("{BUSYBOX_BASE}COPY --parents /x/nonexistent-file /out/\n"),
    );
    let out = combined(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("\"/x/nonexistent-file\": not found"), "{out}");
}
