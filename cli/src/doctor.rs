//! `kiln doctor`: what this host and user allow kiln to do, one line per check, each
//! failing line saying what to do about it.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use kiln_executor::sandbox::subid::SubIds;
use kiln_executor::sandbox::userns::{enter_namespaces, Namespaces};
use kiln_snapshotter::backend::choice::{auto_pick, probe};
use kiln_snapshotter::backend::fuse::{probe_passthrough, Passthrough};
use kiln_snapshotter::{probe_all, BackendChoice, BackendKind};

struct Check {
    ok: bool,
    name: &'static str,
    detail: String,
    fix: &'static str,
}

/// Each backend's probe outcome, from inside the namespaces a build uses.
type Outcomes = Vec<(BackendKind, Result<(), Reported>)>;

/// Why a probe failed, as the probing process (or the attempt to start it) told it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct Reported(String);

/// The key of `probe-backend`'s line about FUSE passthrough (`Passthrough`'s variant, or
/// why the probe failed).
const PASSTHROUGH: &str = "passthrough";

/// Probes every backend in a scratch directory, from inside the namespaces a build uses:
/// `kiln probe-backend auto DIR` prints one line per backend, `KIND<TAB>ok` or
/// `KIND<TAB>REASON`.
fn probe_in_namespaces() -> (Outcomes, String) {
    let failed = |why: String| -> (Outcomes, String) {
        let all = BackendKind::ALL
            .into_iter()
            .map(|k| (k, Err(Reported(why.clone()))))
            .collect();
        (all, why)
    };
    // On kiln's root, where builds mount their snapshots: a backend may mount on one
    // filesystem and not on another (kernel overlayfs takes no upper directory on an
    // overlay, as a container's root is).
    let root = std::env::var_os("KILN_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(kiln_executor::default_root);
    // A root this user cannot write (not made yet under a home it does not own): the
    // temporary directory, as builds with a --root elsewhere would not see it anyway.
    let name = format!("doctor-probe-{}", std::process::id());
    let scratch = match std::fs::create_dir_all(root.join(&name)) {
        Ok(()) => root.join(&name),
        Err(e) => {
            tracing::debug!(
                "probing in {}: {e}; in the temporary directory instead",
                root.display()
            );
            let tmp = std::env::temp_dir().join(&name);
            if let Err(e) = std::fs::create_dir_all(&tmp) {
                return failed(format!("creating {}: {e}", tmp.display()));
            }
            tmp
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(format!("finding kiln's own binary: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.args(["probe-backend", BackendChoice::Auto.name()])
        .arg(&scratch);
    enter_namespaces(
        &mut cmd,
        Namespaces {
            mount: true,
            ..Namespaces::default()
        },
    );
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&scratch);
    let out = match out {
        Ok(o) => o,
        Err(e) => return failed(format!("entering a user and mount namespace: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let passthrough = stdout
        .lines()
        .find_map(|l| l.strip_prefix(PASSTHROUGH)?.strip_prefix('\t'))
        .unwrap_or("not probed")
        .to_string();
    let mut outcomes: Outcomes = stdout
        .lines()
        .filter_map(|line| {
            let (kind, what) = line.split_once('\t')?;
            let kind = kind.parse::<BackendKind>().ok()?;
            Some((
                kind,
                if what == "ok" {
                    Ok(())
                } else {
                    Err(Reported(what.to_string()))
                },
            ))
        })
        .collect();
    for kind in BackendKind::ALL {
        if !outcomes.iter().any(|(k, _)| *k == kind) {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            outcomes.push((
                kind,
                Err(Reported(format!("the probe did not report ({why})"))),
            ));
        }
    }
    (outcomes, passthrough)
}

/// The hidden `kiln probe-backend NAME DIR`, run by `doctor` inside namespaces: probes
/// the backend NAME (`auto`: every backend, in auto's order) in DIR and prints one line
/// per backend, `KIND<TAB>ok` or `KIND<TAB>REASON`.
pub fn probe_backend(name: &str, dir: PathBuf) -> Result<()> {
    let kind = name.parse::<BackendChoice>()?.kind();
    let outcomes = match kind {
        Some(kind) => vec![(kind, probe(kind, &dir))],
        None => probe_all(&dir),
    };
    let mut out = std::io::stdout().lock();
    let line = |e: &dyn std::fmt::Display| e.to_string().replace(['\n', '\t'], " ");
    for (kind, outcome) in outcomes {
        match outcome {
            Ok(()) => writeln!(out, "{kind}\tok")?,
            Err(e) => writeln!(out, "{kind}\t{}", line(&e))?,
        }
    }
    if kind.is_none() {
        let scratch = dir.join("passthrough");
        match probe_passthrough(&scratch) {
            Ok(p) => writeln!(out, "{PASSTHROUGH}\t{p:?}")?,
            Err(e) => writeln!(out, "{PASSTHROUGH}\t{}", line(&e))?,
        }
    }
    Ok(())
}

pub fn run(out: &mut impl Write) -> Result<()> {
    let mut checks = Vec::new();
    let u = rustix::system::uname();
    let release = u.release().to_string_lossy().into_owned();
    checks.push(Check {
        ok: true,
        name: "kernel",
        detail: format!("{} {}", u.sysname().to_string_lossy(), release),
        fix: "",
    });
    let uid = rustix::process::geteuid().as_raw();
    let root = kiln_executor::sandbox::userns::is_real_root();
    let userns = {
        // kiln itself, not /bin/true: a container's image may have no /bin/true.
        let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|_| "kiln".into()));
        cmd.arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        enter_namespaces(&mut cmd, Namespaces::default());
        cmd.status().map(|s| s.success())
    };
    checks.push(Check {
        ok: root || matches!(userns, Ok(true)),
        name: "user namespaces",
        detail: if root {
            "running as real root: a private mount namespace is used instead".into()
        } else {
            match &userns {
                Ok(true) => "an unprivileged user namespace can be created".into(),
                Ok(false) => "creating a user namespace failed".into(),
                Err(e) => format!("creating a user namespace failed: {e}"),
            }
        },
        fix: "allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; kernel.apparmor_restrict_unprivileged_userns=0 where it exists)",
    });
    let sub = SubIds::for_user(uid);
    checks.push(Check {
        ok: root || sub.full_mapping_possible(),
        name: "subordinate ids",
        detail: format!(
            "user {}: subuid {:?}, subgid {:?}, newuidmap {}, newgidmap {}",
            sub.user.as_deref().unwrap_or("?"),
            sub.uid_ranges.iter().map(|r| format!("{}+{}", r.start, r.count)).collect::<Vec<_>>(),
            sub.gid_ranges.iter().map(|r| format!("{}+{}", r.start, r.count)).collect::<Vec<_>>(),
            sub.newuidmap.as_ref().map_or("missing".into(), |p| p.display().to_string()),
            sub.newgidmap.as_ref().map_or("missing".into(), |p| p.display().to_string()),
        ),
        fix: "add ranges to /etc/subuid and /etc/subgid (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER) and install uidmap; without them kiln maps only your own id and chown to other ids inside RUN fails",
    });
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    checks.push(Check {
        ok: fuse.is_ok(),
        name: "/dev/fuse",
        detail: match &fuse {
            Ok(_) => "can be opened for reading and writing".into(),
            Err(e) => format!("cannot be opened: {e}"),
        },
        fix: "install fuse3 and make /dev/fuse usable (mode 0666), or pass it into the container",
    });
    let (outcomes, passthrough) = probe_in_namespaces();
    let outcome = |kind: BackendKind| {
        outcomes
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| Err(Reported("not probed".into())))
    };
    let overlay = outcome(BackendKind::Overlay);
    checks.push(Check {
        ok: overlay.is_ok(),
        name: "overlay in user namespace",
        detail: match &overlay {
            Ok(()) => "kernel overlayfs mounts inside kiln's namespaces".into(),
            Err(e) => format!("cannot mount: {e}"),
        },
        fix: "needs Linux 5.11+ for unprivileged overlayfs, and a backing filesystem overlayfs accepts (not overlayfs itself); kiln falls back to another snapshotter",
    });
    let fuse_overlay = outcome(BackendKind::Fuse);
    checks.push(Check {
        ok: fuse_overlay.is_ok(),
        name: "FUSE overlay",
        detail: match &fuse_overlay {
            Ok(()) => "kiln's FUSE overlay mounts and serves inside kiln's namespaces".into(),
            Err(e) => format!("cannot mount: {e}"),
        },
        fix: "needs /dev/fuse usable (see above) and Linux 4.18+ for FUSE in a user namespace; kiln falls back to plain copies",
    });
    let said = [
        Passthrough::Used,
        Passthrough::NotRoot,
        Passthrough::TurnedOff,
        Passthrough::NotGiven,
    ]
    .into_iter()
    .find(|p| format!("{p:?}") == passthrough);
    checks.push(Check {
        ok: true,
        name: "FUSE passthrough",
        detail: match said {
            Some(Passthrough::Used) => "used: the kernel reads and writes open files of kiln's FUSE overlay on their backing files".into(),
            Some(Passthrough::NotRoot) => "not used: only real root may register backing files (CAP_SYS_ADMIN in the initial user namespace); reads and writes go through kiln's serving threads and the kernel's writeback cache".into(),
            Some(Passthrough::TurnedOff) => "turned off (KILN_FUSE_PASSTHROUGH=0)".into(),
            Some(Passthrough::NotGiven) => "asked for and not given: it needs Linux 6.9+ built with CONFIG_FUSE_PASSTHROUGH, and kiln's root on a filesystem that is not stacked already (an overlay)".into(),
            None => format!("not probed: {passthrough}"),
        },
        fix: "",
    });
    let cgroup2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    checks.push(Check {
        ok: true,
        name: "cgroups",
        detail: if cgroup2 {
            "cgroup v2 (delegation is not used yet)".into()
        } else {
            "cgroup v1 or hybrid: kiln sets no resource limits".into()
        },
        fix: "",
    });
    let auto = auto_pick(&outcomes);
    checks.push(Check {
        ok: true,
        name: "snapshotter auto",
        detail: format!("picks {auto} (order: kernel overlay, kiln's FUSE overlay, copy)"),
        fix: "",
    });
    for c in &checks {
        writeln!(
            out,
            "{} {:<26} {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        )?;
        if !c.ok && !c.fix.is_empty() {
            writeln!(out, "     {:<26} fix: {}", "", c.fix)?;
        }
    }
    Ok(())
}
