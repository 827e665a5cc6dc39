//! Writing the finished image: config and manifest blobs, tags in the local store, and the
//! outputs asked for (`-o type=oci|docker|local|tar`).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageManifestBuilder, MediaType};

use super::stage::{Session, StageState};
use super::{setup, BuildError, BuildResult, Event};
use crate::store::{descriptor, ImageStore, REF_NAME};

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
                let dir = if *tar {
                    tempfile::tempdir()
                        .map_err(|e| setup("oci output")(e.to_string()))?
                        .keep()
                } else {
                    dest.clone()
                };
                write_layout(
                    &images,
                    &dir,
                    &blobs,
                    &mdesc,
                    opts.tags.first().map(String::as_str),
                )
                .map_err(|e| setup(format!("writing {}", dest.display()))(e))?;
                if *tar {
                    tar_dir(&dir, dest)
                        .map_err(|e| setup(format!("writing {}", dest.display()))(e))?;
                    let _ = fs::remove_dir_all(&dir);
                }
            }
            Output::Docker { dest } => {
                write_docker(&images, dest, target, &config_digest, &opts.tags)
                    .map_err(|e| setup(format!("writing {}", dest.display()))(e))?;
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
                tar_dir(&view, dest)
                    .map_err(|e| setup(format!("writing {}", dest.display()))(e))?;
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

fn write_layout(
    images: &ImageStore,
    dir: &Path,
    blobs: &[String],
    manifest: &oci_spec::image::Descriptor,
    tag: Option<&str>,
) -> Result<(), String> {
    let out = ImageStore::open(dir).map_err(|e| e.to_string())?;
    for b in blobs {
        let dst = out.blob_path(b);
        if !dst.exists() {
            fs::copy(images.blob_path(b), &dst).map_err(|e| format!("copying {b}: {e}"))?;
        }
    }
    let mut d = manifest.clone();
    if let Some(t) = tag {
        // As BuildKit's OCI exporter: the tag alone as ref.name, the full name for containerd.
        let full = crate::store::normalize_reference(t);
        let tag_part = full
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| "latest".into());
        d.set_annotations(Some(HashMap::from([
            (REF_NAME.to_string(), tag_part),
            ("io.containerd.image.name".to_string(), full),
        ])));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [d],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}

fn write_docker(
    images: &ImageStore,
    dest: &Path,
    target: &StageState,
    config: &str,
    tags: &[String],
) -> Result<(), String> {
    let file = fs::File::create(dest).map_err(|e| e.to_string())?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |name: &str, path: &Path| -> Result<(), String> {
        let mut f = fs::File::open(path).map_err(|e| e.to_string())?;
        tar.append_file(name, &mut f).map_err(|e| e.to_string())
    };
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    add(
        &format!("blobs/sha256/{}", hex(config)),
        &images.blob_path(config),
    )?;
    let mut layer_names = Vec::new();
    for l in &target.layers {
        let name = format!("blobs/sha256/{}", hex(&l.digest));
        add(&name, &images.blob_path(&l.digest))?;
        layer_names.push(name);
    }
    let repo_tags: Vec<String> = tags.iter().map(|t| crate::store::tag_name(t)).collect();
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(config)),
        "RepoTags": repo_tags,
        "Layers": layer_names,
    }]);
    let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", &bytes[..])
        .map_err(|e| e.to_string())?;
    let mut w = tar.into_inner().map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())
}

fn tar_dir(dir: &Path, dest: &Path) -> Result<(), String> {
    let file = fs::File::create(dest).map_err(|e| e.to_string())?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).map_err(|e| e.to_string())?;
    let mut w = tar.into_inner().map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())
}
