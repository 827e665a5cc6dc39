//! Shared helpers for kiln's end-to-end and conformance tests.

pub mod build;
pub mod containers;
pub mod registry;
pub mod store;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A fixture file under `tests/fixtures/`, read at run time. Tests that run as another
/// user (see scripts/test.sh) may not see the checkout, so fixtures are also embedded by
/// the tests that need them; this is for the common case.
pub fn fixture(path: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(path)
}

/// The `kiln` binary: `$KILN_BIN`, else `target/<profile>/kiln` next to this test
/// executable, brought up to date with cargo once per test process (running one test
/// crate does not rebuild the CLI by itself).
pub fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        return PathBuf::from(p);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_bin("kiln-cli", "kiln")).clone()
}

/// The `kiln-overlay` mount program: `$KILN_OVERLAY_PROGRAM`, else
/// `target/<profile>/kiln-overlay`, built as [`kiln_bin`] is.
pub fn kiln_overlay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_OVERLAY_PROGRAM") {
        return PathBuf::from(p);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_bin("kiln-snapshotter", "kiln-overlay"))
        .clone()
}

/// `target/<profile>/<bin>` next to this test executable, built from `package` with
/// cargo when run under cargo or missing.
fn build_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<bin>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = profile_dir.join(bin);
    if std::env::var_os("CARGO").is_some() || !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .current_dir(workspace_root())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "building {bin} failed: {status:?}"
        );
    }
    path
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Standard output and standard error of `out`, one after the other (for assertions).
pub fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `kiln` with `args` on the kiln root `root`.
pub fn kiln_at(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .args(args)
        .env("KILN_ROOT", root)
        .output()
        .unwrap_or_else(|e| panic!("running kiln: {e}"))
}

/// Runs `kiln` with `args`, feeding `stdin` when given.
pub fn kiln(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(kiln_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running kiln: {e}"));
    if let Some(mut input) = child.stdin.take() {
        if let Some(bytes) = stdin {
            // kiln may exit before reading (a usage error): a closed pipe is fine.
            if let Err(e) = input.write_all(bytes) {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe,
                    "writing stdin: {e}"
                );
            }
        }
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for kiln: {e}"))
}

/// stdout and stderr of an output as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A build context holding `rootfs/`: Debian's static busybox with its applets linked,
/// and `/etc/passwd` and `/etc/group` with root, `app` (1000) and group `extra` (2000).
/// Dockerfiles start with `FROM scratch` + `COPY rootfs/ /` ([`BUSYBOX_BASE`]).
/// `None` (with a visible line) when busybox is missing outside CI.
pub fn busybox_context() -> Option<tempfile::TempDir> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        skipped("/bin/busybox missing (apt-get install busybox-static)");
        assert!(
            std::env::var_os("CI").is_none(),
            "busybox-static missing under CI"
        );
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
    }
    std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .expect("group");
    Some(tmp)
}

/// The first lines of a Dockerfile built on [`busybox_context`].
pub const BUSYBOX_BASE: &str = "FROM scratch\nCOPY rootfs/ /\n";

/// Whether builds here have ids beyond the caller's: real root, or CI's user with
/// subordinate ids (not the single-mapping user, `KILN_TEST_IDS=single`).
pub fn full_ids() -> bool {
    rustix::process::geteuid().is_root()
        || (std::env::var_os("CI").is_some()
            && std::env::var("KILN_TEST_IDS").as_deref() != Ok("single"))
}

/// Whether this process is real root (uid 0 in the initial user namespace).
pub fn real_root() -> bool {
    kiln_executor::sandbox::userns::is_real_root()
}

/// Whether the running kernel is Linux `major.minor` or later.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Says on stderr, past the test harness's capture, that a test is skipped (and why).
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// Whether `program` is on PATH; prints a visible "skipped" line when not, and fails
/// under CI (where `.ci/run` installs every tool the tests use).
pub fn have(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        skipped(&format!("{program} missing"));
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} missing under CI"
        );
    }
    found
}

/// The interface names in a `/proc/net/dev` listing (lines of a name and its 16 counters),
/// sorted.
pub fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(_, counters)| {
            let fields: Vec<&str> = counters.split_whitespace().collect();
            fields.len() == 16 && fields.iter().all(|f| f.parse::<u64>().is_ok())
        })
        .map(|(name, _)| name.trim().to_string())
        .collect();
    names.sort();
    names
}

/// This process's network interfaces (the host's network as a RUN without its own
/// network sees it), or `None` with a visible "skipped" line, failing under CI, when the
/// host has only `lo` (a host network could then not be told from `--network=none`).
pub fn host_interfaces() -> Option<Vec<String>> {
    let names = interfaces(&std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev"));
    if names.iter().all(|n| n == "lo") {
        skipped("the host has no network interface but lo");
        assert!(
            std::env::var_os("CI").is_none(),
            "the host has only lo under CI"
        );
        return None;
    }
    Some(names)
}

/// Removes a directory tree that rootless kiln builds wrote into. An image's files may
/// belong to the caller's subordinate ids (apt's `_apt`-owned `partial` directories, mode
/// 0700), which only the caller's full id mapping can remove: then util-linux's
/// `unshare --map-auto --map-root-user rm -rf` (through newuidmap). Gone already is fine;
/// the error says what stayed.
pub fn remove_tree(path: &Path) -> Result<(), String> {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    let out = Command::new("unshare")
        .args(["--map-auto", "--map-root-user", "rm", "-rf", "--"])
        .arg(path)
        .output();
    if !path.exists() {
        return Ok(());
    }
    Err(match out {
        Ok(out) => format!(
            "{} stays: unshare rm -rf: {}{}",
            path.display(),
            out.status,
            combined(&out)
        ),
        Err(e) => format!("{} stays: running unshare: {e}", path.display()),
    })
}
