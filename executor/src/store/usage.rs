//! What the kiln root holds and how much of it could go (`kiln du`).
//!
//! Sizes are disk usage: allocated blocks of every file, directory and symlink under an
//! item, found with `symlink_metadata` (links are not followed), each inode counted once
//! per measurement, so hard links across snapshots are not counted twice. An item is
//! *reclaimable* when no tag reaches it and no running build uses it: what only the build
//! cache holds is reclaimable too (`kiln prune --all` removes it).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::inventory::{Holder, Item, Kind};

/// The inodes a measurement has counted already (device, inode).
#[derive(Debug, Default)]
pub struct SeenInodes(HashSet<(u64, u64)>);

/// The disk usage of the tree at `path` in bytes (inodes in `seen` are not counted again).
/// What cannot be read counts as nothing.
pub fn disk_usage(path: &Path, seen: &mut SeenInodes) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = 0;
    if seen.0.insert((md.dev(), md.ino())) {
        total += md.blocks() * 512;
    }
    if md.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path(), seen);
            }
        }
    }
    total
}

/// One line of `kiln du`: the items of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindUsage {
    pub kind: Kind,
    /// How many items.
    pub count: usize,
    /// How many a tag reaches.
    pub active: usize,
    pub size: u64,
    /// The size of the items no tag reaches.
    pub reclaimable: u64,
}

/// The whole root, kind by kind.
#[derive(Debug, Clone)]
pub struct Usage {
    pub kinds: Vec<KindUsage>,
    /// Every item, for `--verbose`.
    pub items: Vec<Item>,
}

impl Usage {
    /// Sums `items` per kind (every kind has a line, in [`Kind::ALL`] order).
    pub fn of(items: Vec<Item>) -> Usage {
        let kinds = Kind::ALL
            .iter()
            .map(|&kind| {
                let mine = items.iter().filter(|i| i.kind == kind);
                let mut line = KindUsage {
                    kind,
                    count: 0,
                    active: 0,
                    size: 0,
                    reclaimable: 0,
                };
                for i in mine {
                    line.count += 1;
                    line.size += i.size;
                    if matches!(i.held, Holder::Tag | Holder::Live) {
                        line.active += 1;
                    } else {
                        line.reclaimable += i.size;
                    }
                }
                line
            })
            .collect();
        Usage { kinds, items }
    }

    pub fn size(&self) -> u64 {
        self.kinds.iter().map(|k| k.size).sum()
    }

    pub fn reclaimable(&self) -> u64 {
        self.kinds.iter().map(|k| k.reclaimable).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_count_once_and_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; 64 * 1024]).unwrap();
        let mut seen = SeenInodes::default();
        let one = disk_usage(&big, &mut seen);
        assert!(one >= 64 * 1024, "{one}");
        std::fs::hard_link(&big, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("sym")).unwrap();
        let mut seen = SeenInodes::default();
        let all = disk_usage(dir.path(), &mut seen);
        assert!(all >= one && all < one + 64 * 1024, "{all} vs {one}");
        // Counted already: nothing more.
        assert_eq!(disk_usage(&big, &mut seen), 0);
    }
}
