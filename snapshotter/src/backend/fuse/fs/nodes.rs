//! The node table: kiln's inode numbers, one per path, kept for the life of the mount.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Paths ↔ inode numbers.
#[derive(Default)]
pub(super) struct Table {
    paths: HashMap<u64, Vec<PathBuf>>,
    inos: HashMap<PathBuf, u64>,
    next: u64,
}

impl Table {
    pub(super) fn new() -> Table {
        let mut t = Table {
            next: 2,
            ..Default::default()
        };
        t.paths.insert(1, vec![PathBuf::new()]);
        t.inos.insert(PathBuf::new(), 1);
        t
    }

    pub(super) fn ino_for(&mut self, path: &Path) -> u64 {
        if let Some(i) = self.inos.get(path) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.inos.insert(path.to_path_buf(), i);
        self.paths.entry(i).or_default().push(path.to_path_buf());
        i
    }

    pub(super) fn path_of(&self, ino: u64) -> Option<PathBuf> {
        self.paths.get(&ino).and_then(|p| p.first().cloned())
    }

    pub(super) fn add_link(&mut self, ino: u64, path: &Path) {
        self.remove_path(path);
        self.inos.insert(path.to_path_buf(), ino);
        self.paths.entry(ino).or_default().push(path.to_path_buf());
    }

    pub(super) fn remove_path(&mut self, path: &Path) {
        if let Some(i) = self.inos.remove(path) {
            if let Some(ps) = self.paths.get_mut(&i) {
                ps.retain(|p| p != path);
            }
        }
    }

    /// `from` (and everything under it) is now at `to`.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .inos
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        // What stood at `to` is replaced.
        let replaced: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(to))
            .cloned()
            .collect();
        for p in replaced {
            self.remove_path(&p);
        }
        for (p, i) in moved {
            self.remove_path(&p);
            let rest = p.strip_prefix(from).unwrap_or(Path::new(""));
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.inos.insert(np.clone(), i);
            self.paths.entry(i).or_default().push(np);
        }
    }
}
