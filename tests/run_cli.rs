//! RUN's sandbox end to end through `kiln debug run`, in a busybox root filesystem made
//! offline from Debian's busybox-static: exit codes and output, pid/uts/mount isolation,
//! /proc, /dev and /etc files, `--network=none`, processes left running are killed, and
//! nothing of the sandbox's own stays in the root. Runs as root and (scripts/test.sh) as an
//! unprivileged user.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_tests::{kiln, text};

/// A busybox root in a fresh temp dir, or `None` (with a visible line) without busybox.
fn busybox_root() -> Option<(tempfile::TempDir, PathBuf)> {
    let tmp = kiln_tests::busybox_context()?;
    let root = tmp.path().join("rootfs");
    Some((tmp, root))
}

/// Whether this process can have ids beyond its own in a build: real root, or subordinate
/// ids (CI's test user has them).
fn full_ids() -> bool {
    rustix::process::geteuid().is_root()
        || (std::env::var_os("CI").is_some()
            && std::env::var("KILN_TEST_IDS").as_deref() != Ok("single"))
}

fn run(root: &Path, extra: &[&str], script: &str) -> (i32, String) {
    let mut args = vec!["debug", "run"];
    args.extend_from_slice(extra);
    let root = root.to_string_lossy().into_owned();
    args.extend_from_slice(&[root.as_str(), "--", "sh", "-c", script]);
    let out = kiln(&args, None);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[test]
fn exit_codes_and_output() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let (code, out) = run(&root, &[], "echo to-stdout; echo to-stderr >&2; exit 7");
    assert_eq!(code, 7, "{out}");
    assert!(
        out.contains("to-stdout") && out.contains("to-stderr"),
        "{out}"
    );
    let (code, out) = run(&root, &[], "exec /nonexistent");
    assert_ne!(code, 0, "{out}");
    // stdout and stderr arrive in the order they were written, as in a terminal.
    let (code, out) = run(
        &root,
        &[],
        "for i in $(seq 1 40); do echo out-$i; echo err-$i >&2; done",
    );
    assert_eq!(code, 0, "{out}");
    let expected: String = (1..=40).map(|i| format!("out-{i}\nerr-{i}\n")).collect();
    assert_eq!(out, expected);
}

#[test]
fn isolated_like_a_container() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let (code, out) = run(
        &root,
        &["--env", "GREETING=hi there", "--cwd", "/work/dir"],
        "echo pid=$$; hostname; id -u; pwd; echo \"$GREETING\"; ls /dev; head -1 /etc/hosts; \
         tr '\\0' ' ' </proc/1/cmdline; echo; echo ok > /dev/null && echo devnull-ok",
    );
    assert_eq!(code, 0, "{out}");
    for want in [
        "pid=2",
        "\nkiln\n",
        "\n0\n",
        "/work/dir",
        "hi there",
        "urandom",
        "shm",
        "127.0.0.1\tlocalhost",
        "__kiln-sandbox-pid1",
        "devnull-ok",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host.contains(&root.to_string_lossy().into_owned()),
        "a mount leaked to the host"
    );
}

#[test]
fn docker_default_capabilities() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let (code, out) = run(&root, &[], "grep -E '^Cap(Bnd|Eff)' /proc/self/status");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
}

#[test]
fn killing_kiln_ends_the_step() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let marker = format!("{}", 800_000 + std::process::id() % 90_000);
    let mut child = std::process::Command::new(kiln_tests::kiln_bin())
        .args(["debug", "run"])
        .arg(&root)
        .args(["--", "sleep", &marker])
        .spawn()
        .expect("spawn kiln");
    let sleeping = |m: &str| {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            let c = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&c).replace('\0', " ").trim() == format!("sleep {m}")
        })
    };
    let t = Instant::now();
    while !sleeping(&marker) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sleeping(&marker), "the step did not start");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let t = Instant::now();
    while sleeping(&marker) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!sleeping(&marker), "the step outlived kiln");
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host.contains(&root.to_string_lossy().into_owned()),
        "a mount outlived kiln"
    );
}

#[test]
fn user_and_other_ids_with_a_full_mapping() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    if !full_ids() {
        println!("run_cli: full-mapping checks skipped (no subordinate ids here)");
        return;
    }
    let (code, out) = run(
        &root,
        &[],
        "touch /f && chown 1234:1234 /f && stat -c '%u:%g' /f",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1234:1234"), "{out}");
    let (code, out) = run(
        &root,
        &["--user", "app"],
        "id -u; id -G; grep CapEff /proc/self/status",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1000\n1000 2000\n"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "a non-root USER has no capabilities: {out}"
    );
    let (code, out) = run(&root, &["--user", "4242:77"], "id -u; id -g; id -G");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4242\n77\n77\n"), "{out}");
    let (code, out) = run(&root, &["--user", "nobody"], "true");
    assert_eq!(code, 125, "{out}");
    assert!(out.contains("unable to find user nobody"), "{out}");
}

#[test]
fn single_mapping_says_what_it_cannot_do() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    if rustix::process::geteuid().is_root() {
        println!("run_cli: single-mapping checks skipped as real root (no user namespace)");
        return;
    }
    let (code, out) = run(
        &root,
        &["--single-mapping"],
        "cat /proc/self/uid_map; touch /g; chown 1234 /g",
    );
    assert_ne!(code, 0, "chown to an unmapped id must fail: {out}");
    assert_eq!(
        out.lines()
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
            .len(),
        3,
        "one line of uid_map first: {out}"
    );
    let (code, out) = run(&root, &["--single-mapping", "--user", "app"], "id");
    assert_eq!(code, 125, "{out}");
    assert!(out.contains("needs ids other than 0"), "{out}");
}

#[test]
fn mounts_work_and_leave_no_trace() {
    let Some((tmp, root)) = busybox_root() else {
        return;
    };
    let ctx = tmp.path().join("context");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a"), "from the context").unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let marker = format!(
        "kiln-secret-marker-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, &marker).unwrap();
    let mounts = |extra: &str| {
        vec![
            "--mount".to_string(),
            "tmpfs:/scratch".to_string(),
            "--mount".to_string(),
            format!("bind:{}:/ctx", ctx.display()),
            "--mount".to_string(),
            format!("bind:{}:/var/cache/app:cache", cache.display()),
            "--mount".to_string(),
            format!("bind:{}:/scratch-ctx:rw", ctx.display()),
            "--mount".to_string(),
            format!("secret:{}:/run/secrets/{extra}", secret.display()),
        ]
    };
    let script = "ls /scratch | wc -l; echo x > /scratch/f; cat /ctx/a; echo; \
                  (echo y > /ctx/b) 2>/dev/null || echo ctx-read-only; echo run >> /var/cache/app/log; \
                  echo thrown-away > /scratch-ctx/new && cat /scratch-ctx/new; \
                  stat -c '%a %u' /run/secrets/token; cat /run/secrets/token; echo";
    for round in 0..2 {
        let mut all: Vec<String> = vec!["debug".into(), "run".into()];
        all.extend(mounts("token"));
        all.push(root.to_string_lossy().into_owned());
        all.extend(["--", "sh", "-c", script].map(String::from));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = kiln(&all, None);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.starts_with("0\n"),
            "the tmpfs starts empty every time: {stdout}"
        );
        for want in [
            "from the context",
            "ctx-read-only",
            "thrown-away",
            "400 0",
            marker.as_str(),
        ] {
            assert!(
                stdout.contains(want),
                "round {round}: missing {want:?} in {stdout}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(cache.join("log")).unwrap(),
        "run\nrun\n",
        "the cache persists"
    );
    assert!(
        !ctx.join("new").exists(),
        "writes to an rw bind mount are thrown away"
    );
    for gone in ["scratch", "scratch-ctx", "ctx", "var", "run"] {
        assert!(
            !root.join(gone).exists(),
            "/{gone} (a mount point) stayed in the root"
        );
    }
    // The secret's bytes are nowhere in the root filesystem.
    fn scan(dir: &Path, marker: &[u8]) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                scan(&e.path(), marker);
            } else if md.is_file() {
                let data = std::fs::read(e.path()).unwrap_or_default();
                assert!(
                    !data.windows(marker.len()).any(|w| w == marker),
                    "secret found in {}",
                    e.path().display()
                );
            }
        }
    }
    scan(&root, marker.as_bytes());
}

/// Inside an unprivileged container (here: a user namespace made by `unshare -Urm`,
/// where kiln is "root" without real privileges and without subordinate ids), steps run
/// with the single mapping, and doctor says so.
#[test]
fn inside_an_unprivileged_container() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let kiln_bin = kiln_tests::kiln_bin();
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(&kiln_bin)
        .args(["debug", "run", "--network", "none", "--mount", "tmpfs:/t"])
        .arg(&root)
        .args([
            "--",
            "sh",
            "-c",
            "id -u; ip link show lo; touch /t/x && echo tmpfs-ok",
        ])
        .output()
        .expect("unshare");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("0\n") && stdout.contains(",UP") && stdout.contains("tmpfs-ok"),
        "{stdout}"
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(&kiln_bin)
        .arg("doctor")
        .output()
        .expect("unshare");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(
            "ok   user namespaces            an unprivileged user namespace can be created"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL subordinate ids"), "{stdout}");
}

#[test]
fn network_none_has_only_loopback() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let (code, out) = run(&root, &["--network", "none"], "cat /proc/net/dev");
    assert_eq!(code, 0, "{out}");
    let (code, up) = run(
        &root,
        &["--network", "none"],
        "ip link show lo; ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok",
    );
    assert_eq!(code, 0, "{up}");
    assert!(
        up.contains(",UP") && up.contains("ping-ok"),
        "lo must be up: {up}"
    );
    assert_eq!(kiln_tests::interfaces(&out), ["lo"], "{out}");
    // Without --network the sandbox is on the host's network: the host's own interfaces,
    // more than lo (a sandbox that always had its own network would show only lo).
    let Some(host) = kiln_tests::host_interfaces() else {
        return;
    };
    let (code, host_net) = run(&root, &[], "cat /proc/net/dev");
    assert_eq!(code, 0, "{host_net}");
    assert_eq!(kiln_tests::interfaces(&host_net), host, "{host_net}");
}

#[test]
fn processes_left_running_are_killed_and_no_traces_stay() {
    let Some((_tmp, root)) = busybox_root() else {
        return;
    };
    let marker = format!("{}", 900_000 + std::process::id() % 90_000);
    let started = Instant::now();
    let (code, out) = run(&root, &[], &format!("sleep {marker} & echo started"));
    assert_eq!(code, 0, "{out}");
    assert!(started.elapsed() < Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&format!("sleep {marker}")),
            "left running: {cmdline}"
        );
    }
    for stub in [
        "proc",
        "dev",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
    ] {
        assert!(
            !root.join(stub).exists(),
            "/{stub} created by the sandbox stayed in the root"
        );
    }
}
