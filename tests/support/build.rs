//! Building Dockerfiles with the kiln binary in a fresh root, for the end-to-end tests:
//! a root and a busybox context per test, the image a build tagged, a reproducible
//! build's digest, and host programs copied into a context.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{busybox_context, kiln_bin};

/// A kiln root and a build context for one test.
pub struct Fixture {
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
}

pub struct Built {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Fixture {
    pub fn new() -> Option<Fixture> {
        Some(Fixture {
            root: tempfile::tempdir().expect("root"),
            ctx: busybox_context()?,
        })
    }

    pub fn ctx(&self) -> &Path {
        self.ctx.path()
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn build_with(&self, dockerfile: &str, args: &[&str], env: &[(&str, &str)]) -> Built {
        std::fs::write(self.ctx().join("Dockerfile"), dockerfile).expect("Dockerfile");
        let mut cmd = Command::new(kiln_bin());
        cmd.arg("build").args(args).arg(self.ctx());
        cmd.env("KILN_ROOT", self.root());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running kiln build");
        Built {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn build(&self, dockerfile: &str, args: &[&str]) -> Built {
        self.build_with(dockerfile, args, &[])
    }

    /// Builds and asserts success; returns stderr (the progress).
    pub fn ok(&self, dockerfile: &str, args: &[&str]) -> String {
        let b = self.build(dockerfile, args);
        assert_eq!(b.code, 0, "build failed:\n{}{}", b.stdout, b.stderr);
        b.stderr
    }

    /// The manifest and config of tag `name` in the store.
    pub fn image(&self, name: &str) -> (serde_json::Value, serde_json::Value) {
        let index: serde_json::Value = read_json(&self.root().join("index.json"));
        let m = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
            .unwrap_or_else(|| panic!("no tag {name} in {index}"))
            .clone();
        let manifest = read_json(&blob(self.root(), m["digest"].as_str().expect("digest")));
        let config = read_json(&blob(
            self.root(),
            manifest["config"]["digest"]
                .as_str()
                .expect("config digest"),
        ));
        (manifest, config)
    }
}

pub fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

/// The dynamic libraries and the program itself, copied into `dest` at their paths.
pub fn copy_program_with_libs(program: &str, dest: &Path) -> bool {
    let Ok(out) = Command::new("ldd").arg(program).output() else {
        return false;
    };
    let mut files = vec![PathBuf::from(program)];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        for word in line.split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
    }
    for f in files {
        let real = std::fs::canonicalize(&f).unwrap_or(f.clone());
        let target = dest.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if std::fs::copy(&real, &target).is_err() {
            return false;
        }
    }
    true
}

/// Builds `ctx` with `snapshotter` into a fresh root at a fixed SOURCE_DATE_EPOCH, as
/// `user` (`None`: this process) through `runuser`; the manifest digest (which names
/// every compressed blob and the config).
pub fn reproducible_build(ctx: &Path, snapshotter: &str, user: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let meta = dir.path().join("meta.json");
    let root = dir.path().join("root");
    let mut cmd = match user {
        None => Command::new(kiln_bin()),
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args([
                "-u",
                u,
                "--",
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            ])
            // env -i: the user's own environment, with what the build needs.
            .arg(format!("HOME={}", dir.path().display()))
            .arg(format!("KILN_ROOT={}", root.display()))
            .arg("SOURCE_DATE_EPOCH=1700000000")
            .arg(kiln_bin());
            c
        }
    };
    let out = cmd
        .args([
            "build",
            "-q",
            "--snapshotter",
            snapshotter,
            "--metadata-file",
        ])
        .arg(&meta)
        .arg(ctx)
        .env("KILN_ROOT", &root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{snapshotter} as {user:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    m["containerimage.digest"].as_str().unwrap().to_string()
}

/// A blob's bytes, decompressed when it is a zstd or gzip stream.
pub fn decompressed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(bytes)
            .and_then(|mut d| d.read_to_end(&mut out))
            .expect("zstd blob");
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("gzip blob");
    } else {
        out = bytes.to_vec();
    }
    out
}
