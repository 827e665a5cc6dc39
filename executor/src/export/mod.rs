//! Exporters: the finished image written to the local store (always), then to each
//! output asked for with `-o type=…`, one module per type:
//! [`oci`] (an OCI image layout, directory or tar), [`docker`] (a `docker load` tar),
//! [`local`] (the target's filesystem into a directory), [`tar`] (the same as a tar).

mod docker;
mod image;
mod local;
mod oci;
mod tar;

use std::path::PathBuf;

use crate::error::{BuildError, SetupError};
use crate::event::Event;
use crate::image::state::StageState;
use crate::step::StepContext;

pub use image::ImageWritten;

/// Where a build's result goes besides the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout, as a directory or (`tar`) a tar file.
    Oci { dest: PathBuf, tar: bool },
    /// A `docker load`-able tar.
    Docker { dest: PathBuf },
    /// The target stage's filesystem, into a directory.
    Local { dest: PathBuf },
    /// The target stage's filesystem, as a tar file.
    Tar { dest: PathBuf },
}

/// Why an `-o` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("invalid output field {0:?}")]
    BadField(String),
    #[error("unknown output option {option:?} in {spec:?}")]
    UnknownOption { option: String, spec: String },
    #[error("output {0:?} needs dest=PATH")]
    NoDest(String),
    #[error("pushing to registries is not available yet")]
    Registry,
    #[error("unknown output type {0:?} (oci, docker, local, tar)")]
    UnknownType(String),
    #[error("output {0:?} has no type=")]
    NoType(String),
}

impl Output {
    /// Parses BuildKit's `-o` syntax: `type=oci,dest=PATH`, or a bare `PATH` (local).
    pub fn parse(spec: &str) -> Result<Output, OutputError> {
        if !spec.contains('=') {
            return Ok(Output::Local {
                dest: PathBuf::from(spec),
            });
        }
        let mut kind = None;
        let mut dest = None;
        let mut tar = None;
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| OutputError::BadField(field.to_string()))?;
            match k.trim() {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(PathBuf::from(v)),
                "tar" => tar = Some(v == "true"),
                "name" | "compression" | "compression-level" | "oci-mediatypes"
                | "force-compression" => {}
                other => {
                    return Err(OutputError::UnknownOption {
                        option: other.to_string(),
                        spec: spec.to_string(),
                    })
                }
            }
        }
        let need = |d: Option<PathBuf>| d.ok_or_else(|| OutputError::NoDest(spec.to_string()));
        match kind.as_deref() {
            Some("oci") => {
                let dest = need(dest)?;
                let is_tar = tar.unwrap_or_else(|| {
                    !dest.is_dir() && dest.extension().is_some_and(|e| e == "tar")
                });
                Ok(Output::Oci { dest, tar: is_tar })
            }
            Some("docker") => Ok(Output::Docker { dest: need(dest)? }),
            Some("local") => Ok(Output::Local { dest: need(dest)? }),
            Some("tar") => Ok(Output::Tar { dest: need(dest)? }),
            Some("image") | Some("registry") => Err(OutputError::Registry),
            Some(other) => Err(OutputError::UnknownType(other.to_string())),
            None => Err(OutputError::NoType(spec.to_string())),
        }
    }

    /// What the progress line says was exported.
    fn describe(&self) -> String {
        match self {
            Output::Oci { dest, .. } => format!("OCI image layout {}", dest.display()),
            Output::Docker { dest } => format!("docker archive {}", dest.display()),
            Output::Local { dest } => format!("filesystem into {}", dest.display()),
            Output::Tar { dest } => format!("filesystem tar {}", dest.display()),
        }
    }
}

/// Writes the target's image to the store, tags it, and exports every output.
pub(crate) fn finish(
    cx: &StepContext<'_>,
    target: &StageState,
    on_event: &mut dyn FnMut(Event),
) -> Result<ImageWritten, BuildError> {
    let opts = cx.opts;
    let written = image::write(cx, target)?;
    for t in &opts.tags {
        cx.images
            .tag(t, &written.manifest)
            .map_err(|e| BuildError::setup("writing the image", e))?;
    }
    on_event(Event::ImageWritten {
        manifest: written.manifest_digest.clone(),
        config: written.config_digest.clone(),
        tags: opts.tags.clone(),
    });
    for out in &opts.outputs {
        let result: Result<(), SetupError> = match out {
            Output::Oci { dest, tar } => oci::export(cx, &written, dest, *tar),
            Output::Docker { dest } => docker::export(cx, &written, dest),
            Output::Local { dest } => local::export(cx, target, dest),
            Output::Tar { dest } => tar::export(cx, target, dest),
        };
        result.map_err(|e| {
            let dest = match out {
                Output::Oci { dest, .. }
                | Output::Docker { dest }
                | Output::Local { dest }
                | Output::Tar { dest } => dest,
            };
            BuildError::setup(format!("writing {}", dest.display()), e)
        })?;
        on_event(Event::Exported(out.describe()));
    }
    Ok(written)
}
