//! podman and buildah as the tests run them, in every identity: as real root, or
//! rootless as the calling user (with its subordinate ids, or podman's single mapping
//! without them), their storage in a temporary directory, `cgroupfs` and file events
//! (no systemd session here), `HOME` and `XDG_RUNTIME_DIR` of their own.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Containers {
    dir: tempfile::TempDir,
    /// `--storage-opt` values besides the driver (e.g. a mount program).
    storage_opts: Vec<String>,
    driver: &'static str,
}

impl Containers {
    /// `None` (with a visible line; a failure under CI) when podman or buildah is missing.
    pub fn new() -> Option<Containers> {
        if !(crate::have("podman") && crate::have("buildah")) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(&xdg).expect("xdg");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Some(Containers {
            dir,
            storage_opts: Vec::new(),
            driver: "vfs",
        })
    }

    /// The overlay driver with `program` as its mount program (fuse-overlayfs's role).
    pub fn with_mount_program(mut self, program: &Path) -> Containers {
        self.driver = "overlay";
        self.storage_opts = vec![format!("overlay.mount_program={}", program.display())];
        self
    }

    fn graph(&self) -> PathBuf {
        self.dir.path().join("graph")
    }

    fn command(&self, program: &str, podman: bool) -> Command {
        let mut c = Command::new(program);
        c.arg("--root")
            .arg(self.graph())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", self.driver]);
        for o in &self.storage_opts {
            c.args(["--storage-opt", o]);
        }
        if podman {
            c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        }
        // A home of their own too: the test users share one, and podman keeps its
        // configuration there, private to whoever made it first.
        c.env("XDG_RUNTIME_DIR", self.dir.path().join("xdg"))
            .env("HOME", self.dir.path().join("home"));
        c
    }

    pub fn podman(&self) -> Command {
        self.command("podman", true)
    }

    pub fn buildah(&self) -> Command {
        self.command("buildah", false)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let _ = self.podman().args(["rmi", "-a", "-f"]).output();
        // Rootless storage holds files of the user namespace's other ids: removed from
        // inside it.
        if !crate::real_root() {
            let _ = self
                .podman()
                .args(["unshare", "rm", "-rf"])
                .arg(self.graph())
                .output();
        } else {
            let _ = Command::new("umount").arg("-R").arg(self.graph()).output();
        }
    }
}
