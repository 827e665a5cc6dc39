//! Images in and out of the store as files: OCI image layouts (directory or tar) and
//! `docker save` archives (`manifest.json` + blobs), the forms `skopeo`, `podman load` and
//! `docker load` read and write; plus listing and untagging.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest as _, Sha256};

use crate::snapshots::Lease;

use super::{descriptor, normalize_reference, tag_name, ImageStore, ImageStoreError, REF_NAME};

/// The two archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Oci,
    Docker,
}

fn invalid(what: &'static str, path: &Path, why: &'static str) -> ImageStoreError {
    ImageStoreError::Invalid {
        what,
        path: path.to_path_buf(),
        why,
    }
}

fn bad_json(what: &'static str, path: &Path) -> impl FnOnce(serde_json::Error) -> ImageStoreError {
    let path = path.to_path_buf();
    move |source| ImageStoreError::Json { what, path, source }
}

fn io_at(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageStoreError {
    let path = path.to_path_buf();
    move |source| ImageStoreError::Io {
        context,
        path,
        source,
    }
}

/// One tag of the store, for `kiln images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub tag: String,
    pub manifest: String,
    pub config: String,
    /// Compressed size: config and layers.
    pub size: u64,
    pub created: Option<String>,
}

impl ImageStore {
    /// Every tag, in `index.json` order.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageStoreError> {
        let mut out = Vec::new();
        for d in self.index()?.manifests() {
            let Some(tag) = d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
            else {
                continue;
            };
            let img = self.load(d)?;
            // Sizes come from the manifest as written: never trusted to add up.
            let size = img
                .manifest
                .layers()
                .iter()
                .fold(img.manifest.config().size(), |a, l| {
                    a.saturating_add(l.size())
                });
            out.push(ImageSummary {
                tag,
                manifest: d.digest().to_string(),
                config: img.manifest.config().digest().to_string(),
                size,
                created: img.config.created.clone(),
            });
        }
        Ok(out)
    }

    /// Removes tag `name`; whether it existed. Blobs stay (another tag may use them).
    pub fn untag(&self, name: &str) -> Result<bool, ImageStoreError> {
        let _lock = self.lock()?;
        let wanted = normalize_reference(name);
        let index = self.index()?;
        let before = index.manifests().len();
        let kept: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_none_or(|n| n != name && normalize_reference(n) != wanted)
            })
            .cloned()
            .collect();
        if kept.len() == before {
            return Ok(false);
        }
        self.write_index(kept)?;
        Ok(true)
    }

    /// Copies blob `digest` from `from` unless this store has it.
    pub fn copy_blob_from(&self, from: &ImageStore, digest: &str) -> Result<(), ImageStoreError> {
        self.copy_blob(from, digest, false)
    }

    /// Copies blob `digest` from a store kiln did not write (an OCI layout given as a
    /// context, a cache layout): its content must hash to `digest`, else nothing is
    /// stored.
    pub fn copy_verified_from(
        &self,
        from: &ImageStore,
        digest: &str,
    ) -> Result<(), ImageStoreError> {
        self.copy_blob(from, digest, true)
    }

    /// Copies blob `digest` from `from` unless this store has it; with `verify`, its
    /// content must hash to `digest` (blobs of an archive being loaded), else nothing is
    /// stored.
    fn copy_blob(
        &self,
        from: &ImageStore,
        digest: &str,
        verify: bool,
    ) -> Result<(), ImageStoreError> {
        let dst = self.blob_path(digest);
        if dst.exists() {
            return Ok(());
        }
        let src = from.blob_path(digest);
        let mut tmp = tempfile::NamedTempFile::new_in(self.blob_dir())
            .map_err(io_at("writing in", &self.blob_dir()))?;
        let mut f = fs::File::open(&src).map_err(io_at("reading blob", &src))?;
        if verify {
            let mut hashing = HashingWriter {
                inner: &mut tmp,
                hasher: Sha256::new(),
            };
            io::copy(&mut f, &mut hashing).map_err(io_at("copying blob", &src))?;
            let actual = format!("sha256:{:x}", hashing.hasher.finalize());
            if actual != digest {
                return Err(ImageStoreError::DigestMismatch {
                    digest: digest.to_string(),
                    path: src,
                    actual,
                });
            }
        } else {
            io::copy(&mut f, &mut tmp).map_err(io_at("copying blob", &src))?;
        }
        tmp.as_file().sync_all().map_err(io_at("writing", &dst))?;
        tmp.persist(&dst)
            .map_err(|e| io_at("writing", &dst)(e.error))?;
        Ok(())
    }

    /// Writes the image `manifest` as an OCI layout in `dir` (tag `tag`, as BuildKit's
    /// OCI exporter: the tag alone as `ref.name`, the full name for containerd).
    pub fn write_layout(
        &self,
        dir: &Path,
        manifest: &Descriptor,
        tag: Option<&str>,
    ) -> Result<(), ImageStoreError> {
        let out = ImageStore::open(dir)?;
        for d in self.image_blobs(manifest)? {
            out.copy_blob_from(self, &d)?;
        }
        out.write_index(vec![layout_descriptor(manifest, tag)])
    }

    /// The same layout as one tar at `dest`, streamed from the store's blobs (no copy of
    /// the image on the way).
    pub fn write_layout_tar(
        &self,
        dest: &Path,
        manifest: &Descriptor,
        tag: Option<&str>,
    ) -> Result<(), ImageStoreError> {
        let blobs = self.image_blobs(manifest)?;
        let index = super::index_json(vec![layout_descriptor(manifest, tag)], dest)?;
        let out = OutputFile::create(dest)?;
        let mut tar = tar::Builder::new(io::BufWriter::new(out.file()?));
        let mut data = |name: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes)
                .map_err(io_at("writing", dest))
        };
        data("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        data("index.json", index.as_bytes())?;
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(0o755);
            header.set_cksum();
            tar.append_data(&mut header, dir, io::empty())
                .map_err(io_at("writing", dest))?;
        }
        for d in &blobs {
            let path = self.blob_path(d);
            let mut f = fs::File::open(&path).map_err(io_at("reading", &path))?;
            let name = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            tar.append_file(name, &mut f)
                .map_err(io_at("writing", dest))?;
        }
        let mut w = tar.into_inner().map_err(io_at("writing", dest))?;
        w.flush().map_err(io_at("writing", dest))?;
        drop(w);
        out.persist()
    }

    /// Every blob of the image `manifest` names, the manifest first.
    fn image_blobs(&self, manifest: &Descriptor) -> Result<Vec<String>, ImageStoreError> {
        let img = self.load(manifest)?;
        Ok(std::iter::once(manifest.digest().to_string())
            .chain(std::iter::once(img.manifest.config().digest().to_string()))
            .chain(img.manifest.layers().iter().map(|l| l.digest().to_string()))
            .collect())
    }

    /// Writes `manifest` as a `docker load`-able tar at `dest`, tagged `tags`.
    pub fn write_docker_archive(
        &self,
        dest: &Path,
        manifest: &Descriptor,
        tags: &[String],
    ) -> Result<(), ImageStoreError> {
        let img = self.load(manifest)?;
        let out = OutputFile::create(dest)?;
        let mut tar = tar::Builder::new(io::BufWriter::new(out.file()?));
        let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
        let config = img.manifest.config().digest().to_string();
        let mut add = |name: &str, path: &Path| -> Result<(), ImageStoreError> {
            let mut f = fs::File::open(path).map_err(io_at("reading", path))?;
            tar.append_file(name, &mut f)
                .map_err(io_at("writing", dest))
        };
        add(
            &format!("blobs/sha256/{}", hex(&config)),
            &self.blob_path(&config),
        )?;
        let mut layers = Vec::new();
        for l in img.manifest.layers() {
            let d = l.digest().to_string();
            let name = format!("blobs/sha256/{}", hex(&d));
            add(&name, &self.blob_path(&d))?;
            layers.push(name);
        }
        let repo_tags: Vec<String> = tags.iter().map(|t| tag_name(t)).collect();
        let json = serde_json::to_vec(&serde_json::json!([{
            "Config": format!("blobs/sha256/{}", hex(&config)),
            "RepoTags": repo_tags,
            "Layers": layers,
        }]))
        .map_err(bad_json("docker manifest", dest))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "manifest.json", &json[..])
            .map_err(io_at("writing", dest))?;
        let mut w = tar.into_inner().map_err(io_at("writing", dest))?;
        w.flush().map_err(io_at("writing", dest))?;
        out.persist()
    }

    /// `kiln save`: image `name` to `dest` in `format` (OCI as a tar).
    pub fn save(
        &self,
        name: &str,
        dest: &Path,
        format: ArchiveFormat,
    ) -> Result<(), ImageStoreError> {
        let _lease = Lease::shared(&self.root)?;
        let desc = self
            .resolve(name)?
            .ok_or_else(|| invalid("image", Path::new(name), "no such image in the store"))?;
        match format {
            ArchiveFormat::Docker => self.write_docker_archive(dest, &desc, &[name.to_string()]),
            ArchiveFormat::Oci => self.write_layout_tar(dest, &desc, Some(name)),
        }
    }

    /// `kiln load`: every image of an OCI or docker archive (a tar file, or an OCI layout
    /// directory) into the store; returns the tags it set.
    pub fn load_archive(&self, src: &Path) -> Result<Vec<String>, ImageStoreError> {
        // Blobs are written before they are tagged: no collection in between.
        let _lease = Lease::shared(&self.root)?;
        let tmp;
        let dir = if src.is_dir() {
            src.to_path_buf()
        } else {
            tmp = tempfile::tempdir().map_err(io_at("unpacking", src))?;
            unpack_plain_files(src, tmp.path())?;
            tmp.path().to_path_buf()
        };
        if dir.join("index.json").exists() {
            self.load_layout(&dir)
        } else if dir.join("manifest.json").exists() {
            self.load_docker(&dir)
        } else {
            Err(invalid(
                "archive",
                src,
                "neither an OCI layout (index.json) nor a docker archive (manifest.json)",
            ))
        }
    }

    fn load_layout(&self, dir: &Path) -> Result<Vec<String>, ImageStoreError> {
        let layout = ImageStore {
            root: dir.to_path_buf(),
        };
        let mut tags = Vec::new();
        for d in layout.index()?.manifests() {
            let img = layout.load(d)?;
            for l in img.manifest.layers() {
                self.copy_blob(&layout, l.digest().as_ref(), true)?;
            }
            self.copy_blob(&layout, img.manifest.config().digest().as_ref(), true)?;
            self.copy_blob(&layout, d.digest().as_ref(), true)?;
            let ann = d.annotations().clone().unwrap_or_default();
            let name = ann
                .get("io.containerd.image.name")
                .or_else(|| ann.get(REF_NAME))
                .cloned();
            if let Some(n) = name {
                self.tag(&n, d)?;
                tags.push(tag_name(&n));
            }
        }
        Ok(tags)
    }

    fn load_docker(&self, dir: &Path) -> Result<Vec<String>, ImageStoreError> {
        let mpath = dir.join("manifest.json");
        let text = fs::read(&mpath).map_err(io_at("reading", &mpath))?;
        let entries: Vec<serde_json::Value> =
            serde_json::from_slice(&text).map_err(bad_json("docker manifest", &mpath))?;
        let mut tags = Vec::new();
        for e in entries {
            let config_file = e["Config"]
                .as_str()
                .ok_or_else(|| invalid("docker manifest", &mpath, "no Config"))?;
            let config_bytes =
                fs::read(safe_join(dir, config_file)?).map_err(io_at("reading", &mpath))?;
            let mut layers = Vec::new();
            for l in e["Layers"].as_array().cloned().unwrap_or_default() {
                let name = l
                    .as_str()
                    .ok_or_else(|| invalid("docker manifest", &mpath, "bad layer"))?;
                let path = safe_join(dir, name)?;
                let (digest, size, media) = self.put_blob_file(&path)?;
                layers.push(descriptor(media, &digest, size)?);
            }
            let (mdesc, _) = self.put_image(&config_bytes, layers)?;
            for t in e["RepoTags"].as_array().cloned().unwrap_or_default() {
                if let Some(t) = t.as_str() {
                    self.tag(t, &mdesc)?;
                    tags.push(tag_name(t));
                }
            }
        }
        Ok(tags)
    }

    /// Stores a file as a blob (hashing while copying); its digest, size and layer media type.
    fn put_blob_file(&self, path: &Path) -> Result<(String, u64, MediaType), ImageStoreError> {
        let mut f = fs::File::open(path).map_err(io_at("reading", path))?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.blob_dir())
            .map_err(io_at("writing in", &self.blob_dir()))?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io_at("reading", path))?;
            if n == 0 {
                break;
            }
            if head.len() < 4 {
                head.extend_from_slice(&buf[..n.min(4)]);
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_at("writing", path))?;
            size += n as u64;
        }
        let digest = format!("sha256:{:x}", hasher.finalize());
        let dst = self.blob_path(&digest);
        tmp.persist(&dst)
            .map_err(|e| io_at("writing", &dst)(e.error))?;
        let media = if head.starts_with(&[0x1f, 0x8b]) {
            MediaType::ImageLayerGzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            MediaType::ImageLayerZstd
        } else {
            MediaType::ImageLayer
        };
        Ok((digest, size, media))
    }
}

fn safe_join(dir: &Path, name: &str) -> Result<PathBuf, ImageStoreError> {
    let mut out = dir.to_path_buf();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(invalid(
                    "archive entry",
                    Path::new(name),
                    "leaves the archive",
                ))
            }
        }
    }
    Ok(out)
}

/// Unpacks the regular files of a tar into `dir` (links and devices are not needed for
/// image archives and are skipped). An entry whose name would leave `dir` (absolute, or
/// climbing with `..`) refuses the whole archive, before anything reaches the store.
fn unpack_plain_files(src: &Path, dir: &Path) -> Result<(), ImageStoreError> {
    let f = fs::File::open(src).map_err(io_at("reading", src))?;
    let mut ar = tar::Archive::new(io::BufReader::new(f));
    for e in ar.entries().map_err(io_at("reading", src))? {
        let mut e = e.map_err(io_at("reading", src))?;
        let name = e
            .path()
            .map_err(io_at("reading", src))?
            .to_string_lossy()
            .into_owned();
        let target = safe_join(dir, &name).map_err(|_| ImageStoreError::UnsafeEntry {
            archive: src.to_path_buf(),
            entry: name.clone(),
        })?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).map_err(io_at("creating", p))?;
        }
        let mut out = fs::File::create(&target).map_err(io_at("writing", &target))?;
        io::copy(&mut e, &mut out).map_err(io_at("writing", &target))?;
    }
    Ok(())
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `manifest`'s descriptor in an exported layout's `index.json`, tagged `tag` as
/// BuildKit's OCI exporter does: the tag alone as `ref.name`, the full name for
/// containerd.
fn layout_descriptor(manifest: &Descriptor, tag: Option<&str>) -> Descriptor {
    let mut d = manifest.clone();
    d.set_annotations(None);
    if let Some(t) = tag {
        let full = normalize_reference(t);
        let tag_part = full
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| "latest".into());
        d.set_annotations(Some(HashMap::from([
            (REF_NAME.to_string(), tag_part),
            ("io.containerd.image.name".to_string(), full),
        ])));
    }
    d
}

/// A tar of the tree at `dir` (symlinks kept as links).
pub fn tar_dir(dir: &Path, dest: &Path) -> Result<(), ImageStoreError> {
    let out = OutputFile::create(dest)?;
    let mut tar = tar::Builder::new(io::BufWriter::new(out.file()?));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)
        .map_err(io_at("writing", dest))?;
    let mut w = tar.into_inner().map_err(io_at("writing", dest))?;
    w.flush().map_err(io_at("writing", dest))?;
    drop(w);
    out.persist()
}

/// A file kiln writes for the user (`-o type=…,dest=FILE`, `kiln save -o`), written
/// under a temporary name beside `dest` (`.NAME.kiln-XXXXXX`) and renamed over it only
/// when whole: an error, a cancel or a kill mid-write leaves what was at `dest` before,
/// never a truncated archive under the name the user asked for. A temporary a kill left
/// is named for its destination, so it is seen for what it is. `-` (standard output)
/// and other non-regular destinations (a FIFO, `/dev/stdout`) are written in place.
pub struct OutputFile {
    dest: PathBuf,
    temp: Option<tempfile::NamedTempFile>,
}

impl OutputFile {
    pub fn create(dest: &Path) -> Result<OutputFile, ImageStoreError> {
        let special = fs::metadata(dest).is_ok_and(|m| !m.is_file());
        if special {
            return Ok(OutputFile {
                dest: dest.to_path_buf(),
                temp: None,
            });
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // 0666 less the umask, as a file the user's shell would create.
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.kiln-"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(io_at("creating a file in", dir))?;
        Ok(OutputFile {
            dest: dest.to_path_buf(),
            temp: Some(temp),
        })
    }

    /// The file to write into.
    pub fn file(&self) -> Result<fs::File, ImageStoreError> {
        match &self.temp {
            Some(t) => t.as_file().try_clone(),
            None => fs::OpenOptions::new().write(true).open(&self.dest),
        }
        .map_err(io_at("writing", &self.dest))
    }

    /// Syncs the whole file and gives it its name.
    pub fn persist(self) -> Result<(), ImageStoreError> {
        let Some(temp) = self.temp else {
            return Ok(());
        };
        temp.as_file()
            .sync_all()
            .map_err(io_at("writing", &self.dest))?;
        temp.persist(&self.dest)
            .map_err(|e| io_at("writing", &self.dest)(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of (raw name, body) regular files, names written into the header as given.
    fn raw_tar(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, body) in entries {
            let mut h = tar::Header::new_gnu();
            if let Some(gnu) = h.as_gnu_mut() {
                gnu.name = [0; 100];
                gnu.name[..name.len()].copy_from_slice(name);
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn store_is_empty(store: &ImageStore) {
        assert!(store.index().unwrap().manifests().is_empty());
        assert!(store.blob_files().unwrap().is_empty());
    }

    #[test]
    fn archives_with_entries_leaving_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("root")).unwrap();
        for bad in [&b"../escaped"[..], b"/abs/escaped", b"blobs/../../escaped"] {
            let archive = tmp.path().join("bad.tar");
            let tar = raw_tar(&[(b"manifest.json", b"[]"), (bad, b"x")]);
            fs::write(&archive, tar).unwrap();
            let err = store.load_archive(&archive).unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, ImageStoreError::UnsafeEntry { .. })
                    && shown.contains(&*String::from_utf8_lossy(bad)),
                "{shown}"
            );
            store_is_empty(&store);
        }
        assert!(!tmp.path().join("escaped").exists());
    }

    #[test]
    fn layout_blobs_must_match_their_digests() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("root")).unwrap();
        let src = ImageStore::open(&tmp.path().join("src")).unwrap();
        let layer = src.put_blob(b"not what the digest says").unwrap();
        let (manifest, _) = src
            .put_image(
                br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
                vec![descriptor(MediaType::ImageLayer, &layer, 24).unwrap()],
            )
            .unwrap();
        src.tag("bad:1", &manifest).unwrap();
        // The layer's file now holds other bytes than its name says.
        fs::write(src.blob_path(&layer), b"tampered").unwrap();
        let err = store.load_archive(&tmp.path().join("src")).unwrap_err();
        assert!(
            matches!(err, ImageStoreError::DigestMismatch { ref digest, .. } if *digest == layer),
            "{err}"
        );
        store_is_empty(&store);
    }
}
