//! podman and buildah as the tests run them, in every identity: as real root, or
//! rootless as the calling user (with its subordinate ids, or podman's single mapping
//! without them: `ignore_chown_errors`, images whose files are all root's), with their
//! storage, state, `HOME`, `XDG_RUNTIME_DIR` and configuration in a temporary
//! directory, `cgroupfs` and file events (cgroups v1, no systemd user session here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Containers {
    dir: tempfile::TempDir,
    driver: &'static str,
    /// `--storage-opt` values besides the driver's defaults (e.g. a mount program).
    storage_opts: Vec<String>,
    /// podman runs without real root (in a user namespace of its own).
    pub rootless: bool,
    /// …and without subordinate ids: one id is mapped.
    pub single: bool,
}

impl Containers {
    /// `None` (with a visible line; a failure under CI) when podman or buildah is missing.
    pub fn new() -> Option<Containers> {
        if !(crate::have("podman") && crate::have("buildah")) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["xdg", "config", "home"] {
            let p = dir.path().join(d);
            std::fs::create_dir_all(&p).expect("mkdir");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let rootless = !crate::real_root();
        Some(Containers {
            dir,
            driver: "overlay",
            storage_opts: Vec::new(),
            rootless,
            single: rootless && !has_subordinate_ids(),
        })
    }

    /// The overlay driver with `program` as its mount program (fuse-overlayfs's role).
    pub fn with_mount_program(mut self, program: &Path) -> Containers {
        self.storage_opts = vec![format!("overlay.mount_program={}", program.display())];
        self
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(program);
        // A home of their own: under one that is not theirs (the test users share one)
        // podman's configuration is private to whoever made it first, and rootless
        // podman's cleanup after a container fails and waits 20 s ("Exceeded conmon
        // timeout").
        c.env("HOME", d.join("home"))
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .arg("--root")
            .arg(self.storage())
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", self.driver]);
        for o in &self.storage_opts {
            c.args(["--storage-opt", o]);
        }
        if self.single {
            c.args(["--storage-opt", "ignore_chown_errors=true"]);
        }
        c
    }

    pub fn podman(&self) -> Command {
        let mut c = self.command("podman");
        c.arg("--tmpdir").arg(self.dir.path().join("tmp"));
        if self.rootless {
            c.args(["--cgroup-manager=cgroupfs", "--events-backend=file"]);
        }
        c
    }

    /// `podman run --rm` as this host allows it: no network (no slirp4netns here) and
    /// rlimits it can set (runc fails on podman's default ones: "error setting rlimit
    /// type 7"); the image and command follow.
    pub fn run_container(&self) -> Command {
        let mut c = self.podman();
        c.args([
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        c
    }

    pub fn buildah(&self) -> Command {
        self.command("buildah")
    }

    /// Runs podman with `args`; its output, after checking it succeeded.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.podman().args(args).output().expect("running podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            crate::combined(&out)
        );
        out
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let _ = self.podman().args(["rmi", "-a", "-f"]).output();
        let storage = self.storage();
        if self.rootless {
            // Files of subordinate ids, under the overlay driver's own mount: removed
            // from inside podman's user and mount namespace.
            let _ = self
                .podman()
                .args([
                    "unshare",
                    "sh",
                    "-c",
                    "umount \"$1/overlay\" 2>/dev/null; rm -rf \"$1\"",
                    "sh",
                ])
                .arg(&storage)
                .output();
            // The pause process rootless podman started keeps its user namespace (its
            // pid file is in `--tmpdir`).
            let pid_file = self.dir.path().join("tmp/pause.pid");
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        } else {
            let _ = Command::new("umount").arg("-R").arg(&storage).output();
        }
    }
}

/// Whether this user has subordinate uids (a line for its name or uid in /etc/subuid).
fn has_subordinate_ids() -> bool {
    let uid = rustix::process::getuid().as_raw().to_string();
    let name = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
        .unwrap_or_default();
    std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next())
        .any(|owner| owner == uid || owner == name)
}
