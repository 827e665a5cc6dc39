//! Writing the finished image: config and manifest blobs, tags in the local store, and the
//! outputs asked for (`-o type=oci|docker|local|tar`).

use std::fs;
use std::path::PathBuf;

use oci_spec::image::{ImageManifestBuilder, MediaType};

use super::stage::{Session, StageState};
use super::{setup, BuildError, BuildResult, Event};
use crate::store::descriptor;

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

impl Output {
    /// Parses BuildKit's `-o` syntax: `type=oci,dest=PATH`, or a bare `PATH` (local).
    pub fn parse(spec: &str) -> Result<Output, String> {
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
                .ok_or_else(|| format!("invalid output field {field:?}"))?;
            match k.trim() {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(PathBuf::from(v)),
                "tar" => tar = Some(v == "true"),
                "name" | "compression" | "compression-level" | "oci-mediatypes"
                | "force-compression" => {}
                other => return Err(format!("unknown output option {other:?} in {spec:?}")),
            }
        }
        let need = |d: Option<PathBuf>| d.ok_or_else(|| format!("output {spec:?} needs dest=PATH"));
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
            Some("image") | Some("registry") => {
                Err("pushing to registries is not available yet".into())
            }
            Some(other) => Err(format!(
                "unknown output type {other:?} (oci, docker, local, tar)"
            )),
            None => Err(format!("output {spec:?} has no type=")),
        }
    }
}

pub(super) fn finish(
    session: &mut Session<'_>,
    target: &StageState,
    on_event: &mut dyn FnMut(Event),
) -> Result<BuildResult, BuildError> {
    let opts = session.opts();
    let mut config = target.config.clone();
    config.created = Some(session.created().to_string());
    config.rootfs.diff_ids = target.layers.iter().map(|l| l.diff_id.clone()).collect();
    let config_json = serde_json::to_vec(&config)
        .map_err(|e| setup("encoding the image config")(e.to_string()))?;
    let images = session.images.clone();
    let store_err = |e: crate::store::ImageStoreError| setup("writing the image")(e.to_string());
    let config_digest = images.put_blob(&config_json).map_err(store_err)?;
    let mut layers = Vec::new();
    for l in &target.layers {
        let mt = media_type(&l.media_type);
        layers.push(descriptor(mt, &l.digest, l.size).map_err(store_err)?);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config_json.len() as u64,
            )
            .map_err(store_err)?,
        )
        .layers(layers)
        .build()
        .map_err(|e| setup("making the manifest")(e.to_string()))?;
    let manifest_json = manifest
        .to_string()
        .map_err(|e| setup("encoding the manifest")(e.to_string()))?;
    let manifest_digest = images
        .put_blob(manifest_json.as_bytes())
        .map_err(store_err)?;
    let mdesc = descriptor(
        MediaType::ImageManifest,
        &manifest_digest,
        manifest_json.len() as u64,
    )
    .map_err(store_err)?;
    for t in &opts.tags {
        images.tag(t, &mdesc).map_err(store_err)?;
    }
    on_event(Event::ImageWritten {
        manifest: manifest_digest.clone(),
        config: config_digest.clone(),
        tags: opts.tags.clone(),
    });
    let mut blobs: Vec<String> = target.layers.iter().map(|l| l.digest.clone()).collect();
    blobs.push(config_digest.clone());
    blobs.push(manifest_digest.clone());
    for out in &opts.outputs {
        match out {
            Output::Oci { dest, tar } => {
                let fail = |e: crate::store::ImageStoreError| {
                    setup(format!("writing {}", dest.display()))(e.to_string())
                };
                let tag = opts.tags.first().map(String::as_str);
                if *tar {
                    let dir =
                        tempfile::tempdir().map_err(|e| setup("oci output")(e.to_string()))?;
                    images.write_layout(dir.path(), &mdesc, tag).map_err(fail)?;
                    crate::store::archive::tar_dir(dir.path(), dest).map_err(fail)?;
                } else {
                    images.write_layout(dest, &mdesc, tag).map_err(fail)?;
                }
            }
            Output::Docker { dest } => {
                images
                    .write_docker_archive(dest, &mdesc, &opts.tags)
                    .map_err(|e| setup(format!("writing {}", dest.display()))(e.to_string()))?;
            }
            Output::Local { dest } => {
                let view = session
                    .view_of(target)
                    .map_err(setup("mounting the result"))?;
                fs::create_dir_all(dest)
                    .map_err(|e| setup(format!("creating {}", dest.display()))(e.to_string()))?;
                kiln_snapshotter::backend::copy::materialize(std::slice::from_ref(&view), dest)
                    .map_err(|e| setup(format!("writing {}", dest.display()))(e.to_string()))?;
                session.drop_views();
            }
            Output::Tar { dest } => {
                let view = session
                    .view_of(target)
                    .map_err(setup("mounting the result"))?;
                crate::store::archive::tar_dir(&view, dest)
                    .map_err(|e| setup(format!("writing {}", dest.display()))(e.to_string()))?;
                session.drop_views();
            }
        }
        on_event(Event::Exported(describe(out)));
    }
    Ok(BuildResult {
        manifest_digest,
        config_digest,
    })
}

fn describe(o: &Output) -> String {
    match o {
        Output::Oci { dest, .. } => format!("OCI image layout {}", dest.display()),
        Output::Docker { dest } => format!("docker archive {}", dest.display()),
        Output::Local { dest } => format!("filesystem into {}", dest.display()),
        Output::Tar { dest } => format!("filesystem tar {}", dest.display()),
    }
}

fn media_type(s: &str) -> MediaType {
    match s {
        kiln_snapshotter::layer::MEDIA_TYPE_ZSTD => MediaType::ImageLayerZstd,
        kiln_snapshotter::layer::MEDIA_TYPE_GZIP => MediaType::ImageLayerGzip,
        kiln_snapshotter::layer::MEDIA_TYPE_TAR => MediaType::ImageLayer,
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        other => MediaType::Other(other.to_string()),
    }
}
