//! The collector on a hand-made root: tags keep their chains, valid entries keep what
//! they name, dangling entries and temporaries go, `--all`, `until` and `keep_storage`.

use std::collections::HashMap;

use oci_spec::image::{ImageManifestBuilder, MediaType, SCHEMA_VERSION};

use super::*;
use crate::cache::{CachedStep, StepKey};
use crate::image::state::LayerRef;
use crate::store::descriptor;

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// A snapshot of `layer` on `parent`, committed.
    fn snapshot(&self, parent: Option<&ChainId>, layer: &str) -> ChainId {
        let store = SnapshotStore::open(self.path()).unwrap();
        let id = ChainId::new(parent, layer);
        let active = store.prepare(parent).unwrap();
        std::fs::write(active.upper().join("f"), layer).unwrap();
        active.commit(&id).unwrap();
        id
    }
    /// Layer blobs `layers` and their chain, tagged `tag`; returns the manifest digest.
    fn image(&self, tag: &str, layers: &[&[u8]]) -> (String, Vec<String>, Vec<ChainId>) {
        let images = ImageStore::open(self.path()).unwrap();
        let config = images
            .put_blob(format!("{{\"tag\":\"{tag}\"}}").as_bytes())
            .unwrap();
        let mut descs = Vec::new();
        let mut digests = Vec::new();
        let mut chains = Vec::new();
        let mut chain = None;
        for l in layers {
            let d = images.put_blob(l).unwrap();
            descs.push(descriptor(MediaType::ImageLayerZstd, &d, l.len() as u64).unwrap());
            let id = self.snapshot(chain.as_ref(), &d);
            chain = Some(id.clone());
            chains.push(id);
            digests.push(d);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config, 1).unwrap())
            .layers(descs)
            .build()
            .unwrap();
        let m = images
            .put_blob(manifest.to_string().unwrap().as_bytes())
            .unwrap();
        images
            .tag(tag, &descriptor(MediaType::ImageManifest, &m, 1).unwrap())
            .unwrap();
        (m, digests, chains)
    }
    fn entry(&self, key: u8, chain: &ChainId, blob: &str) {
        let cache = StepCache::open(self.path()).unwrap();
        let step = CachedStep {
            chain: Some(chain.clone()),
            layer: Some(LayerRef {
                digest: blob.to_string(),
                diff_id: blob.to_string(),
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            }),
            layers: Vec::new(),
        };
        cache.put(&StepKey([key; 32]), &step).unwrap();
    }
    fn collector(&self) -> Collector {
        Collector::open(self.path(), &mut || panic!("nobody else holds the root")).unwrap()
    }
    fn kinds(&self) -> HashMap<Kind, (usize, u64)> {
        let usage = self.collector().usage().unwrap();
        usage
            .kinds
            .iter()
            .map(|k| (k.kind, (k.count, k.reclaimable)))
            .collect()
    }
}

#[test]
fn tags_keep_their_chain_and_untagged_garbage_goes() {
    let root = Root::new();
    let (_, blobs, chains) = root.image("app", &[b"one", b"two"]);
    // Garbage: a snapshot and a blob nothing names, a temporary, a dangling entry.
    let stray = root.snapshot(None, "sha256:stray");
    let images = ImageStore::open(root.path()).unwrap();
    let stray_blob = images.put_blob(b"stray layer").unwrap();
    std::fs::write(images.blob_dir().join(".tmp-layer-x"), "half").unwrap();
    root.entry(1, &ChainId::new(None, "sha256:gone"), &stray_blob);
    let kinds = root.kinds();
    assert_eq!(kinds[&Kind::Snapshots].0, 3);
    assert_eq!(kinds[&Kind::Temporaries].0, 1);
    assert!(kinds[&Kind::Snapshots].1 > 0);

    let c = root.collector();
    let removed = c.prune(&PruneOptions::default()).unwrap();
    let names: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&stray.as_str()), "{names:?}");
    assert!(names.contains(&stray_blob.as_str()), "{names:?}");
    assert_eq!(removed.len(), 4, "{names:?}");
    for id in &chains {
        assert!(c.snapshots.exists(id));
    }
    for b in &blobs {
        assert!(images.blob_path(b).is_file());
    }
    assert!(c.prune(&PruneOptions::default()).unwrap().is_empty());
    drop(c);
    let kinds = root.kinds();
    assert_eq!(kinds[&Kind::Snapshots], (2, 0));
    assert_eq!(kinds[&Kind::Layers], (2, 0));
}

#[test]
fn entries_keep_what_they_name_until_all() {
    let root = Root::new();
    let (m, blobs, chains) = root.image("app", &[b"one", b"two"]);
    root.entry(1, &chains[0], &blobs[0]);
    root.entry(2, &chains[1], &blobs[1]);
    let images = ImageStore::open(root.path()).unwrap();
    assert!(images.untag("app").unwrap());
    let c = root.collector();
    // The image's manifest and config go; what the entry names (and its ancestors) stays.
    let removed = c.release(std::slice::from_ref(&m)).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().all(|r| r.kind == Kind::Images));
    assert!(!images.blob_path(&m).exists());
    assert!(c.snapshots.exists(&chains[0]) && c.snapshots.exists(&chains[1]));
    // Default prune keeps the build cache.
    assert!(c.prune(&PruneOptions::default()).unwrap().is_empty());
    // `until` keeps what is new.
    let until = PruneOptions {
        all: true,
        until: Some(Duration::from_secs(3600)),
        ..PruneOptions::default()
    };
    assert!(c.prune(&until).unwrap().is_empty());
    let all = PruneOptions {
        all: true,
        ..PruneOptions::default()
    };
    let planned = c.plan(&all).unwrap();
    let removed = c.prune(&all).unwrap();
    assert_eq!(planned, removed);
    // An entry before what it names, children before parents.
    let first_snapshot = removed.iter().position(|r| r.kind == Kind::Snapshots);
    let last_entry = removed.iter().rposition(|r| r.kind == Kind::BuildCache);
    assert!(last_entry < first_snapshot, "{removed:?}");
    let at = |id: &ChainId| removed.iter().position(|r| r.name == id.as_str()).unwrap();
    assert!(at(&chains[1]) < at(&chains[0]));
    assert!(c.snapshots.committed().unwrap().is_empty());
    assert!(images.blob_files().unwrap().is_empty());
}

#[test]
fn keep_storage_stops_once_below_the_limit() {
    let root = Root::new();
    root.image("app", &[b"one", b"two", b"three"]);
    ImageStore::open(root.path()).unwrap().untag("app").unwrap();
    let c = root.collector();
    let total = c.usage().unwrap().size();
    let keep = total - 1;
    let removed = c
        .prune(&PruneOptions {
            keep_storage: Some(keep),
            ..PruneOptions::default()
        })
        .unwrap();
    assert!(!removed.is_empty());
    let left = c.usage().unwrap().size();
    assert!(left <= keep && left > 0, "left {left} of {total}");
}

#[test]
fn sweep_removes_only_old_temporaries() {
    let root = Root::new();
    let images = ImageStore::open(root.path()).unwrap();
    let old = images.blob_dir().join(".tmp-old");
    let new = images.blob_dir().join(".tmp-new");
    std::fs::write(&old, "x").unwrap();
    std::fs::write(&new, "x").unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    assert_eq!(images.sweep_temporaries().unwrap(), 1);
    assert!(!old.exists() && new.exists());
}
