//! What a kiln root must be after anything that happens to a build (a kill at any
//! phase, a full disk, builds at once), read straight from the files, with no kiln code:
//! `index.json` parses; every tag's manifest, config and layer blobs are there, whole
//! (size) and right (sha256); every committed snapshot has its content and a parent
//! that exists; and, told a time has passed, what counts as an unfinished write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Checks the whole root; the first thing wrong, said with its path.
pub fn verify(root: &Path) -> Result<BTreeMap<String, String>, String> {
    let index = json(&root.join("index.json"))?;
    let mut tags = BTreeMap::new();
    for d in index["manifests"].as_array().cloned().unwrap_or_default() {
        let name = d["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let digest = d["digest"].as_str().unwrap_or_default().to_string();
        let size = d["size"].as_u64().unwrap_or(0);
        blob(root, &digest, size).map_err(|e| format!("tag {name}: manifest: {e}"))?;
        let manifest = json(&blob_path(root, &digest))?;
        let config = &manifest["config"];
        blob(
            root,
            config["digest"].as_str().unwrap_or_default(),
            config["size"].as_u64().unwrap_or(0),
        )
        .map_err(|e| format!("tag {name}: config: {e}"))?;
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            blob(
                root,
                l["digest"].as_str().unwrap_or_default(),
                l["size"].as_u64().unwrap_or(0),
            )
            .map_err(|e| format!("tag {name}: layer: {e}"))?;
        }
        tags.insert(name, digest);
    }
    let snaps = root.join("snapshots");
    for e in std::fs::read_dir(&snaps).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // an unfinished commit: see `temporaries`
        }
        let dir = e.path();
        if !dir.join("fs").is_dir() {
            return Err(format!("snapshot {} has no content", dir.display()));
        }
        let parent = std::fs::read_to_string(dir.join("parent"))
            .map_err(|e| format!("snapshot {}: parent: {e}", dir.display()))?;
        let parent = parent.trim();
        if !parent.is_empty() && !snaps.join(parent).join("fs").is_dir() {
            return Err(format!(
                "snapshot {} names parent {parent}, which is not committed",
                dir.display()
            ));
        }
    }
    Ok(tags)
}

/// Unfinished writes in a root: names in `blobs/sha256` that are not digests, `.tmp*`
/// in the root, in `snapshots/` and in `cache/steps/`, and every active snapshot
/// (`work/*`).
pub fn temporaries(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect::<Vec<_>>()
    };
    for (name, path) in entries(root.join("blobs/sha256")) {
        let digest = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !digest {
            out.push(path);
        }
    }
    for dir in [
        root.to_path_buf(),
        root.join("snapshots"),
        root.join("cache/steps"),
    ] {
        for (name, path) in entries(dir) {
            if name.starts_with(".tmp") {
                out.push(path);
            }
        }
    }
    out.extend(entries(root.join("work")).into_iter().map(|(_, p)| p));
    out
}

/// Sets the modification time of `paths` (not following links) `minutes` back: what a
/// sweep that waits for a write to go quiet needs to see to remove it.
pub fn age(paths: &[PathBuf], minutes: u32) {
    for p in paths {
        let st = std::process::Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(format!("{minutes} minutes ago"))
            .arg(p)
            .status()
            .expect("touch");
        assert!(st.success(), "touch {}", p.display());
    }
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn blob(root: &Path, digest: &str, size: u64) -> Result<(), String> {
    let path = blob_path(root, digest);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 != size {
        return Err(format!(
            "{} has {} bytes, its descriptor says {size}",
            path.display(),
            bytes.len()
        ));
    }
    let actual = format!("sha256:{:x}", Sha256::digest(&bytes));
    if actual != digest {
        return Err(format!("{} hashes to {actual}", path.display()));
    }
    Ok(())
}

fn json(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
