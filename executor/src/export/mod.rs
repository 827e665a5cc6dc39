//! Exporters: the finished image written to the local store (always), then to each
//! output asked for with `-o type=…`, one module per type:
//! [`oci`] (an OCI image layout, directory or tar), [`docker`] (a `docker load` tar),
//! [`local`] (the target's filesystem into a directory), [`tar`] (the same as a tar).

mod docker;
mod image;
mod local;
mod oci;
mod push;
mod recompress;
mod tar;

use std::path::PathBuf;

use crate::error::{BuildError, SetupError};
use crate::event::Event;
use crate::image::state::StageState;
use crate::snapshots::LayerCompression;
use crate::step::StepContext;

pub use image::ImageWritten;

/// Where a build's result goes besides the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout, as a directory or (`tar`) a tar file.
    Oci {
        dest: PathBuf,
        tar: bool,
        image: ImageOutput,
    },
    /// A `docker load`-able tar.
    Docker { dest: PathBuf, image: ImageOutput },
    /// The target stage's filesystem, into a directory.
    Local { dest: PathBuf },
    /// The target stage's filesystem, as a tar file.
    Tar { dest: PathBuf },
    /// The image in the local store under its `name=`s (`type=image`), pushed to their
    /// registries with `push=true` (`type=registry` implies it); `registry.insecure=true`
    /// speaks plain http to them.
    Image {
        image: ImageOutput,
        push: bool,
        insecure: bool,
    },
}

/// What an image output (`type=oci|docker`) says about the image it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOutput {
    /// `name=`: the image's names in the output (and tags in the local store), besides
    /// `-t`.
    pub names: Vec<String>,
    /// `compression=` (with `compression-level=`): layers not in this compression are
    /// recompressed for this output.
    pub compression: Option<LayerCompression>,
    /// `force-compression=true`: every layer is recompressed, also those already in the
    /// asked compression (to apply a level).
    pub force_compression: bool,
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
    #[error("-o {0:?}: push=true needs name=REGISTRY/NAME:TAG")]
    PushWithoutName(String),
    #[error("-o {spec:?}: {option} applies to type=image and type=registry only")]
    NotARegistry { option: String, spec: String },
    #[error("unknown output type {0:?} (oci, docker, image, registry, local, tar)")]
    UnknownType(String),
    #[error("output {0:?} has no type=")]
    NoType(String),
    #[error("-o {spec:?}: {option} applies to type=oci and type=docker only")]
    NotAnImage { option: String, spec: String },
    #[error("-o {0:?}: unknown compression (gzip, zstd, uncompressed)")]
    BadCompression(String),
    #[error("-o {0:?}: compression-level must be a number")]
    BadLevel(String),
    #[error("-o {0:?}: compression-level needs compression= or force-compression=true (the build's own layers are written with --compression-level)")]
    LevelAlone(String),
    #[error("-o {0:?}: oci-mediatypes=false is not supported: kiln writes OCI media types")]
    DockerMediaTypes(String),
    #[error("-o {spec:?}: {option} must be true or false")]
    NotABool { option: String, spec: String },
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
        let mut image = ImageOutput::default();
        let mut compression = None;
        let mut level = None;
        let mut image_options = Vec::new();
        let mut push = None;
        let mut insecure = None;
        let boolean = |option: &str, v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(OutputError::NotABool {
                option: option.to_string(),
                spec: spec.to_string(),
            }),
        };
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| OutputError::BadField(field.to_string()))?;
            let k = k.trim();
            match k {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(PathBuf::from(v)),
                "tar" => tar = Some(boolean(k, v)?),
                "name" => image.names.push(v.to_string()),
                "compression" => compression = Some(v.to_string()),
                "compression-level" => {
                    level = Some(
                        v.parse::<i32>()
                            .map_err(|_| OutputError::BadLevel(spec.to_string()))?,
                    )
                }
                "force-compression" => image.force_compression = boolean(k, v)?,
                "push" => push = Some(boolean(k, v)?),
                "registry.insecure" => insecure = Some(boolean(k, v)?),
                "oci-mediatypes" => {
                    if !boolean(k, v)? {
                        return Err(OutputError::DockerMediaTypes(spec.to_string()));
                    }
                }
                other => {
                    return Err(OutputError::UnknownOption {
                        option: other.to_string(),
                        spec: spec.to_string(),
                    })
                }
            }
            if !matches!(k, "type" | "dest" | "tar" | "push" | "registry.insecure") {
                image_options.push(k.to_string());
            }
        }
        image.compression = match (compression.as_deref(), level) {
            (None, None) => None,
            (None, Some(_)) if !image.force_compression => {
                return Err(OutputError::LevelAlone(spec.to_string()))
            }
            (None, Some(l)) => Some(LayerCompression::Zstd {
                level: l,
                threads: threads(),
            }),
            (Some("zstd"), l) => Some(LayerCompression::Zstd {
                level: l.unwrap_or(3),
                threads: threads(),
            }),
            (Some("gzip"), l) => Some(LayerCompression::Gzip {
                level: l.map_or(6, |l| l.clamp(0, 9) as u32),
            }),
            (Some("uncompressed"), _) => Some(LayerCompression::None),
            (Some(_), _) => return Err(OutputError::BadCompression(spec.to_string())),
        };
        let need = |d: Option<PathBuf>| d.ok_or_else(|| OutputError::NoDest(spec.to_string()));
        let not_image = |opts: &[String]| match opts.first() {
            Some(o) => Err(OutputError::NotAnImage {
                option: o.clone(),
                spec: spec.to_string(),
            }),
            None => Ok(()),
        };
        if !matches!(kind.as_deref(), Some("image" | "registry")) {
            let only_registry = push
                .map(|_| "push")
                .or(insecure.map(|_| "registry.insecure"));
            if let Some(option) = only_registry {
                return Err(OutputError::NotARegistry {
                    option: option.to_string(),
                    spec: spec.to_string(),
                });
            }
        }
        match kind.as_deref() {
            Some(k @ ("image" | "registry")) => {
                if dest.is_some() || tar.is_some() {
                    return Err(OutputError::UnknownOption {
                        option: if dest.is_some() { "dest" } else { "tar" }.to_string(),
                        spec: spec.to_string(),
                    });
                }
                let push = push.unwrap_or(k == "registry");
                if push && image.names.is_empty() {
                    return Err(OutputError::PushWithoutName(spec.to_string()));
                }
                Ok(Output::Image {
                    image,
                    push,
                    insecure: insecure.unwrap_or(false),
                })
            }
            Some("oci") => {
                let dest = need(dest)?;
                let is_tar = tar.unwrap_or_else(|| {
                    !dest.is_dir() && dest.extension().is_some_and(|e| e == "tar")
                });
                Ok(Output::Oci {
                    dest,
                    tar: is_tar,
                    image,
                })
            }
            Some("docker") => Ok(Output::Docker {
                dest: need(dest)?,
                image,
            }),
            Some("local") => {
                not_image(&image_options)?;
                Ok(Output::Local { dest: need(dest)? })
            }
            Some("tar") => {
                not_image(&image_options)?;
                Ok(Output::Tar { dest: need(dest)? })
            }
            Some(other) => Err(OutputError::UnknownType(other.to_string())),
            None => Err(OutputError::NoType(spec.to_string())),
        }
    }

    /// The names this output gives the image (`name=`).
    pub fn names(&self) -> &[String] {
        match self {
            Output::Oci { image, .. }
            | Output::Docker { image, .. }
            | Output::Image { image, .. } => &image.names,
            Output::Local { .. } | Output::Tar { .. } => &[],
        }
    }

    /// What the progress line says was exported.
    fn describe(&self) -> String {
        match self {
            Output::Oci { dest, .. } => format!("OCI image layout {}", dest.display()),
            Output::Docker { dest, .. } => format!("docker archive {}", dest.display()),
            Output::Local { dest } => format!("filesystem into {}", dest.display()),
            Output::Tar { dest } => format!("filesystem tar {}", dest.display()),
            Output::Image { image, .. } => format!("image {}", image.names.join(", ")),
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
    let written =
        image::write(cx, target).map_err(|e| BuildError::setup("writing the image", e))?;
    // A cancel stops the export between its parts: before the tags (nothing is tagged;
    // the image's blobs are unreferenced and pruned later) and before each output.
    if cx.cancelled() {
        return Err(BuildError::Cancelled);
    }
    // -t, then every output's name=, as buildx tags them.
    let mut tags = opts.tags.clone();
    for n in opts.outputs.iter().flat_map(Output::names) {
        if !tags.contains(n) {
            tags.push(n.clone());
        }
    }
    for t in &tags {
        cx.images
            .tag(t, &written.manifest)
            .map_err(|e| BuildError::setup("writing the image", e))?;
    }
    on_event(Event::ImageWritten {
        manifest: written.manifest_digest.clone(),
        config: written.config_digest.clone(),
        tags: tags.clone(),
    });
    for out in &opts.outputs {
        if cx.cancelled() {
            return Err(BuildError::Cancelled);
        }
        let result: Result<(), SetupError> = match out {
            Output::Oci { dest, tar, image } => recompress::for_output(cx, &written, target, image)
                .and_then(|w| oci::export(cx, &w, dest, *tar, &names_of(&tags, image))),
            Output::Docker { dest, image } => recompress::for_output(cx, &written, target, image)
                .and_then(|w| docker::export(cx, &w, dest, &names_of(&tags, image))),
            Output::Local { dest } => local::export(cx, target, dest),
            Output::Tar { dest } => tar::export(cx, target, dest),
            Output::Image {
                image,
                push,
                insecure,
            } => recompress::for_output(cx, &written, target, image).and_then(|w| {
                let names = names_of(&tags, image);
                if w.manifest != written.manifest {
                    for n in &names {
                        cx.images.tag(n, &w.manifest)?;
                    }
                }
                match push {
                    true => push::push(cx, &w.manifest, &names, *insecure, on_event),
                    false => Ok(()),
                }
            }),
        };
        result.map_err(|e| {
            let what = match out {
                Output::Oci { dest, .. }
                | Output::Docker { dest, .. }
                | Output::Local { dest }
                | Output::Tar { dest } => format!("writing {}", dest.display()),
                Output::Image { image, .. } => format!("pushing {}", image.names.join(", ")),
            };
            BuildError::setup(what, e)
        })?;
        on_event(Event::Exported(out.describe()));
    }
    if opts.push {
        if cx.cancelled() {
            return Err(BuildError::Cancelled);
        }
        if opts.tags.is_empty() {
            return Err(BuildError::setup(
                "--push",
                SetupError::Unsupported("--push needs a name: -t REGISTRY/NAME:TAG".into()),
            ));
        }
        push::push(cx, &written.manifest, &opts.tags, false, on_event)
            .map_err(|e| BuildError::setup(format!("pushing {}", opts.tags.join(", ")), e))?;
    }
    Ok(written)
}

/// The names an image output carries: its own `name=`s, else the build's tags.
fn names_of(tags: &[String], image: &ImageOutput) -> Vec<String> {
    if image.names.is_empty() {
        tags.to_vec()
    } else {
        image.names.clone()
    }
}

fn threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_options_work_or_are_refused() {
        let o = Output::parse(
            "type=oci,dest=/x.tar,name=app:1,name=app:2,compression=gzip,compression-level=9",
        )
        .unwrap();
        let Output::Oci { image, tar, .. } = &o else {
            panic!("{o:?}")
        };
        assert!(tar);
        assert_eq!(image.names, ["app:1", "app:2"]);
        assert_eq!(image.compression, Some(LayerCompression::Gzip { level: 9 }));
        assert!(Output::parse("type=docker,dest=/x,oci-mediatypes=true").is_ok());
        assert_eq!(
            Output::parse("type=docker,dest=/x,oci-mediatypes=false"),
            Err(OutputError::DockerMediaTypes(
                "type=docker,dest=/x,oci-mediatypes=false".into()
            ))
        );
        assert!(matches!(
            Output::parse("type=oci,dest=/x,compression-level=3"),
            Err(OutputError::LevelAlone(_))
        ));
        assert!(matches!(
            Output::parse("type=oci,dest=/x,compression=estargz"),
            Err(OutputError::BadCompression(_))
        ));
        assert!(matches!(
            Output::parse("type=local,dest=/x,name=a"),
            Err(OutputError::NotAnImage { .. })
        ));
        assert!(matches!(
            Output::parse("type=oci,dest=/x,force-compression=yes"),
            Err(OutputError::NotABool { .. })
        ));
        assert!(matches!(
            Output::parse("type=oci,dest=/x,bogus=1"),
            Err(OutputError::UnknownOption { .. })
        ));
    }
}
