//! The local image store: an OCI image layout directory (the kiln root itself), so
//! `skopeo copy oci:$KILN_ROOT:NAME …` and `umoci` read it directly.
//!
//! ```text
//! oci-layout            {"imageLayoutVersion":"1.0.0"}
//! index.json            one manifest descriptor per tag (annotation org.opencontainers.image.ref.name)
//! blobs/sha256/<hex>    layers, configs, manifests
//! ```
//! Blobs are written to a temporary name, synced and renamed; `index.json` is rewritten the
//! same way under the store's lock file, so concurrent kiln processes and crashes never
//! leave a half-written tag list.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, Digest, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
};
use sha2::{Digest as _, Sha256};

use crate::image::ImageConfig;

pub mod archive;
pub mod inventory;
pub mod prune;
pub mod usage;

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why the image store failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something in the store or an archive is not what it should be.
    #[error("{what} {path} is not valid: {why}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    /// A JSON document (config, docker manifest) that does not decode or encode.
    #[error("{what} {path} is not valid: {source}")]
    Json {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An OCI document (index, manifest, digest) that does not decode, build or encode.
    #[error("{what} {path} is not valid: {source}")]
    Oci {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// An entry of an archive being loaded whose name leaves the directory it is unpacked
    /// into (absolute, or climbing with `..`): the whole archive is refused.
    #[error(
        "archive {archive}: entry {entry:?} would be written outside the archive's directory \
         (an absolute name or one climbing with `..`); refusing the archive, nothing was loaded"
    )]
    UnsafeEntry { archive: PathBuf, entry: String },
    /// A blob whose content does not hash to the digest that names it.
    #[error("blob {digest} at {path} does not match its digest (its content is {actual})")]
    DigestMismatch {
        digest: String,
        path: PathBuf,
        actual: String,
    },
    /// The root's lease (held while loading or saving, so a collection waits).
    #[error("taking the root's lease: {0}")]
    Lease(#[from] crate::snapshots::StoreError),
}

fn oci_at(
    what: &'static str,
    path: PathBuf,
) -> impl FnOnce(oci_spec::OciSpecError) -> ImageStoreError {
    move |source| ImageStoreError::Oci { what, path, source }
}

fn io_at(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageStoreError {
    let path = path.to_path_buf();
    move |source| ImageStoreError::Io {
        context,
        path,
        source,
    }
}

/// An image in the store: its manifest descriptor, manifest and config.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfig,
}

/// A file in `blobs/sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    /// `sha256:<hex>`; `None` when the name is not a digest (a write that never finished).
    pub digest: Option<String>,
    pub path: PathBuf,
    pub modified: std::time::SystemTime,
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub(crate) root: PathBuf,
}

/// `name` with Docker's defaults made explicit: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_reference(name: &str) -> String {
    let (name, digest) = match name.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (name, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let mut out = if last.contains(':') || digest.is_some() {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    let first = out.split('/').next().unwrap_or("");
    let has_registry =
        out.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        out = if out.contains('/') {
            format!("docker.io/{out}")
        } else {
            format!("docker.io/library/{out}")
        };
    }
    match digest {
        Some(d) => format!("{out}@{d}"),
        None => out,
    }
}

/// A tag as the store records it: `name` with `:latest` added when it has no tag.
pub fn tag_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// An OCI `index.json` listing `manifests` (`path`: where it goes, for errors).
fn index_json(manifests: Vec<Descriptor>, path: &Path) -> Result<String, ImageStoreError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .and_then(|index| index.to_string())
        .map_err(oci_at("image index", path.to_path_buf()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl ImageStore {
    /// Opens (creating if needed) the layout at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageStoreError> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_at("creating", &blobs))?;
        let store = ImageStore {
            root: root.to_path_buf(),
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            store.write_atomic(&index, br#"{"schemaVersion":2,"manifests":[]}"#)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blobs live (`blobs/sha256`).
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The file of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.blob_dir().join(hex)
    }

    /// Every file in `blobs/sha256`, blobs and unfinished writes alike.
    pub fn blob_files(&self) -> Result<Vec<BlobFile>, ImageStoreError> {
        let dir = self.blob_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_at("reading", &dir))? {
            let e = e.map_err(io_at("reading", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_digest = name.len() == 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            out.push(BlobFile {
                digest: is_digest.then(|| format!("sha256:{name}")),
                path: e.path(),
                modified,
            });
        }
        Ok(out)
    }

    /// Removes blob `digest` (gone already is fine). The caller makes sure nothing tagged
    /// names it.
    pub fn remove_blob(&self, digest: &str) -> Result<(), ImageStoreError> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Unfinished writes of `index.json` and `oci-layout` (`.tmp*` in the root).
    pub fn root_temporaries(&self) -> Result<Vec<PathBuf>, ImageStoreError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).map_err(io_at("reading", &self.root))? {
            let e = e.map_err(io_at("reading", &self.root))?;
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if is_file && e.file_name().to_string_lossy().starts_with(".tmp") {
                out.push(e.path());
            }
        }
        Ok(out)
    }

    /// Removes unfinished writes (a killed process's) older than a minute: names in
    /// `blobs/sha256` that are not digests, `.tmp*` files in the root. Returns how many.
    /// Runs at build start without the collector's lease; a write in progress keeps its
    /// file's modification time fresh.
    pub fn sweep_temporaries(&self) -> Result<usize, ImageStoreError> {
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let blob_temps = self
            .blob_files()?
            .into_iter()
            .filter(|b| b.digest.is_none());
        let mut removed = 0;
        for path in blob_temps.map(|b| b.path).chain(self.root_temporaries()?) {
            let old = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if !old {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at("removing", &path)(e)),
            }
        }
        Ok(removed)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageStoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_at("writing in", dir))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_at("writing", path))?;
        tmp.persist(path)
            .map_err(|e| io_at("writing", path)(e.error))?;
        Ok(())
    }

    /// Stores an image: its config blob and a manifest naming it and `layers` (whose
    /// blobs are stored already); the manifest's descriptor and the config's digest.
    pub fn put_image(
        &self,
        config_json: &[u8],
        layers: Vec<Descriptor>,
    ) -> Result<(Descriptor, String), ImageStoreError> {
        let config_digest = self.put_blob(config_json)?;
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config_json.len() as u64,
            )?)
            .layers(layers)
            .build()
            .map_err(oci_at("manifest", self.blob_dir()))?;
        let json = manifest
            .to_string()
            .map_err(oci_at("manifest", self.blob_dir()))?;
        let digest = self.put_blob(json.as_bytes())?;
        let desc = descriptor(MediaType::ImageManifest, &digest, json.len() as u64)?;
        Ok((desc, config_digest))
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, ImageStoreError> {
        let hex = sha256_hex(bytes);
        let path = self.blob_dir().join(&hex);
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(format!("sha256:{hex}"))
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageStoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(io_at("reading blob", &path))
    }

    fn lock(&self) -> Result<File, ImageStoreError> {
        let path = self.root.join("index.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at("opening", &path))?;
        rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_at("locking", &path)(e.into()))?;
        Ok(f)
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, ImageStoreError> {
        let path = self.root.join("index.json");
        let f = File::open(&path).map_err(io_at("reading", &path))?;
        ImageIndex::from_reader(f).map_err(oci_at("image index", path))
    }

    /// Points tag `name` at `manifest` (replacing what it pointed at).
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), ImageStoreError> {
        let _lock = self.lock()?;
        let index = self.index()?;
        let name = tag_name(name);
        let wanted = normalize_reference(&name);
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_none_or(|n| normalize_reference(n) != wanted)
            })
            .cloned()
            .collect();
        let mut d = manifest.clone();
        d.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), name)])));
        manifests.push(d);
        self.write_index(manifests)
    }

    /// Rewrites `index.json` with `manifests` (the caller holds the lock).
    fn write_index(&self, manifests: Vec<Descriptor>) -> Result<(), ImageStoreError> {
        let path = self.root.join("index.json");
        let json = index_json(manifests, &path)?;
        self.write_atomic(&path, json.as_bytes())
    }

    /// The manifest descriptor tagged `name` (any spelling of the same reference).
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, ImageStoreError> {
        let wanted = normalize_reference(name);
        let index = self.index()?;
        Ok(index
            .manifests()
            .iter()
            .rev()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| n == name || normalize_reference(n) == wanted)
            })
            .cloned())
    }

    /// Reads the manifest and config of `descriptor`.
    pub fn load(&self, descriptor: &Descriptor) -> Result<StoredImage, ImageStoreError> {
        let digest = descriptor.digest().to_string();
        let bytes = self.read_blob(&digest)?;
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(oci_at("manifest", self.blob_path(&digest)))?;
        let cfg_digest = manifest.config().digest().to_string();
        let cfg_bytes = self.read_blob(&cfg_digest)?;
        let config: ImageConfig =
            serde_json::from_slice(&cfg_bytes).map_err(|source| ImageStoreError::Json {
                what: "image config",
                path: self.blob_path(&cfg_digest),
                source,
            })?;
        Ok(StoredImage {
            descriptor: descriptor.clone(),
            manifest,
            config,
        })
    }
}

/// A descriptor for a blob whose digest is `sha256:<hex>`.
pub fn descriptor(
    media_type: MediaType,
    digest: &str,
    size: u64,
) -> Result<Descriptor, ImageStoreError> {
    let d = Digest::from_str(digest).map_err(oci_at("digest", PathBuf::from(digest)))?;
    Ok(Descriptor::new(media_type, size, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_docker() {
        assert_eq!(
            normalize_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize_reference("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_reference("quay.io/a/b:2"), "quay.io/a/b:2");
    }

    #[test]
    fn tags_replace_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let d1 = store.put_blob(b"one").unwrap();
        let d2 = store.put_blob(b"two").unwrap();
        store
            .tag(
                "app",
                &descriptor(MediaType::ImageManifest, &d1, 3).unwrap(),
            )
            .unwrap();
        store
            .tag(
                "docker.io/library/app:latest",
                &descriptor(MediaType::ImageManifest, &d2, 3).unwrap(),
            )
            .unwrap();
        assert_eq!(store.index().unwrap().manifests().len(), 1);
        let got = store.resolve("app:latest").unwrap().unwrap();
        assert_eq!(got.digest().to_string(), d2);
        assert!(store.resolve("other").unwrap().is_none());
    }

    use proptest::prelude::*;

    /// Digests as a hostile layout could write them: real ones, well-formed but absent,
    /// other algorithms, traversals, junk.
    fn digest_text(real: String) -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::json!(real)),
            "[0-9a-f]{64}".prop_map(|h| serde_json::json!(format!("sha256:{h}"))),
            Just(serde_json::json!("sha256:../../../../escaped")),
            Just(serde_json::json!("sha512:abc")),
            "[a-z0-9:./+=_-]{0,20}".prop_map(|s| serde_json::json!(s)),
            Just(serde_json::json!(7)),
        ]
    }

    fn descriptor_json(real: String) -> impl Strategy<Value = serde_json::Value> {
        (
            digest_text(real),
            prop_oneof![Just(0u64), any::<u64>(), Just(u64::MAX)],
            prop_oneof![
                Just("application/vnd.oci.image.manifest.v1+json"),
                Just("application/vnd.oci.image.layer.v1.tar+gzip"),
                Just("application/vnd.oci.image.config.v1+json"),
                Just("x/y"),
            ],
        )
            .prop_map(|(digest, size, media)| {
                serde_json::json!({"mediaType": media, "digest": digest, "size": size})
            })
    }

    /// A config: valid, or a valid one with a field of the wrong type, or junk.
    fn config_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec()),
            Just(br#"{"architecture":1,"os":"linux","config":{"Env":"x","OnBuild":[1]}}"#.to_vec()),
            Just(br#"{"config":{"Healthcheck":{"Interval":-1,"Test":"x"},"ExposedPorts":[]}}"#.to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #![proptest_config(crate::fuzz::config(48))]

        /// Whatever a layout's index, manifests and config say (sizes declared in the
        /// exabytes, digests that name nothing or climb out), reading, listing, loading
        /// it into a store and writing it back out end in a value or a typed error,
        /// quickly, and nothing is written outside the two stores.
        #[test]
        fn store_readers_never_panic_or_escape(
            config in config_bytes(),
            layers in proptest::collection::vec(any::<u8>(), 0..2),
            seeds in proptest::collection::vec(0u8..8, 6),
            schema in prop_oneof![Just(serde_json::json!(2)), Just(serde_json::json!(-1)), Just(serde_json::json!("2"))],
            config_desc in descriptor_json(String::new()),
            layer_descs in proptest::collection::vec(descriptor_json(String::new()), 0..3),
            index_desc in descriptor_json(String::new()),
            tag in "[a-z:/@.]{0,12}",
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let outside = tmp.path().join("outside");
            fs::create_dir(&outside).unwrap();
            let src = ImageStore::open(&tmp.path().join("layout")).unwrap();
            let config_digest = src.put_blob(&config).unwrap();
            let layer_digest = src.put_blob(&layers).unwrap();
            // Point some descriptors at the real blobs (the seeds pick which).
            let real = |mut d: serde_json::Value, digest: &str, seed: u8| {
                if seed < 4 {
                    d["digest"] = serde_json::json!(digest);
                }
                if seed < 2 {
                    d["size"] = serde_json::json!(1);
                }
                d
            };
            let manifest = serde_json::json!({
                "schemaVersion": schema,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": real(config_desc, &config_digest, seeds[0]),
                "layers": layer_descs.into_iter().enumerate().map(|(i, d)| real(d, &layer_digest, seeds[1 + i])).collect::<Vec<_>>(),
            });
            let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
            let manifest_digest = src.put_blob(&manifest_bytes).unwrap();
            let mut entry = real(index_desc, &manifest_digest, seeds[4]);
            entry["annotations"] = serde_json::json!({REF_NAME: tag, "io.containerd.image.name": tag});
            let index = if seeds[5] == 0 {
                b"{not json".to_vec()
            } else {
                serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [entry]})).unwrap()
            };
            fs::write(tmp.path().join("layout/index.json"), index).unwrap();
            let store = ImageStore::open(&tmp.path().join("store")).unwrap();
            crate::fuzz::timed("store readers", || {
                let _ = src.list();
                if let Ok(index) = src.index() {
                    for d in index.manifests() {
                        let _ = src.load(d);
                        let _ = src.write_layout(&tmp.path().join("out"), d, Some(&tag));
                    }
                }
                let _ = src.resolve(&tag);
                let _ = store.load_archive(src.root());
                let _ = store.list();
            });
            prop_assert!(fs::read_dir(&outside).unwrap().next().is_none());
            let mut dirs = vec![tmp.path().to_path_buf()];
            while let Some(d) = dirs.pop() {
                for e in fs::read_dir(&d).unwrap().flatten() {
                    prop_assert!(e.file_name() != "escaped", "written outside: {:?}", e.path());
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(e.path());
                    }
                }
            }
            prop_assert!(store.index().is_ok(), "the store still opens");
        }

        /// `docker save` manifests naming anything, in an archive directory.
        #[test]
        fn docker_manifests_never_panic_or_escape(
            config in prop_oneof![Just(serde_json::json!("c.json")), Just(serde_json::json!("../c.json")), Just(serde_json::json!("/etc/hostname")), Just(serde_json::json!(null)), "[a-z./]{0,12}".prop_map(|s| serde_json::json!(s))],
            layers in proptest::collection::vec(prop_oneof![Just(serde_json::json!("l.tar")), Just(serde_json::json!("../../l.tar")), Just(serde_json::json!(1)), "[a-z./]{0,12}".prop_map(|s| serde_json::json!(s))], 0..3),
            tags in proptest::collection::vec(prop_oneof![Just(serde_json::json!("a:1")), Just(serde_json::json!("")), Just(serde_json::json!([])), "[a-z:/@.]{0,12}".prop_map(|s| serde_json::json!(s))], 0..3),
            cfg in config_bytes(),
            garbage in proptest::collection::vec(any::<u8>(), 0..48),
            whole in 0u8..4,
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("a/b/archive");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("c.json"), &cfg).unwrap();
            fs::write(dir.join("l.tar"), &garbage).unwrap();
            let manifest = match whole {
                0 => garbage.clone(),
                1 => b"{}".to_vec(),
                _ => serde_json::to_vec(&serde_json::json!([{"Config": config, "Layers": layers, "RepoTags": tags}])).unwrap(),
            };
            fs::write(dir.join("manifest.json"), manifest).unwrap();
            let store = ImageStore::open(&tmp.path().join("store")).unwrap();
            crate::fuzz::timed("docker load", || {
                let _ = store.load_archive(&dir);
                let _ = store.list();
            });
            prop_assert!(store.index().is_ok(), "the store still opens");
        }
    }
}
