//! Content digests of what a step reads from a directory: COPY/ADD sources in the build
//! context (after `.dockerignore`) or in a named context, and bind-mounted trees.
//!
//! A digest covers each entry's path (relative to the source), type, mode, owner, size,
//! link target and content, not its times: touching a file keeps the cache, as in
//! BuildKit. A file's content is hashed once; its hash is remembered by device, inode,
//! size, mtime and ctime, across builds in `<root>/cache/context-index` (so an unchanged
//! context costs a walk of `lstat`s, not a read). Any change to a file changes its ctime,
//! so a remembered hash is never stale; the index is a memo, rewritten whole after a
//! build (temporary file + rename), and a missing or unreadable one is simply empty.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use super::{KeyHasher, StepKey};
use crate::context::ignore::IgnoreRules;
use crate::context::pattern::{clean, has_wildcard, match_path};

type FileId = (u64, u64, u64, i64, i64, i64, i64);

/// Digests of source trees, with file hashes remembered.
#[derive(Default)]
pub struct ContextDigests {
    files: Mutex<HashMap<FileId, [u8; 32]>>,
    /// Whether a hash was added since [`ContextDigests::load`].
    grown: std::sync::atomic::AtomicBool,
}

/// One remembered file hash, on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct IndexEntry(u64, u64, u64, i64, i64, i64, i64, String);

/// Remembered hashes kept at most (the oldest are not tracked: the index is a memo).
const INDEX_LIMIT: usize = 1_000_000;

impl ContextDigests {
    /// The digests with the hashes remembered in `index` (a missing or unreadable
    /// index is empty).
    pub fn load(index: &Path) -> ContextDigests {
        let mut files = HashMap::new();
        if let Ok(bytes) = fs::read(index) {
            if let Ok(entries) = serde_json::from_slice::<Vec<IndexEntry>>(&bytes) {
                for IndexEntry(a, b, c, d, e, f, g, hex) in entries {
                    if let Ok(h) = blake3::Hash::from_hex(&hex) {
                        files.insert((a, b, c, d, e, f, g), *h.as_bytes());
                    }
                }
            }
        }
        ContextDigests {
            files: Mutex::new(files),
            grown: Default::default(),
        }
    }

    /// Writes the remembered hashes to `index` if any were added.
    pub fn save(&self, index: &Path) -> io::Result<()> {
        if !self.grown.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let entries: Vec<IndexEntry> = files
            .iter()
            .take(INDEX_LIMIT)
            .map(|(&(a, b, c, d, e, f, g), h)| {
                IndexEntry(
                    a,
                    b,
                    c,
                    d,
                    e,
                    f,
                    g,
                    blake3::Hash::from_bytes(*h).to_hex().to_string(),
                )
            })
            .collect();
        let json = serde_json::to_vec(&entries).map_err(io::Error::other)?;
        drop(files);
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        io::Write::write_all(&mut tmp, &json)?;
        tmp.persist(index).map_err(|e| e.error)?;
        Ok(())
    }

    /// The digest of what COPY `patterns` would read beneath `root`, skipping what
    /// `ignore` excludes.
    pub fn sources(
        &self,
        root: &Path,
        patterns: &[String],
        ignore: Option<&IgnoreRules>,
    ) -> io::Result<StepKey> {
        let mut h = KeyHasher::new("sources");
        for p in patterns {
            let pat = clean(p);
            h.field("pattern", pat.as_bytes());
            let matches = if has_wildcard(&pat) {
                let mut out = Vec::new();
                let depth = (!pat.contains("**")).then(|| pat.split('/').count());
                walk_matches(root, "", &pat, depth, ignore, &mut out)?;
                out.sort();
                out
            } else {
                vec![pat.clone()]
            };
            for m in matches {
                h.field("match", m.as_bytes());
                match crate::mounts::resolve_beneath(root, &m) {
                    Ok(path) if path.exists() => {
                        let d = self.tree(&path, &m, ignore)?;
                        h.key("tree", &d);
                    }
                    _ => {
                        h.field("missing", m.as_bytes());
                    }
                }
            }
        }
        Ok(h.finish())
    }

    /// The digest of the tree at `path` (followed if it is a symlink), whose path in the
    /// context is `ctx_rel` (for `.dockerignore`).
    pub fn tree(
        &self,
        path: &Path,
        ctx_rel: &str,
        ignore: Option<&IgnoreRules>,
    ) -> io::Result<StepKey> {
        let mut h = KeyHasher::new("tree");
        let md = fs::metadata(path)?;
        self.entry(&mut h, path, "", ctx_rel, &md, ignore)?;
        Ok(h.finish())
    }

    fn entry(
        &self,
        h: &mut KeyHasher,
        path: &Path,
        rel: &str,
        ctx_rel: &str,
        md: &fs::Metadata,
        ignore: Option<&IgnoreRules>,
    ) -> io::Result<()> {
        h.field("path", rel.as_bytes());
        h.field(
            "meta",
            format!("{:o} {} {} {}", md.mode(), md.uid(), md.gid(), md.len()).as_bytes(),
        );
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path)?;
            h.field("link", target.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            h.field("data", &self.file_digest(path, md)?);
        } else if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for name in names {
                let name = name.to_string_lossy().into_owned();
                let child_ctx = join(ctx_rel, &name);
                let child = path.join(&name);
                let cmd = fs::symlink_metadata(&child)?;
                if let Some(rules) = ignore {
                    if rules.excluded(&child_ctx) && !(cmd.is_dir() && rules.has_exceptions()) {
                        continue;
                    }
                }
                self.entry(h, &child, &join(rel, &name), &child_ctx, &cmd, ignore)?;
            }
        }
        Ok(())
    }

    fn file_digest(&self, path: &Path, md: &fs::Metadata) -> io::Result<[u8; 32]> {
        let id: FileId = (
            md.dev(),
            md.ino(),
            md.len(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec(),
        );
        if let Some(d) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(*d);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(fs::File::open(path)?)?;
        let d = *hasher.finalize().as_bytes();
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, d);
        self.grown.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(d)
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// Paths beneath `root/rel` matching `pat`, as COPY expands a wildcard.
fn walk_matches(
    root: &Path,
    rel: &str,
    pat: &str,
    depth: Option<usize>,
    ignore: Option<&IgnoreRules>,
    out: &mut Vec<String>,
) -> io::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in rd {
        let e = e?;
        let child = join(rel, &e.file_name().to_string_lossy());
        let ignored = ignore.is_some_and(|r| r.excluded(&child));
        if !ignored && match_path(pat, &child) {
            out.push(child.clone());
        }
        let is_dir = e.file_type()?.is_dir();
        let descend = is_dir
            && (!ignored || ignore.is_some_and(|r| r.has_exceptions()))
            && depth.is_none_or(|d| child.split('/').count() < d);
        if descend {
            walk_matches(root, &child, pat, depth, ignore, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_hashes_survive_a_save_and_load() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "content").unwrap();
        let index = d.path().join("index");
        let first = ContextDigests::load(&index);
        let k = first.sources(d.path(), &["a".into()], None).unwrap();
        first.save(&index).unwrap();
        let again = ContextDigests::load(&index);
        assert_eq!(again.files.lock().unwrap().len(), 1);
        assert_eq!(again.sources(d.path(), &["a".into()], None).unwrap(), k);
        // A changed file has a new ctime: its old hash is not used.
        fs::write(d.path().join("a"), "changed").unwrap();
        assert_ne!(again.sources(d.path(), &["a".into()], None).unwrap(), k);
        fs::write(&index, "not json").unwrap();
        assert!(ContextDigests::load(&index)
            .files
            .lock()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn only_matched_sources_count() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("foo1"), "a").unwrap();
        fs::write(d.path().join("bar"), "b").unwrap();
        let cd = ContextDigests::default();
        let before = cd.sources(d.path(), &["foo*".into()], None).unwrap();
        fs::write(d.path().join("bar"), "changed").unwrap();
        assert_eq!(
            cd.sources(d.path(), &["foo*".into()], None).unwrap(),
            before
        );
        fs::write(d.path().join("foo1"), "changed").unwrap();
        assert_ne!(
            cd.sources(d.path(), &["foo*".into()], None).unwrap(),
            before
        );
        let all = cd.sources(d.path(), &[".".into()], None).unwrap();
        fs::write(d.path().join("bar"), "again").unwrap();
        assert_ne!(cd.sources(d.path(), &[".".into()], None).unwrap(), all);
        let rules = IgnoreRules::parse("bar\n");
        let ignored = cd.sources(d.path(), &[".".into()], Some(&rules)).unwrap();
        fs::write(d.path().join("bar"), "ignored change").unwrap();
        assert_eq!(
            cd.sources(d.path(), &[".".into()], Some(&rules)).unwrap(),
            ignored
        );
    }
}
