//! `kiln build` end to end, from a busybox base made offline: multi-stage builds, the
//! image config and history, RUN's environment, users and network, every RUN mount type,
//! secrets and ssh agents that never reach a blob, cache mounts across builds, failures
//! that say where and why, outputs, and a killed build that leaves nothing behind (the
//! snapshotters compared: snapshotters_cli.rs). Runs as root and (scripts/test.sh) as
//! unprivileged users with and without subordinate ids.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use kiln_tests::build::{blob, copy_program_with_libs, decompressed, read_json, Fixture};
use kiln_tests::{full_ids, have, kiln_bin, sha256_hex, BUSYBOX_BASE};

/// Every blob of a root, decompressed.
fn all_blobs(root: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = root.join("blobs/sha256");
    std::fs::read_dir(&dir)
        .expect("blobs")
        .map(|e| {
            let e = e.expect("entry");
            let bytes = std::fs::read(e.path()).expect("blob");
            (
                e.file_name().to_string_lossy().into_owned(),
                decompressed(&bytes),
            )
        })
        .collect()
}

/// Paths in every layer blob (tar entries).
fn layer_paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (_, bytes) in all_blobs(root) {
        if bytes.len() < 512 || &bytes[257..262] != b"ustar" {
            continue;
        }
        let mut ar = tar::Archive::new(&bytes[..]);
        for e in ar.entries().expect("tar") {
            let e = e.expect("entry");
            out.push(e.path().expect("path").to_string_lossy().into_owned());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn marker() -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    format!(
        "kiln-marker-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

#[test]
fn multistage_image_has_docker_config_and_history() {
    let Some(f) = Fixture::new() else { return };
    let df = format!(
        "{}ENV GREETING=hello
WORKDIR /app
RUN echo \"$GREETING from $(pwd)\" > out.txt
LABEL org.example=one
EXPOSE 8080 53/udp
FROM first AS derived
LABEL org.example.derived=two
FROM scratch AS final
COPY --from=derived /app/out.txt /out.txt
ENTRYPOINT [\"/bin/cat\"]
CMD [\"/out.txt\"]
USER 1000:1000
STOPSIGNAL SIGTERM
VOLUME /data
",
        BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS first", 1)
    );
    f.ok(&df, &["-t", "multi"]);
    let (manifest, config) = f.image("multi:latest");
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/cat"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/out.txt"]));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    // COPY --from a labelled stage (its labels inherited and its own) takes files only.
    assert!(
        c.get("Labels").is_none(),
        "labels do not cross COPY --from: {c}"
    );
    assert_eq!(
        c["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    let history: Vec<(String, bool)> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            ("COPY /app/out.txt /out.txt # buildkit".to_string(), false),
            (r#"ENTRYPOINT ["/bin/cat"]"#.to_string(), true),
            (r#"CMD ["/out.txt"]"#.to_string(), true),
            ("USER 1000:1000".to_string(), true),
            ("STOPSIGNAL SIGTERM".to_string(), true),
            ("VOLUME [/data]".to_string(), true),
        ]
    );
    // The first stage, built as the target, has its own metadata.
    f.ok(&df, &["-t", "first", "--target", "first"]);
    let (_, first) = f.image("first:latest");
    assert_eq!(first["config"]["Labels"]["org.example"], "one");
    assert_eq!(
        first["config"]["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    assert_eq!(first["config"]["WorkingDir"], "/app");
    // A stage FROM the labelled stage inherits its config, labels merged with its own.
    f.ok(&df, &["-t", "derived", "--target", "derived"]);
    let (_, derived) = f.image("derived:latest");
    let d = &derived["config"];
    assert_eq!(
        d["Labels"],
        serde_json::json!({"org.example": "one", "org.example.derived": "two"}),
        "labels carry through FROM: {d}"
    );
    assert_eq!(d["WorkingDir"], "/app", "{d}");
    assert_eq!(
        d["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}}),
        "{d}"
    );
    assert!(
        d["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "GREETING=hello")),
        "{d}"
    );
}

#[test]
fn run_sees_env_args_workdir_and_shell() {
    let Some(f) = Fixture::new() else { return };
    let out = f.ok(
        &format!(
            "{BUSYBOX_BASE}ARG FROM_CLI
ARG WITH_DEFAULT=dflt
ENV E1=env-one
WORKDIR /w/sub
RUN echo \"cli=$FROM_CLI default=$WITH_DEFAULT e1=$E1 pwd=$(pwd)\"
SHELL [\"/bin/sh\", \"-ec\"]
RUN echo shell-form-through-SHELL
RUN [\"/bin/echo\", \"exec-form\", \"$E1\"]
RUN <<EOF
echo from-heredoc
EOF
"
        ),
        &["--build-arg", "FROM_CLI=given"],
    );
    assert!(
        out.contains("cli=given default=dflt e1=env-one pwd=/w/sub"),
        "{out}"
    );
    assert!(out.contains("shell-form-through-SHELL"), "{out}");
    assert!(
        out.contains("exec-form $E1"),
        "exec form is not expanded: {out}"
    );
    assert!(out.contains("from-heredoc"), "{out}");
}

#[test]
fn failed_run_names_the_line_exit_code_and_output() {
    let Some(f) = Fixture::new() else { return };
    let b = f.build(
        &format!(
            "{BUSYBOX_BASE}RUN true\nRUN seq 1 25 | sed s/^/said-/; sleep 0.3; echo on-stderr >&2; exit 3\n"
        ),
        &[],
    );
    assert_eq!(b.code, 1, "{}", b.stderr);
    assert!(b.stderr.contains("Dockerfile:4:1"), "{}", b.stderr);
    assert!(b.stderr.contains("exit code: 3"), "{}", b.stderr);
    assert!(
        b.stderr.contains(
            "/bin/sh -c seq 1 25 | sed s/^/said-/; sleep 0.3; echo on-stderr >&2; exit 3"
        ),
        "{}",
        b.stderr
    );
    // Under its heading, the step's last 20 lines (stdout and stderr, in order), none of
    // what came before them. stdout and stderr are two pipes: the pause lets the first
    // be read before the second is written (no order between pipes is promised).
    let (_, tail) = b
        .stderr
        .split_once("\nlast output:\n")
        .unwrap_or_else(|| panic!("no last output: {}", b.stderr));
    let want: Vec<String> = (7..=25)
        .map(|i| format!("said-{i}"))
        .chain(["on-stderr".to_string()])
        .collect();
    let got: Vec<&str> = tail.lines().take(want.len()).collect();
    assert_eq!(got, want, "{}", b.stderr);
    let b = f.build("FROM scratch\nFNTRYPOINT x\n", &[]);
    assert_eq!(b.code, 1);
    assert!(b.stderr.contains("Dockerfile:2:1"), "{}", b.stderr);
}

#[test]
fn secrets_never_reach_a_blob() {
    let Some(f) = Fixture::new() else { return };
    let file_marker = marker();
    let env_marker = marker();
    let secret_file = f.root().join("secret.txt");
    std::fs::write(&secret_file, &file_marker).unwrap();
    let file_hash = sha256_hex(file_marker.as_bytes());
    let env_hash = sha256_hex(env_marker.as_bytes());
    let df = format!(
        "{BUSYBOX_BASE}RUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok)\" = \"{file_hash}  -\" && stat -c '%a %u' /run/secrets/tok
RUN --mount=type=secret,id=tok,target=/custom/place,mode=0440 cat /custom/place > /dev/null && stat -c 'custom %a' /custom/place
RUN --mount=type=secret,id=envtok,env=MY_SECRET test \"$(printf %s \"$MY_SECRET\" | sha256sum)\" = \"{env_hash}  -\" && echo env-secret-ok
RUN --mount=type=secret,id=absent true && echo optional-absent-ok
RUN test ! -e /run/secrets && test ! -e /custom && echo no-traces
RUN echo after > /after
"
    );
    let out = {
        let b = f.build_with(
            &df,
            &[
                "-t",
                "secret",
                "--secret",
                &format!("id=tok,src={}", secret_file.display()),
                "--secret",
                "id=envtok,env=KILN_TEST_SECRET",
            ],
            &[("KILN_TEST_SECRET", env_marker.as_str())],
        );
        assert_eq!(b.code, 0, "{}", b.stderr);
        b.stderr
    };
    assert!(out.contains("400 0"), "{out}");
    assert!(out.contains("custom 440"), "{out}");
    assert!(out.contains("env-secret-ok"), "{out}");
    assert!(out.contains("optional-absent-ok"), "{out}");
    assert!(out.contains("no-traces"), "{out}");
    for (name, bytes) in all_blobs(f.root()) {
        for m in [&file_marker, &env_marker] {
            assert!(
                !contains(&bytes, m.as_bytes()),
                "secret found in blob {name}"
            );
        }
    }
    let paths = layer_paths(f.root());
    assert!(paths.iter().any(|p| p.contains("after")), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("run/secrets") || p.contains("custom")),
        "mount points reached a layer: {paths:?}"
    );
    // A required secret that was not given fails the build, in BuildKit's words.
    let b = f.build(
        &format!("{BUSYBOX_BASE}RUN --mount=type=secret,id=needed,required=true true\n"),
        &[],
    );
    assert_eq!(b.code, 1);
    assert!(
        b.stderr.contains("secret needed: not found"),
        "{}",
        b.stderr
    );
}

/// A secret's value is shown as `****` wherever the build would print it: RUN output
/// (also split across writes), a step name, the error of a failed RUN, and BuildKit's
/// `SecretsUsedInArgOrEnv` check warns about secret-named ARG/ENV keys and (kiln's
/// addition) a secret's value passed as a build arg or written in the Dockerfile.
#[test]
fn secret_values_are_masked_in_everything_printed() {
    let Some(f) = Fixture::new() else { return };
    let file_marker = marker();
    let env_marker = marker();
    let secret_file = f.root().join("secret.txt");
    std::fs::write(&secret_file, format!("{file_marker}\n")).unwrap();
    let half = file_marker.len() / 2;
    let (head, tail) = file_marker.split_at(half);
    let df = format!(
        "{BUSYBOX_BASE}ARG GITHUB_TOKEN=x PUBLIC_KEY=y
ENV DB_PASSWORD=z
RUN --mount=type=secret,id=tok cat /run/secrets/tok && printf 'split:%s' {head} && sleep 0.3 && printf '%s:done\\n' {tail}
RUN --mount=type=secret,id=envtok,env=MY_SECRET echo \"env=$MY_SECRET\"
RUN echo {env_marker} > /dev/null
RUN --mount=type=secret,id=tok cat /run/secrets/tok; exit 3
"
    );
    let tok = format!("id=tok,src={}", secret_file.display());
    let leaked = format!("LEAKED=pre-{env_marker}");
    let args = [
        "--no-cache",
        "--progress=plain",
        "--secret",
        &tok,
        "--secret",
        "id=envtok,env=KILN_TEST_SECRET",
        "--build-arg",
        &leaked,
    ];
    let b = f.build_with(&df, &args, &[("KILN_TEST_SECRET", env_marker.as_str())]);
    let all = format!("{}{}", b.stdout, b.stderr);
    assert_eq!(b.code, 1, "{all}");
    for m in [&file_marker, &env_marker] {
        assert!(
            !all.contains(m.as_str()),
            "a secret value was printed:\n{all}"
        );
    }
    assert!(all.contains("split:****:done"), "{all}");
    assert!(all.contains("env=****"), "{all}");
    assert!(all.contains("RUN echo **** > /dev/null"), "{all}");
    assert!(all.contains("Dockerfile:8:1"), "{all}");
    assert!(all.contains("exit code: 3"), "{all}");
    for w in [
        "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\") (line 3)",
        "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\") (line 4)",
        "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (--build-arg \"LEAKED\" holds secret \"envtok\")",
        "SecretsUsedInArgOrEnv: the Dockerfile holds the value of secret \"envtok\" (line 7)",
    ] {
        assert!(all.contains(w), "missing warning {w:?}:\n{all}");
    }
    // BuildKit's allow-list: PUBLIC_KEY is not a secret.
    assert!(!all.contains("\"PUBLIC_KEY\""), "{all}");
    // `# check=skip=` silences the rule; `error=true` turns it into a failure.
    let quiet = format!("# check=skip=SecretsUsedInArgOrEnv\n{BUSYBOX_BASE}ARG API_KEY=1\n");
    let b = f.build(&quiet, &[]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert!(!b.stderr.contains("SecretsUsedInArgOrEnv"), "{}", b.stderr);
    let strict = format!("# check=error=true\n{BUSYBOX_BASE}ARG API_KEY=1\n");
    let b = f.build(&strict, &[]);
    assert_eq!(b.code, 1, "{}", b.stderr);
    assert!(
        b.stderr
            .contains("lint violation found for rules: SecretsUsedInArgOrEnv"),
        "{}",
        b.stderr
    );
}

#[test]
fn ssh_agent_is_forwarded_and_never_reaches_a_blob() {
    let Some(f) = Fixture::new() else { return };
    let have = |p: &str| Path::new(p).exists();
    if !(have("/usr/bin/ssh-agent") && have("/usr/bin/ssh-add") && have("/usr/bin/ssh-keygen")) {
        kiln_tests::skipped("openssh-client missing");
        assert!(
            std::env::var_os("CI").is_none(),
            "openssh-client missing under CI"
        );
        return;
    }
    let key = f.root().join("id_ed25519");
    let comment = marker();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let sock = f.root().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let sshroot = f.ctx().join("sshroot");
    assert!(copy_program_with_libs("/usr/bin/ssh-add", &sshroot));
    let b = f.build_with(
        &format!(
            "{BUSYBOX_BASE}COPY sshroot/ /
RUN --mount=type=ssh test -S $SSH_AUTH_SOCK && echo sock=$SSH_AUTH_SOCK && ssh-add -l
RUN --mount=type=ssh,id=other,target=/agent,mode=0666 stat -c 'mode %a' /agent
RUN --mount=type=ssh,id=keyfile echo keyfile-agent: && ssh-add -l
RUN test ! -e /run/buildkit && test ! -e /agent && echo no-traces
"
        ),
        &[
            "-t",
            "ssh",
            "--ssh",
            "default",
            "--ssh",
            &format!("other={}", sock.display()),
            "--ssh",
            &format!("keyfile={}", key.display()),
        ],
        &[("SSH_AUTH_SOCK", sock.to_str().unwrap())],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert!(
        b.stderr.contains("sock=/run/buildkit/ssh_agent.0"),
        "{}",
        b.stderr
    );
    assert!(
        b.stderr.contains(&comment),
        "the agent's key was not listed: {}",
        b.stderr
    );
    let after_keyfile = b.stderr.rsplit("keyfile-agent:").next().unwrap_or_default();
    assert!(
        after_keyfile.contains(&comment),
        "kiln's own agent did not list the key file: {}",
        b.stderr
    );
    assert!(b.stderr.contains("mode 666"), "{}", b.stderr);
    assert!(b.stderr.contains("no-traces"), "{}", b.stderr);
    let private = std::fs::read_to_string(&key).unwrap();
    let key_body: String = private.lines().nth(1).unwrap_or_default().to_string();
    for (name, bytes) in all_blobs(f.root()) {
        assert!(
            !contains(&bytes, key_body.as_bytes()),
            "key bytes in blob {name}"
        );
    }
    assert!(!layer_paths(f.root())
        .iter()
        .any(|p| p.contains("run/buildkit")));
}

/// `--ssh ID=KEY1,KEY2,…` serves every key to the step, in each format BuildKit reads:
/// PEM RSA (PKCS#1) and EC (SEC1), PKCS#8 RSA and EC, and OpenSSH. A socket cannot be
/// combined with other paths (BuildKit's words).
#[test]
fn ssh_keys_in_pem_pkcs8_and_openssh_formats() {
    let Some(f) = Fixture::new() else { return };
    if !(have("ssh-add") && have("ssh-keygen")) {
        return;
    }
    let keys: [(&str, &[&str]); 5] = [
        ("rsa-pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]),
        ("ec-pem", &["-t", "ecdsa", "-b", "256", "-m", "PEM"]),
        ("rsa-pkcs8", &["-t", "rsa", "-b", "2048", "-m", "PKCS8"]),
        ("ec-pkcs8", &["-t", "ecdsa", "-b", "384", "-m", "PKCS8"]),
        ("ed-openssh", &["-t", "ed25519"]),
    ];
    let mut paths = Vec::new();
    let mut fingerprints = Vec::new();
    for (name, args) in &keys {
        let key = f.root().join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-N", ""])
            .args(*args)
            .arg("-f")
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen {name}");
        let fp = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub"))
            .output()
            .unwrap();
        let fp = String::from_utf8_lossy(&fp.stdout).into_owned();
        let fp = fp.split_whitespace().nth(1).unwrap_or_default().to_string();
        assert!(fp.starts_with("SHA256:"), "{name}: {fp}");
        fingerprints.push((name, fp));
        paths.push(key.display().to_string());
    }
    let first_lines: Vec<String> = paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for want in [
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ] {
        assert!(first_lines.iter().any(|l| l == want), "{first_lines:?}");
    }
    let sshroot = f.ctx().join("sshroot");
    assert!(copy_program_with_libs("/usr/bin/ssh-add", &sshroot));
    let spec = format!("multi={}", paths.join(","));
    let b = f.build(
        &format!(
            "{BUSYBOX_BASE}COPY sshroot/ /\nRUN --mount=type=ssh,id=multi,required ssh-add -l\n"
        ),
        &["--no-cache", "--ssh", &spec],
    );
    assert_eq!(b.code, 0, "{}", b.stderr);
    for (name, fp) in &fingerprints {
        assert!(
            b.stderr.contains(fp.as_str()),
            "{name} ({fp}) not listed:\n{}",
            b.stderr
        );
    }
    // One socket, or keys: never both, never two sockets.
    let sock = f.root().join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let df = format!("{BUSYBOX_BASE}RUN --mount=type=ssh,id=x true\n");
    for (spec, want) in [
        (
            format!("x={},{}", sock.display(), paths[0]),
            "only single socket allowed",
        ),
        (
            format!("x={},{}", paths[0], sock.display()),
            "invalid combination of keys and sockets",
        ),
    ] {
        let b = f.build(&df, &["--ssh", &spec]);
        assert_eq!(b.code, 1, "{spec}: {}", b.stderr);
        assert!(b.stderr.contains(want), "{spec}: {}", b.stderr);
    }
    let not_a_key = f.root().join("not-a-key");
    std::fs::write(&not_a_key, "hello\n").unwrap();
    let b = f.build(&df, &["--ssh", &format!("x={}", not_a_key.display())]);
    assert_eq!(b.code, 1, "{}", b.stderr);
    assert!(b.stderr.contains("failed to parse ssh key"), "{}", b.stderr);
}

/// A relative or empty mount target resolves against the base image's WORKDIR, as
/// BuildKit resolves it when it converts the Dockerfile: one that lands on `/` is
/// `invalid mount target "/"` at the RUN's line, before any step runs.
#[test]
fn mount_targets_resolve_against_the_base_images_workdir() {
    let Some(f) = Fixture::new() else { return };
    f.ok(
        &format!("{BUSYBOX_BASE}WORKDIR /app/sub\n"),
        &["-t", "wd-base"],
    );
    f.ok(BUSYBOX_BASE, &["-t", "root-base"]);
    let out = f.ok(
        "FROM wd-base
RUN --mount=type=tmpfs,target=rel grep -q ' /app/sub/rel tmpfs' /proc/mounts && echo rel-ok
RUN --mount=type=tmpfs,target= grep -q ' /app/sub tmpfs' /proc/mounts && echo empty-ok
RUN --mount=type=tmpfs,target=.. grep -q ' /app tmpfs' /proc/mounts && echo up-ok
",
        &["--no-cache"],
    );
    for w in ["rel-ok", "empty-ok", "up-ok"] {
        assert!(out.contains(w), "{w}: {out}");
    }
    for (df, line) in [
        ("FROM wd-base\nRUN echo ran-before-the-check\nRUN --mount=type=cache,target=../.. true\n", 3),
        ("FROM root-base\nRUN echo ran-before-the-check\nRUN --mount=type=bind,target= true\n", 3),
        ("FROM root-base\nRUN --mount=type=tmpfs,target=. true\n", 2),
    ] {
        let b = f.build(df, &["--no-cache"]);
        let all = format!("{}{}", b.stdout, b.stderr);
        assert_eq!(b.code, 1, "{df}: {all}");
        assert!(
            all.contains(&format!("Dockerfile:{line}:1: invalid mount target \"/\"\n")),
            "{df}: {all}"
        );
        assert!(all.contains(&format!(" {line} | RUN --mount=")), "{df}: {all}");
        assert!(!all.contains("\n#2 "), "a step ran: {all}");
    }
}

#[test]
fn cache_tmpfs_and_bind_mounts() {
    let Some(f) = Fixture::new() else { return };
    std::fs::write(f.ctx().join("ctx-file"), "from-context").unwrap();
    let df = format!(
        "{}RUN --mount=type=cache,target=/cache echo run >> /cache/log && echo runs=$(wc -l < /cache/log)
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && grep -q ' /scratch tmpfs' /proc/mounts && echo tmpfs-ok
RUN --mount=type=bind,target=/ctx cat /ctx/ctx-file && ! touch /ctx/new 2>/dev/null && echo ro-ok
RUN --mount=type=bind,target=/ctx,rw touch /ctx/new && echo rw-ok
FROM scratch AS second
COPY rootfs/ /
RUN --mount=type=bind,from=first,source=/etc,target=/other grep -q app /other/passwd && echo from-stage-ok
RUN test ! -e /cache && test ! -e /scratch && test ! -e /ctx && test ! -e /other && echo no-traces
",
        BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS first", 1)
    );
    let first = f.ok(&df, &[]);
    assert!(first.contains("runs=1"), "{first}");
    assert!(
        first.contains("tmpfs-ok") && first.contains("from-context"),
        "{first}"
    );
    assert!(
        first.contains("ro-ok") && first.contains("rw-ok"),
        "{first}"
    );
    assert!(
        first.contains("from-stage-ok") && first.contains("no-traces"),
        "{first}"
    );
    assert!(
        !f.ctx().join("new").exists(),
        "an rw bind mount wrote to the context"
    );
    // The steps are in the build cache now: --no-cache runs them again.
    let second = f.ok(&df, &["--no-cache"]);
    assert!(
        second.contains("runs=2"),
        "the cache did not persist: {second}"
    );
    // Ownership and mode of a new cache directory.
    let owned = "RUN --mount=type=cache,id=owned,target=/c,uid=1000,gid=2000,mode=0750 stat -c 'cache %u %g %a' /c\n";
    let b = f.build(&format!("{BUSYBOX_BASE}{owned}"), &[]);
    if full_ids() {
        assert_eq!(b.code, 0, "{}", b.stderr);
        assert!(b.stderr.contains("cache 1000 2000 750"), "{}", b.stderr);
    } else {
        assert_eq!(b.code, 1, "{}", b.stderr);
        assert!(b.stderr.contains("1000:2000"), "{}", b.stderr);
    }
    // Locked and private sharing work (one user at a time here).
    f.ok(
        &format!(
            "{BUSYBOX_BASE}RUN --mount=type=cache,target=/l,sharing=locked touch /l/x
RUN --mount=type=cache,target=/l,sharing=private ls /l
"
        ),
        &[],
    );
}

#[test]
fn users_and_network() {
    let Some(f) = Fixture::new() else { return };
    let b = f.build(
        &format!(
            "{BUSYBOX_BASE}USER app
RUN echo \"ids $(id -u) $(id -g) $(id -G)\"
"
        ),
        &[],
    );
    if full_ids() {
        assert_eq!(b.code, 0, "{}", b.stderr);
        assert!(b.stderr.contains("ids 1000 1000 1000 2000"), "{}", b.stderr);
    } else {
        assert_eq!(b.code, 1);
        assert!(b.stderr.contains("subordinate ids"), "{}", b.stderr);
        assert!(
            b.stderr.contains("single id mapping"),
            "warning once: {}",
            b.stderr
        );
    }
    let out = f.ok(
        &format!(
            "{BUSYBOX_BASE}RUN --network=none ip -o link | awk '{{print \"link\", $2}}'; echo routes=$(ip route | wc -l)\n"
        ),
        &[],
    );
    let links: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.starts_with('#')
                && l.split_once(' ')
                    .is_some_and(|(_, r)| r.starts_with("link "))
        })
        .collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].ends_with("link lo:"), "{out}");
    assert!(out.contains("routes=0"), "{out}");
    let b = f.build(
        &format!("{BUSYBOX_BASE}RUN --security=insecure true\n"),
        &[],
    );
    assert_eq!(b.code, 1);
    // Without --allow security.insecure, BuildKit's entitlement error.
    assert!(
        b.stderr.contains("security.insecure is not allowed"),
        "{}",
        b.stderr
    );
}

#[test]
fn outputs_and_base_images() {
    let Some(f) = Fixture::new() else { return };
    let oci = f.root().join("out-oci");
    let local = f.root().join("out-local");
    let tarball = f.root().join("fs.tar");
    let iid = f.root().join("iid");
    let o1 = format!("type=oci,dest={}", oci.display());
    let o2 = format!("type=local,dest={}", local.display());
    let o3 = format!("type=tar,dest={}", tarball.display());
    let i = iid.display().to_string();
    f.ok(
        &format!("{BUSYBOX_BASE}RUN echo report > /report.txt\n"),
        &[
            "-t",
            "base:1",
            "-o",
            &o1,
            "-o",
            &o2,
            "-o",
            &o3,
            "--iidfile",
            &i,
        ],
    );
    assert_eq!(
        std::fs::read_to_string(local.join("report.txt")).unwrap(),
        "report\n"
    );
    // The tarball is the same filesystem as the local export: the same paths, the RUN's
    // file with its content, busybox whole.
    let mut in_tar = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let mut content = Vec::new();
        if entry.header().entry_type().is_file() {
            entry.read_to_end(&mut content).unwrap();
        }
        let kind = entry.header().entry_type();
        assert!(
            in_tar.insert(path.clone(), (kind, content)).is_none(),
            "{path} twice in the tarball"
        );
    }
    let (kind, content) = &in_tar["report.txt"];
    assert!(kind.is_file(), "{kind:?}");
    assert_eq!(content, b"report\n");
    let (kind, content) = &in_tar["bin/busybox"];
    assert!(kind.is_file(), "{kind:?}");
    assert_eq!(*content, std::fs::read("/bin/busybox").unwrap());
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(&p, base, out);
            }
        }
    }
    let mut exported = Vec::new();
    walk(&local, &local, &mut exported);
    exported.sort();
    let tarred: Vec<&String> = in_tar.keys().filter(|k| !k.is_empty()).collect();
    assert_eq!(tarred, exported.iter().collect::<Vec<_>>());
    let index = read_json(&oci.join("index.json"));
    let m = &index["manifests"][0];
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "1");
    let manifest = read_json(&blob(&oci, m["digest"].as_str().unwrap()));
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(manifest["config"]["digest"].as_str().unwrap(), id);
    for l in manifest["layers"].as_array().unwrap() {
        assert!(blob(&oci, l["digest"].as_str().unwrap()).exists());
    }
    // FROM an image of the local store, and from an OCI layout given as a named context.
    let out = f.ok("FROM base:1\nRUN cat /report.txt\n", &[]);
    assert!(out.contains("report"), "{out}");
    let ctx = format!("mybase=oci-layout://{}:1", oci.display());
    let out = f.ok(
        "FROM mybase\nRUN cat /report.txt && echo via-layout\n",
        &["--build-context", &ctx],
    );
    assert!(out.contains("via-layout"), "{out}");
    // Not in the store: the registry is asked (unreachable here), and the error names the
    // full reference, why, and the FROM line.
    let b = f.build("FROM not-here:1\n", &[]);
    assert_eq!(b.code, 1);
    assert!(
        b.stderr
            .contains("Dockerfile:1:1: docker.io/library/not-here:1: ")
            && b.stderr.contains("FROM not-here:1"),
        "{}",
        b.stderr
    );
}

#[test]
fn killed_build_leaves_no_mounts_or_processes() {
    for snapshotter in ["overlay", "fuse"] {
        killed_build(snapshotter);
    }
}

fn killed_build(snapshotter: &str) {
    let Some(f) = Fixture::new() else { return };
    let tag = marker();
    std::fs::write(
        f.ctx().join("Dockerfile"),
        format!("{BUSYBOX_BASE}RUN echo started; sleep 1000 {tag}\n"),
    )
    .unwrap();
    let mut child = Command::new(kiln_bin())
        .args(["build", "--snapshotter", snapshotter])
        .arg(f.ctx())
        .env("KILN_ROOT", f.root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("started") {
        let n = err.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "build ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    child.kill().unwrap();
    let _ = child.wait();
    let root = f.root().to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let procs = processes_with(&tag);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if procs.is_empty() && !mounts.contains(&root) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{snapshotter}: left behind: processes {procs:?}, mounts under {root}: {}",
            mounts.contains(&root)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The store is usable again.
    let out = f.ok(&format!("{BUSYBOX_BASE}RUN echo again\n"), &[]);
    assert!(out.contains("again"), "{out}");
}

fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if contains(&cmd, needle.as_bytes()) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn copy_and_add_follow_dockerignore_chown_chmod_and_unpack_archives() {
    let Some(f) = Fixture::new() else { return };
    let c = f.ctx();
    std::fs::write(
        c.join(".dockerignore"),
        "*.md\n!README.md\nignored-dir\n**/*.tmp\n",
    )
    .unwrap();
    for (p, body) in [
        ("a.md", "a"),
        ("README.md", "readme"),
        ("ignored-dir/x", "x"),
        ("sub/y.tmp", "y"),
        ("sub/z.txt", "z"),
        ("payload/data.txt", "packed"),
    ] {
        std::fs::create_dir_all(c.join(p).parent().unwrap()).unwrap();
        std::fs::write(c.join(p), body).unwrap();
    }
    for (name, flag) in [
        ("p.tar.gz", "-z"),
        ("p.tar.bz2", "-j"),
        ("p.tar.xz", "-J"),
        ("p.tar", ""),
    ] {
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(c).arg("-c");
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        let st = cmd
            .arg("-f")
            .arg(c.join(name))
            .arg("payload")
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = f.ok(
        &format!(
            "{BUSYBOX_BASE}COPY . /ctx/
RUN cd /ctx && find . -path ./rootfs -prune -o -type f -print | sort | tr '\\n' ' ' && echo
COPY --chmod=u+x,go-w sub/z.txt /moded
RUN stat -c 'moded %a' /moded
ADD p.tar.gz /gz/
ADD p.tar.bz2 /bz/
ADD p.tar.xz /xz/
ADD p.tar /plain/
RUN cat /gz/payload/data.txt /bz/payload/data.txt /xz/payload/data.txt /plain/payload/data.txt | tr '\\n' ' ' && echo
COPY p.tar.gz /not-unpacked.tgz
RUN test -f /not-unpacked.tgz && echo copy-keeps-archives
"
        ),
        &[],
    );
    let listing = out
        .lines()
        .find(|l| l.contains("./README.md"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(listing.contains("./sub/z.txt"), "{listing}");
    for gone in ["a.md", "ignored-dir", "y.tmp"] {
        assert!(
            !listing.contains(gone),
            "{gone} is in .dockerignore: {listing}"
        );
    }
    assert!(out.contains("moded 744"), "{out}");
    assert!(out.contains("packedpackedpackedpacked"), "{out}");
    // --chown by name, resolved in the destination stage's /etc.
    let b = f.build(
        &format!("{BUSYBOX_BASE}COPY --chown=app:extra sub/z.txt /owned\nRUN stat -c 'owned %U %G' /owned\n"),
        &[],
    );
    if full_ids() {
        assert_eq!(b.code, 0, "{}", b.stderr);
        assert!(b.stderr.contains("owned app extra"), "{}", b.stderr);
    } else {
        assert_eq!(b.code, 1, "{}", b.stderr);
        assert!(b.stderr.contains("subordinate ids"), "{}", b.stderr);
    }
    assert!(out.contains("copy-keeps-archives"), "{out}");
    let b = f.build(&format!("{BUSYBOX_BASE}COPY a.md /\n"), &[]);
    assert_eq!(b.code, 1);
    assert!(b.stderr.contains("not found"), "{}", b.stderr);
}

#[test]
fn onbuild_triggers_of_a_base_image_run_in_the_child() {
    let Some(f) = Fixture::new() else { return };
    f.ok(
        &format!("{BUSYBOX_BASE}ONBUILD RUN echo triggered-from-base > /trigger\nONBUILD ENV FROM_TRIGGER=yes\n"),
        &["-t", "with-triggers"],
    );
    let (_, config) = f.image("with-triggers:latest");
    assert_eq!(config["config"]["OnBuild"].as_array().unwrap().len(), 2);
    let out = f.ok(
        "FROM with-triggers\nRUN cat /trigger && echo env=$FROM_TRIGGER\n",
        &["-t", "child"],
    );
    assert!(out.contains("triggered-from-base"), "{out}");
    assert!(out.contains("env=yes"), "{out}");
    let (_, child) = f.image("child:latest");
    assert!(
        child["config"].get("OnBuild").is_none(),
        "triggers do not carry on: {child}"
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_clients_accept_the_images() {
    let Some(f) = Fixture::new() else { return };
    let oci = f.root().join("layout");
    let docker = f.root().join("image.tar");
    let o1 = format!("type=oci,dest={}", oci.display());
    let o2 = format!("type=docker,dest={}", docker.display());
    let tag = format!("kiln-clients-test:{}", std::process::id());
    f.ok(
        &format!(
            "{}RUN echo built-by-kiln > /message
FROM scratch
COPY --from=builder /bin/busybox /bin/busybox
COPY --from=builder /message /message
ENV GREETING=hi
CMD [\"/bin/busybox\", \"cat\", \"/message\"]
",
            BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS builder", 1)
        ),
        &["--compression", "gzip", "-t", &tag, "-o", &o1, "-o", &o2],
    );
    let index = read_json(&oci.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    if have("skopeo") {
        let out = run_ok(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}", oci.display())),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], manifest_digest);
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{v}");
        assert!(
            v["Env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "GREETING=hi"),
            "{v}"
        );
        // The store itself is an OCI layout skopeo reads by tag.
        let out = run_ok(
            Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci:{}:{tag}", f.root().display())),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], manifest_digest);
    }
    if have("umoci") {
        let bundle = f.root().join("bundle");
        let image = format!("{}:{}", oci.display(), tag.rsplit(':').next().unwrap());
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image", &image])
                .arg(&bundle),
        );
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/message")).unwrap(),
            "built-by-kiln\n"
        );
        let mut entries: Vec<String> = std::fs::read_dir(bundle.join("rootfs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["bin", "message"]);
    }
    // podman loads and runs it: as root, or rootless as this user.
    if let Some(c) = kiln_tests::containers::Containers::new() {
        let loaded = run_ok(c.podman().arg("load").arg("-i").arg(&docker));
        assert!(loaded.contains("kiln-clients-test"), "{loaded}");
        let printed = run_ok(c.run_container().args([&format!("localhost/{tag}")]));
        assert_eq!(printed, "built-by-kiln\n");
    }
}

#[test]
fn images_rmi_save_load_and_run() {
    let Some(f) = Fixture::new() else { return };
    f.ok(
        &format!("{BUSYBOX_BASE}RUN echo in-image > /m\nCMD [\"cat\", \"/m\"]\n"),
        &["-t", "tool:1"],
    );
    let kiln = |args: &[&str]| {
        Command::new(kiln_bin())
            .args(args)
            .env("KILN_ROOT", f.root())
            .output()
            .unwrap()
    };
    let listed = String::from_utf8_lossy(&kiln(&["images"]).stdout).into_owned();
    assert!(listed.contains("tool:1"), "{listed}");
    let ran = kiln(&["run", "--rm", "tool:1"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "in-image\n");
    let ran = kiln(&["run", "tool:1", "sh", "-c", "echo custom; exit 5"]);
    assert_eq!(ran.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "custom\n");
    for format in ["docker", "oci"] {
        let archive = f.root().join(format!("saved-{format}.tar"));
        let out = kiln(&[
            "save",
            "--format",
            format,
            "-o",
            archive.to_str().unwrap(),
            "tool:1",
        ]);
        assert!(out.status.success(), "{out:?}");
        let other = tempfile::tempdir().unwrap();
        let out = Command::new(kiln_bin())
            .args(["load", "-i", archive.to_str().unwrap()])
            .env("KILN_ROOT", other.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = Command::new(kiln_bin())
            .args(["run", "tool:1"])
            .env("KILN_ROOT", other.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "in-image\n",
            "{format}: {out:?}"
        );
    }
    assert!(kiln(&["rmi", "tool:1"]).status.success());
    let gone = kiln(&["rmi", "tool:1"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&kiln(&["images"]).stdout).contains("tool:1"));
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let Some(f) = Fixture::new() else { return };
    // Each builder waits (up to 20 s) for the other to have started: only a build that
    // runs them side by side gets through.
    let meet = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=rendezvous,target=/sync touch /sync/{me} && \
             for i in $(seq 200); do test -e /sync/{other} && echo {me}-met-{other} && exit 0; sleep 0.1; done; exit 1\n"
        )
    };
    let df = format!(
        "{}{}{}{}FROM scratch\nCOPY --from=a /bin/busybox /a\nCOPY --from=b /bin/busybox /b\n",
        BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS a", 1),
        meet("a", "b"),
        BUSYBOX_BASE.replacen("FROM scratch", "FROM scratch AS b", 1),
        meet("b", "a"),
    );
    let out = f.ok(&df, &[]);
    assert!(out.contains("a-met-b") && out.contains("b-met-a"), "{out}");
}

/// A one-file HTTP server on 127.0.0.1 (for ADD of URLs); returns its port.
fn serve_file(body: &'static [u8]) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
                req.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(body);
        }
    });
    port
}

#[test]
fn add_downloads_urls_and_checks_checksums() {
    let Some(f) = Fixture::new() else { return };
    let body: &'static [u8] = b"downloaded payload\n";
    let port = serve_file(body);
    let good = sha256_hex(body);
    let out = f.ok(
        &format!(
            "{BUSYBOX_BASE}ADD http://127.0.0.1:{port}/files/data.txt?x=1 /downloads/
ADD --checksum=sha256:{good} http://127.0.0.1:{port}/files/data.txt /checked.txt
RUN stat -c 'mode %a' /downloads/data.txt && cat /checked.txt
"
        ),
        &[],
    );
    assert!(out.contains("mode 600"), "{out}");
    assert!(out.contains("downloaded payload"), "{out}");
    let bad = "0".repeat(64);
    let b = f.build(
        &format!(
            "{BUSYBOX_BASE}ADD --checksum=sha256:{bad} http://127.0.0.1:{port}/d.txt /d.txt\n"
        ),
        &[],
    );
    assert_eq!(b.code, 1);
    assert!(b.stderr.contains("digest mismatch"), "{}", b.stderr);
}

#[test]
fn user_root_by_number_works_in_every_mapping() {
    let Some(f) = Fixture::new() else { return };
    let out = f.ok(
        &format!("{BUSYBOX_BASE}USER 0:0\nRUN id -u\nUSER root\nRUN echo as-root\n"),
        &[],
    );
    assert!(out.contains("as-root"), "{out}");
}
