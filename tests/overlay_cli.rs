//! `kiln-overlay`, the FUSE overlay as a mount program: fuse-overlayfs's command line,
//! detaching once the mount is live, exiting on unmount; as root (mount(2)), inside
//! `unshare -Urm`, and as a plain user through fusermount3; stacks written by kernel
//! overlayfs and by fuse-overlayfs read back the same, and the reverse; a SIGKILLed server
//! leaves a mount that `umount -l` clears; podman and buildah run on it as their
//! `mount_program` (as root and rootless).

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_tests::{have, kiln_bin, kiln_overlay_bin, real_root};

/// A directory holding `kiln-overlay` (a link to the mount program), so every test
/// names the program the same way.
fn program_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(kiln_overlay_bin(), d.path().join("kiln-overlay")).unwrap();
    d
}

/// Runs a shell script; in a new mount namespace (and user namespace unless real root)
/// when `namespaced`. Returns stdout; panics with the output on failure.
fn sh(script: &str, namespaced: bool) -> String {
    let mut cmd = if namespaced {
        let mut c = Command::new("unshare");
        if !real_root() {
            c.arg("--map-root-user");
        }
        c.args(["--mount", "--propagation", "private", "sh", "-ec", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-ec", script]);
        c
    };
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "script failed:\n{script}\n---\n{text}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two lowers: `l2` at the bottom, `l1` above it with an AUFS-style whiteout of `gone`
/// and an opaque directory `dir` (`.wh..wh..opq`, as unprivileged tools write them).
fn lowers(root: &Path) -> (PathBuf, PathBuf) {
    let (l1, l2) = (root.join("l1"), root.join("l2"));
    for (p, body) in [
        ("l2/base", "base\n"),
        ("l2/gone", "gone\n"),
        ("l2/dir/old", "old\n"),
        ("l2/sub/keep", "keep\n"),
        ("l1/top", "top\n"),
        ("l1/.wh.gone", ""),
        ("l1/dir/.wh..wh..opq", ""),
        ("l1/dir/new", "new\n"),
    ] {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    (l1, l2)
}

const LIST: &str =
    "(cd \"$1\" && find . | LC_ALL=C sort && find . -type f | LC_ALL=C sort | xargs cat)";

#[test]
fn mount_program_serves_and_exits_on_umount() {
    let prog = program_dir();
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = lowers(t.path());
    let (u, w, m) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
    for d in [&u, &w, &m] {
        std::fs::create_dir_all(d).unwrap();
    }
    let bin = prog.path().join("kiln-overlay");
    let mount = format!(
        "'{}' -o lowerdir={}:{},upperdir={},workdir={},noatime,fsync=0 '{}'",
        bin.display(),
        l1.display(),
        l2.display(),
        u.display(),
        w.display(),
        m.display()
    );
    let work = format!(
        "{mount}
         test \"$(cat '{m}/base')\" = base
         test ! -e '{m}/gone'
         test \"$(ls '{m}/dir')\" = new
         echo written > '{m}/created'
         rm '{m}/base'
         mv '{m}/sub' '{m}/moved'
         ls -A '{m}' | tr '\\n' ' '
         {unmount} '{m}'
         ",
        m = m.display(),
        unmount = if real_root() { "umount" } else { "UNMOUNT" },
    );
    let check_upper = |out: &str| {
        assert_eq!(out.trim(), "created dir moved top");
        // The upper directory is in overlayfs's format.
        let base = std::fs::symlink_metadata(u.join("base")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(
            base.file_type().is_char_device() && base.rdev() == 0,
            "whiteout for base"
        );
        assert_eq!(
            std::fs::read_to_string(u.join("created")).unwrap(),
            "written\n"
        );
        assert_eq!(
            std::fs::read_to_string(u.join("moved/keep")).unwrap(),
            "keep\n"
        );
    };
    let wait_gone = || {
        let mp = m.display().to_string();
        for _ in 0..200 {
            let mounted = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(&mp);
            if !mounted && !server_running(&mp) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the server or the mount outlived umount");
    };
    if real_root() {
        let out = sh(&work, false);
        check_upper(&out);
        wait_gone();
    } else {
        // Inside a user namespace: mount(2) directly.
        let out = sh(&work.replace("UNMOUNT", "umount"), true);
        check_upper(&out);
        // As a plain user outside one: through fusermount3.
        if have("fusermount3") {
            for d in [&u, &w] {
                std::fs::remove_dir_all(d).unwrap();
                std::fs::create_dir_all(d).unwrap();
            }
            let out = sh(&work.replace("UNMOUNT", "fusermount3 -u"), false);
            check_upper(&out);
            wait_gone();
        }
    }
}

fn server_running(mountpoint: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().parse::<u32>().is_ok()
            && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("__kiln-overlay-serve") && c.contains(mountpoint)
            })
    })
}

#[test]
fn sigkill_of_the_server_leaves_a_mount_umount_clears() {
    let prog = program_dir();
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = lowers(t.path());
    let (u, w, m) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
    for d in [&u, &w, &m] {
        std::fs::create_dir_all(d).unwrap();
    }
    let script = format!(
        "'{bin}' -o lowerdir={l1}:{l2},upperdir={u},workdir={w} '{m}'
         cat '{m}/base' >/dev/null
         pid=$(pgrep -f '[_]_kiln-overlay-serve.*{m}')
         kill -9 $pid
         while kill -0 $pid 2>/dev/null; do sleep 0.05; done
         if stat '{m}/base' 2>'{err}'; then echo still-served; fi
         cat '{err}'
         umount -l '{m}'
         test -e '{m}' && ls -A '{m}' | wc -l
         ",
        bin = prog.path().join("kiln-overlay").display(),
        err = t.path().join("err").display(),
        l1 = l1.display(),
        l2 = l2.display(),
        u = u.display(),
        w = w.display(),
        m = m.display(),
    );
    let out = sh(&script, !real_root());
    assert!(out.contains("Transport endpoint is not connected"), "{out}");
    assert!(!out.contains("still-served"), "{out}");
    assert_eq!(out.lines().last().unwrap_or_default().trim(), "0", "{out}");
}

/// Writes the same changes through `mount_cmd` (which mounts lowers + upper at `m`).
fn changes(m: &str) -> String {
    format!(
        "echo new > '{m}/created'
         rm '{m}/base'
         rm -r '{m}/dir' && mkdir '{m}/dir' && echo again > '{m}/dir/again'
         mv '{m}/top' '{m}/top-renamed'
         chmod 0600 '{m}/sub/keep'"
    )
}

#[test]
fn stacks_written_by_kernel_overlayfs_and_fuse_overlayfs_read_the_same() {
    let prog = program_dir();
    let bin = prog.path().join("kiln-overlay");
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = lowers(t.path());
    // Kernel overlayfs does not read AUFS-style whiteouts: give it a lower stack in its
    // own format (l2 only, plus l1 merged by kiln-overlay into one directory first).
    let base = t.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let flat = format!(
        "'{bin}' -o lowerdir={l1}:{l2} '{m}' && cp -a '{m}/.' '{base}/' && umount '{m}'",
        bin = bin.display(),
        l1 = l1.display(),
        l2 = l2.display(),
        m = {
            let m = t.path().join("flatmnt");
            std::fs::create_dir_all(&m).unwrap();
            m.display().to_string()
        },
        base = base.display()
    );
    sh(&flat, true);
    let userxattr = if real_root() { "" } else { ",userxattr" };
    let writers: Vec<(&str, String)> = {
        let mut v = vec![(
            "overlay",
            format!("mount -t overlay overlay -o lowerdir={{lower}},upperdir={{upper}},workdir={{work}}{userxattr} '{{m}}'"),
        )];
        if have("fuse-overlayfs") {
            v.push((
                "fuse-overlayfs",
                "fuse-overlayfs -o lowerdir={lower},upperdir={upper},workdir={work} '{m}'"
                    .to_string(),
            ));
        }
        v.push((
            "kiln-overlay",
            format!(
                "'{}' -o lowerdir={{lower}},upperdir={{upper}},workdir={{work}} '{{m}}'",
                bin.display()
            ),
        ));
        v
    };
    let mut views = Vec::new();
    for (writer, cmd) in &writers {
        let d = t.path().join(format!("w-{writer}"));
        let (u, w, m) = (d.join("u"), d.join("w"), d.join("m"));
        for x in [&u, &w, &m] {
            std::fs::create_dir_all(x).unwrap();
        }
        let fill = |c: &str, lower: &str, upper: &Path, work: &Path| {
            c.replace("{lower}", lower)
                .replace("{upper}", &upper.display().to_string())
                .replace("{work}", &work.display().to_string())
                .replace("{m}", &m.display().to_string())
        };
        let listing_script = format!("list() {{ {LIST}; }}\n");
        // Write through the writer, and list its view.
        let script = format!(
            "{listing_script}{}\n{}\nlist '{}'\numount '{}'",
            fill(cmd, &base.display().to_string(), &u, &w),
            changes(&m.display().to_string()),
            m.display(),
            m.display()
        );
        let written_view = sh(&script, true);
        // Read the written stack back with every reader (upper as the top lower).
        for (reader, rcmd) in &writers {
            // kiln-overlay reads every writer's stack, every reader reads kiln-overlay's
            // (fuse-overlayfs's own opaque-marker files are not for the kernel to read).
            if *writer != "kiln-overlay" && *reader != "kiln-overlay" {
                continue;
            }
            let w2 = d.join(format!("w2-{reader}"));
            let u2 = d.join(format!("u2-{reader}"));
            std::fs::create_dir_all(&w2).unwrap();
            std::fs::create_dir_all(&u2).unwrap();
            let lower = format!("{}:{}", u.display(), base.display());
            let script = format!(
                "{listing_script}{}\nlist '{}'\numount '{}'",
                fill(rcmd, &lower, &u2, &w2),
                m.display(),
                m.display()
            );
            let view = sh(&script, true);
            views.push((format!("{writer} → {reader}"), view.clone()));
            assert_eq!(
                view, written_view,
                "stack written by {writer}, read by {reader}"
            );
        }
    }
    assert!(views.len() >= 3, "{views:?}");
}

/// podman runs a container and buildah builds with kiln-overlay as their overlay
/// driver's mount program: as real root, and rootless as the test's user (podman and
/// buildah start it inside their user namespace, where it mounts with mount(2)).
#[test]
fn podman_and_buildah_run_on_kiln_overlay_as_mount_program() {
    let Some(ctx) = kiln_tests::busybox_context() else {
        return;
    };
    let prog = program_dir();
    let bin = prog.path().join("kiln-overlay");
    let Some(c) = kiln_tests::containers::Containers::new() else {
        return;
    };
    let c = c.with_mount_program(&bin);
    let t = tempfile::tempdir().unwrap();
    // A busybox image from kiln, as a docker archive.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let archive = t.path().join("busybox.tar");
    let out = Command::new(kiln_bin())
        .args(["build", "-q", "--compression", "gzip", "-o"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .args(["-t", "kiln-mp-busybox:1"])
        .arg(ctx.path())
        .env("KILN_ROOT", t.path().join("kiln"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let o = c
        .podman()
        .args(["load", "-q", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = c
        .run_container()
        .args([
            "localhost/kiln-mp-busybox:1",
            "sh",
            "-c",
            "echo on-kiln-overlay > /f && cat /f && grep -c kiln-overlay /proc/mounts",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("on-kiln-overlay\n"),
        "{o:?}"
    );
    // buildah's RUN sets supplementary groups, which a user namespace with one id mapped
    // forbids (setgroups is denied there): with the single mapping it builds without RUN.
    let single = !real_root() && !kiln_tests::full_ids();
    let bctx = t.path().join("bctx");
    std::fs::create_dir_all(&bctx).unwrap();
    let df = match single {
        true => "FROM localhost/kiln-mp-busybox:1\nCOPY built /built\n",
        false => "FROM localhost/kiln-mp-busybox:1\nRUN echo built > /built && mkdir -p /d && touch /d/x\n",
    };
    std::fs::write(bctx.join("Dockerfile"), df).unwrap();
    std::fs::write(bctx.join("built"), "built\n").unwrap();
    let o = c
        .buildah()
        .args([
            "bud",
            "-q",
            "--pull=never",
            "--isolation",
            "chroot",
            "-t",
            "kiln-mp-built",
        ])
        .arg(&bctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = c
        .run_container()
        .args(["localhost/kiln-mp-built", "cat", "/built"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "built\n", "{o:?}");
}

#[test]
fn options_it_cannot_honour_are_refused_by_name() {
    let prog = program_dir();
    for opt in ["squash_to_root", "uidmapping=0:1000:1", "no_such_option"] {
        let out = Command::new(prog.path().join("kiln-overlay"))
            .args([
                "-o",
                &format!("lowerdir=/nonexistent,{opt}"),
                "/nonexistent",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = opt.split('=').next().unwrap_or(opt);
        assert_eq!(out.status.code(), Some(2), "{opt}: {stderr}");
        assert!(stderr.contains(name), "{opt}: {stderr}");
    }
}

/// `nosuid`, `noexec`, `noatime`, `ro` and `dev` given to kiln-overlay are the mount's
/// flags (as `/proc/self/mountinfo` shows them, and an exec in a `noexec` mount fails);
/// `dev` is refused where the kernel would keep the mount `nodev` anyway. As root
/// (mount(2)); unprivileged inside `unshare -Urm` (mount(2) in a user namespace) and as a
/// plain user through fusermount3.
#[test]
fn mount_flags_are_applied_not_ignored() {
    let prog = program_dir();
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = lowers(t.path());
    let exe = l2.join("run.sh");
    std::fs::write(&exe, "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (u, w, m) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
    let bin = prog.path().join("kiln-overlay");
    let script = |unmount: &str| {
        format!(
            "rm -rf '{u}' '{w}'; mkdir -p '{u}' '{w}' '{m}'
             opts() {{ awk -v m='{m}' '$5 == m {{ print $6 }}' /proc/self/mountinfo; }}
             tryexec() {{ if '{m}/run.sh' >/dev/null 2>&1; then echo exec=yes; else echo exec=no; fi; }}
             '{bin}' -o lowerdir={l1}:{l2},upperdir={u},workdir={w},nosuid,noexec,noatime '{m}'
             echo \"flags=$(opts)\"; tryexec
             {unmount} '{m}'
             '{bin}' -o lowerdir={l1}:{l2},ro '{m}'
             echo \"plain=$(opts)\"; tryexec
             {unmount} '{m}'
             if '{bin}' -o lowerdir={l1}:{l2},dev '{m}' 2>'{t}/err'; then
               echo \"dev=$(opts)\"; {unmount} '{m}'
             else echo \"dev=refused $(cat '{t}/err')\"; fi
             ",
            u = u.display(),
            w = w.display(),
            m = m.display(),
            t = t.path().display(),
            bin = bin.display(),
            l1 = l1.display(),
            l2 = l2.display(),
        )
    };
    let check = |out: &str, dev_allowed: bool, how: &str| {
        let line = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{how}: no {key} in {out}"))
                .to_string()
        };
        let flags: Vec<String> = line("flags=").split(',').map(str::to_string).collect();
        for f in ["nosuid", "noexec", "noatime", "nodev", "rw"] {
            assert!(flags.iter().any(|x| x == f), "{how}: {f} not in {flags:?}");
        }
        let execs: Vec<&str> = out.lines().filter(|l| l.starts_with("exec=")).collect();
        assert_eq!(execs, ["exec=no", "exec=yes"], "{how}: {out}");
        let plain: Vec<String> = line("plain=").split(',').map(str::to_string).collect();
        assert!(
            plain.iter().any(|x| x == "ro"),
            "{how}: ro not in {plain:?}"
        );
        assert!(
            !plain.iter().any(|x| x == "noexec" || x == "noatime"),
            "{how}: flags not asked for: {plain:?}"
        );
        let dev = line("dev=");
        if dev_allowed {
            assert!(!dev.split(',').any(|x| x == "nodev"), "{how}: dev: {dev}");
        } else {
            assert!(
                dev.starts_with("refused") && dev.contains("dev"),
                "{how}: {dev}"
            );
        }
    };
    if real_root() {
        let out = sh(&script("umount"), false);
        check(&out, true, "as root");
    } else {
        let out = sh(&script("umount"), true);
        check(&out, false, "in a user namespace");
        if have("fusermount3") {
            let out = sh(&script("fusermount3 -u"), false);
            check(&out, false, "through fusermount3");
        }
    }
}

/// The pid of the server of the mount at `mountpoint`.
fn server_pid(mountpoint: &str) -> i32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c);
            // The serving process holds the FUSE connection (`/dev/fuse`) open.
            let serves = std::fs::read_dir(e.path().join("fd"))
                .ok()?
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse")));
            (c.contains("__kiln-overlay-serve") && c.contains(mountpoint) && serves).then_some(pid)
        })
        .unwrap_or_else(|| panic!("no server for {mountpoint}"))
}

/// Waits until every thread of `pid` is stopped (`T` in its stat), 5 s at most.
fn wait_stopped(pid: i32) {
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                    st.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            })
    };
    for _ in 0..500 {
        if stopped() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the server {pid} did not stop");
}

/// Whether a read of `file` (opened before, never read) completes while the mount's
/// server is stopped: with passthrough the kernel reads the backing file itself.
fn read_while_server_stopped(mountpoint: &str, file: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap();
    let raw = server_pid(mountpoint);
    let pid = rustix::process::Pid::from_raw(raw).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    wait_stopped(raw);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let n = f.read_at(&mut buf, 0);
        let _ = tx.send(n.map(|n| buf[..n].to_vec()));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(3));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    reader.join().unwrap();
    match got {
        Ok(r) => {
            assert_eq!(r.unwrap(), b"base\n", "read through the mount");
            true
        }
        Err(_) => false,
    }
}

#[test]
fn passthrough_serves_real_roots_reads_and_everyone_else_falls_back() {
    let prog = program_dir();
    let bin = prog.path().join("kiln-overlay");
    let t = tempfile::tempdir().unwrap();
    let (l1, l2) = lowers(t.path());
    let (u, w, m) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
    let ms = m.display().to_string();
    let mount = |env: &[(&str, &str)]| {
        for d in [&u, &w] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(&m).unwrap();
        let mut c = Command::new(&bin);
        c.arg("-o")
            .arg(format!(
                "lowerdir={}:{},upperdir={},workdir={}",
                l1.display(),
                l2.display(),
                u.display(),
                w.display()
            ))
            .arg(&m)
            .envs(env.iter().copied());
        c.output().unwrap()
    };
    let unmount = || {
        let prog = if real_root() { "umount" } else { "fusermount3" };
        let mut c = Command::new(prog);
        if !real_root() {
            c.arg("-u");
        }
        assert!(c.arg(&m).status().unwrap().success(), "{prog} {ms}");
    };
    if !real_root() && !have("fusermount3") {
        kiln_tests::skipped("passthrough: no fusermount3 to mount as a plain user");
        return;
    }
    let out = mount(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = read_while_server_stopped(&ms, &m.join("base"));
    if real_root() && !kiln_tests::kernel_at_least(6, 9) {
        assert!(!served, "before Linux 6.9 there is no passthrough");
    } else if real_root() {
        assert!(
            served,
            "as real root the kernel reads the backing file itself"
        );
        use std::os::unix::fs::FileExt;
        // An upper file opened to read, then to write: both opens share one backing.
        std::fs::write(m.join("made"), "made here\n").unwrap();
        let ro = std::fs::File::open(m.join("made")).unwrap();
        let rw = std::fs::OpenOptions::new()
            .write(true)
            .open(m.join("made"))
            .unwrap();
        rw.write_at(b"MADE", 0).unwrap();
        let mut buf = [0u8; 10];
        ro.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"MADE here\n");
        drop((ro, rw));
        // A lower file held open to read cannot also be opened to write (the kernel
        // keeps one backing file per inode): ETXTBSY, as for a running program; once the
        // reader is gone the write goes to the copied-up file.
        let reader = std::fs::File::open(m.join("top")).unwrap();
        let e = std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("top"))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(26), "{e}");
        drop(reader);
        use std::io::Write;
        let mut a = std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("top"))
            .unwrap();
        a.write_all(b"more\n").unwrap();
        drop(a);
        assert_eq!(
            std::fs::read_to_string(m.join("top")).unwrap(),
            "top\nmore\n"
        );
        assert_eq!(
            std::fs::read_to_string(u.join("top")).unwrap(),
            "top\nmore\n"
        );
        assert_eq!(std::fs::read_to_string(l1.join("top")).unwrap(), "top\n");
        unmount();
        let out = mount(&[("KILN_FUSE_PASSTHROUGH", "0")]);
        assert!(out.status.success());
        assert!(
            !read_while_server_stopped(&ms, &m.join("base")),
            "KILN_FUSE_PASSTHROUGH=0: reads go through the server"
        );
    } else {
        assert!(!served, "a plain user's mount cannot use passthrough");
    }
    unmount();
    let out = mount(&[("KILN_FUSE_PASSTHROUGH", "yes")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown value is refused");
    assert!(
        err.contains("KILN_FUSE_PASSTHROUGH=\"yes\": expected 0 or 1"),
        "{err}"
    );
    let out = mount(&[("KILN_FUSE_THREADS", "lots")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("KILN_FUSE_THREADS"),
        "{err}"
    );
}
