//! Which backend mounts: the one factory that probes backends and picks one, used by
//! [`crate::Snapshotter::open`], `kiln doctor` and `kiln bench`.
//!
//! `auto` tries [`AUTO_ORDER`]: kernel overlayfs (fastest, where the kernel allows it
//! here), then kiln's FUSE overlay (inside containers, on overlay-backed roots, old
//! kernels), then plain copies, which work everywhere.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::copy::CopyBackend;
use super::fuse::FuseBackend;
use super::overlay::OverlayBackend;
use super::{Backend, ProbeError};

/// What is actually mounting snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Kernel overlayfs, in the build's user and mount namespace.
    Overlay,
    /// kiln's FUSE overlay.
    Fuse,
    /// Plain copies of the lowers.
    Copy,
}

impl BackendKind {
    /// Every backend, in the order `auto` tries them.
    pub const ALL: [BackendKind; 3] = AUTO_ORDER;

    /// The name `--snapshotter` and `kiln doctor` use.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Overlay => "overlay",
            BackendKind::Fuse => "fuse",
            BackendKind::Copy => "copy",
        }
    }

    /// What it is, in words.
    pub fn description(self) -> &'static str {
        match self {
            BackendKind::Overlay => "kernel overlayfs",
            BackendKind::Fuse => "kiln's FUSE overlay",
            BackendKind::Copy => "plain copies",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<BackendChoice>()? {
            BackendChoice::Overlay => Ok(BackendKind::Overlay),
            BackendChoice::Fuse => Ok(BackendKind::Fuse),
            BackendChoice::Copy => Ok(BackendKind::Copy),
            BackendChoice::Auto => Err(UnknownBackend {
                given: s.to_string(),
                valid: "overlay, fuse, copy",
            }),
        }
    }
}

/// The order `auto` tries backends in.
pub const AUTO_ORDER: [BackendKind; 3] =
    [BackendKind::Overlay, BackendKind::Fuse, BackendKind::Copy];

/// Which backend was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// The first of [`AUTO_ORDER`] that works here.
    #[default]
    Auto,
    Overlay,
    Fuse,
    Copy,
}

impl BackendChoice {
    /// Every choice, `auto` first.
    pub const ALL: [BackendChoice; 4] = [
        BackendChoice::Auto,
        BackendChoice::Overlay,
        BackendChoice::Fuse,
        BackendChoice::Copy,
    ];

    /// The name `--snapshotter` takes.
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Overlay => "overlay",
            BackendChoice::Fuse => "fuse",
            BackendChoice::Copy => "copy",
        }
    }

    /// The backend asked for by name, `None` for `auto`.
    pub fn kind(self) -> Option<BackendKind> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Overlay => Some(BackendKind::Overlay),
            BackendChoice::Fuse => Some(BackendKind::Fuse),
            BackendChoice::Copy => Some(BackendKind::Copy),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown snapshotter {given:?} (valid: {valid})")]
pub struct UnknownBackend {
    pub given: String,
    pub valid: &'static str,
}

impl FromStr for BackendChoice {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendChoice::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownBackend {
                given: s.to_string(),
                valid: "auto, overlay, fuse, copy",
            })
    }
}

/// The backend of `kind`.
pub fn backend_for(kind: BackendKind) -> Arc<dyn Backend> {
    match kind {
        BackendKind::Overlay => Arc::new(OverlayBackend),
        BackendKind::Fuse => Arc::new(FuseBackend),
        BackendKind::Copy => Arc::new(CopyBackend),
    }
}

/// Whether `kind` works here: a probe mount in a fresh directory under `scratch`,
/// removed afterwards.
pub fn probe(kind: BackendKind, scratch: &Path) -> Result<(), ProbeError> {
    let dir = scratch.join(format!("probe-{kind}"));
    let outcome = backend_for(kind).works_here(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// Every backend's probe, in [`AUTO_ORDER`] (for `kiln doctor`).
pub fn probe_all(scratch: &Path) -> Vec<(BackendKind, Result<(), ProbeError>)> {
    AUTO_ORDER
        .into_iter()
        .map(|k| (k, probe(k, scratch)))
        .collect()
}

/// The backend `auto` picks given each backend's probe outcome: the first of
/// [`AUTO_ORDER`] that works, copy when none is reported working.
pub fn auto_pick<E>(outcomes: &[(BackendKind, Result<(), E>)]) -> BackendKind {
    AUTO_ORDER
        .into_iter()
        .find(|k| outcomes.iter().any(|(o, r)| o == k && r.is_ok()))
        .unwrap_or(BackendKind::Copy)
}

/// A backend picked for a choice, and why.
#[derive(Clone)]
pub struct Chosen {
    pub backend: Arc<dyn Backend>,
    pub kind: BackendKind,
    pub reason: String,
}

impl fmt::Debug for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chosen")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Picks the backend for `choice`, probing in `scratch`. A backend asked for by name
/// must pass its probe (copy always does); `auto` probes in [`AUTO_ORDER`] and stops at
/// the first that works.
pub fn choose(choice: BackendChoice, scratch: &Path) -> Result<Chosen, (BackendKind, ProbeError)> {
    let chosen = |kind: BackendKind, reason: String| Chosen {
        backend: backend_for(kind),
        kind,
        reason,
    };
    if let Some(kind) = choice.kind() {
        probe(kind, scratch).map_err(|e| (kind, e))?;
        return Ok(chosen(kind, format!("asked for with --snapshotter {kind}")));
    }
    let mut unavailable = Vec::new();
    for kind in AUTO_ORDER {
        match probe(kind, scratch) {
            Ok(()) if unavailable.is_empty() => {
                return Ok(chosen(
                    kind,
                    format!("auto: {} works here", kind.description()),
                ))
            }
            Ok(()) => {
                return Ok(chosen(
                    kind,
                    format!(
                        "auto: {}, using {}",
                        unavailable.join(", "),
                        kind.description()
                    ),
                ))
            }
            Err(e) => {
                tracing::debug!("snapshotter {kind} unavailable: {e}");
                unavailable.push(format!("{} unavailable ({e})", kind.description()));
            }
        }
    }
    // Copy's probe never fails; should it one day, copies are still the answer.
    Ok(chosen(
        BackendKind::Copy,
        format!("auto: {}, using plain copies", unavailable.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for c in BackendChoice::ALL {
            assert_eq!(c.to_string().parse::<BackendChoice>(), Ok(c));
        }
        for k in BackendKind::ALL {
            assert_eq!(k.to_string().parse::<BackendKind>(), Ok(k));
        }
        let e = "zfs".parse::<BackendChoice>().unwrap_err().to_string();
        assert!(e.contains("auto, overlay, fuse, copy"), "{e}");
        assert!("auto".parse::<BackendKind>().is_err());
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
    }

    #[test]
    fn auto_picks_the_first_that_works() {
        let r = |ok: bool| if ok { Ok(()) } else { Err("no") };
        let outcomes = |o: bool, f: bool| {
            vec![
                (BackendKind::Overlay, r(o)),
                (BackendKind::Fuse, r(f)),
                (BackendKind::Copy, r(true)),
            ]
        };
        assert_eq!(auto_pick(&outcomes(true, true)), BackendKind::Overlay);
        assert_eq!(auto_pick(&outcomes(false, true)), BackendKind::Fuse);
        assert_eq!(auto_pick(&outcomes(false, false)), BackendKind::Copy);
        assert_eq!(auto_pick::<()>(&[]), BackendKind::Copy);
    }
}
