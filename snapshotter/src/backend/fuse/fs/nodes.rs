//! The node table: kiln's inode numbers, kept for the life of the mount.
//!
//! A node is a name in its parent node (a hard-linked file has more than one), so a path
//! is found by walking names from the root, a rename moves one node whatever lies below
//! it, and each name is stored once (shared by the node and its parent's children).
//! Numbers are handed out in order and never reused, so the nodes are a vector indexed by
//! number: a million-entry tree costs about 120 bytes a node, whatever its depth.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

type Name = Arc<OsStr>;

const ROOT: u64 = 1;

#[derive(Default)]
struct Node {
    /// (parent, name): the node's path. `None` for the root and for a node whose last
    /// name is gone (an unlinked file still open).
    first: Option<(u64, Name)>,
    /// A hard-linked file's other names.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes on the many nodes with one name"
    )]
    more: Option<Box<Vec<(u64, Name)>>>,
    /// The node's children by name, once it has one (boxed: 8 bytes on each of a
    /// million files instead of an empty map's 48).
    #[expect(
        clippy::box_collection,
        reason = "most nodes are files with no children"
    )]
    children: Option<Box<HashMap<Name, u64>>>,
}

impl Node {
    fn add_name(&mut self, parent: u64, name: Name) {
        match self.first {
            None => self.first = Some((parent, name)),
            Some(_) => self
                .more
                .get_or_insert_with(Default::default)
                .push((parent, name)),
        }
    }

    /// Takes `name` in `parent` off this node; whether the node still has a name.
    fn remove_name(&mut self, parent: u64, name: &OsStr) -> bool {
        let is = |(p, n): &(u64, Name)| *p == parent && **n == *name;
        if let Some(more) = &mut self.more {
            more.retain(|e| !is(e));
        }
        if self.first.as_ref().is_some_and(is) {
            self.first = self.more.as_mut().and_then(|m| m.pop());
        }
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
        self.first.is_some()
    }
}

/// Paths ↔ inode numbers.
pub(super) struct Table {
    /// Indexed by inode number (0 unused).
    nodes: Vec<Node>,
}

/// The names of `path`, relative to the root (`.` and a leading `/` ignored).
fn names(path: &Path) -> impl Iterator<Item = &OsStr> {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n),
        _ => None,
    })
}

impl Table {
    pub(super) fn new() -> Table {
        let mut nodes = Vec::new();
        nodes.resize_with(ROOT as usize + 1, Node::default);
        Table { nodes }
    }

    fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?)
    }

    fn node_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(usize::try_from(ino).ok()?)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.node(parent)?.children.as_ref()?.get(name).copied()
    }

    /// Gives node `ino` the name `name` in `parent`.
    fn link(&mut self, parent: u64, name: &OsStr, ino: u64) {
        let name: Name = Arc::from(name);
        let (Some(_), Some(_)) = (self.node(parent), self.node(ino)) else {
            return;
        };
        if let Some(p) = self.node_mut(parent) {
            p.children
                .get_or_insert_with(Default::default)
                .insert(name.clone(), ino);
        }
        if let Some(n) = self.node_mut(ino) {
            n.add_name(parent, name);
        }
    }

    /// Takes name `name` in `parent` off the parent's children and off its node: the
    /// node, and whether it still has another name.
    fn detach(&mut self, parent: u64, name: &OsStr) -> Option<(u64, bool)> {
        let ino = self.node_mut(parent)?.children.as_mut()?.remove(name)?;
        let named = self
            .node_mut(ino)
            .is_some_and(|n| n.remove_name(parent, name));
        Some((ino, named))
    }

    /// Takes name `name` in `parent` away from its node; a node left with no name loses
    /// its children's names too (what was below a replaced directory). Its slot stays:
    /// numbers are never reused.
    fn unlink(&mut self, parent: u64, name: &OsStr) {
        let Some((ino, false)) = self.detach(parent, name) else {
            return;
        };
        let mut unnamed = vec![ino];
        while let Some(i) = unnamed.pop() {
            let Some(children) = self.node_mut(i).and_then(|n| n.children.take()) else {
                continue;
            };
            for (n, c) in *children {
                if self
                    .node_mut(c)
                    .is_some_and(|node| !node.remove_name(i, &n))
                {
                    unnamed.push(c);
                }
            }
        }
    }

    /// The inode number of `path`, given one (and its parents) if it has none yet.
    pub(super) fn ino_for(&mut self, path: &Path) -> u64 {
        let mut at = ROOT;
        for n in names(path) {
            at = match self.child(at, n) {
                Some(i) => i,
                None => {
                    let i = self.nodes.len() as u64;
                    self.nodes.push(Node::default());
                    self.link(at, n, i);
                    i
                }
            };
        }
        at
    }

    pub(super) fn path_of(&self, ino: u64) -> Option<PathBuf> {
        let mut rev: Vec<&OsStr> = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let (parent, name) = self.node(at)?.first.as_ref()?;
            rev.push(name);
            at = *parent;
        }
        Some(rev.iter().rev().collect())
    }

    /// `path` is now also a name of `ino` (a hard link), replacing what it named.
    pub(super) fn add_link(&mut self, ino: u64, path: &Path) {
        let Some((parent, name)) = self.split_creating(path) else {
            return;
        };
        self.unlink(parent, name);
        self.link(parent, name, ino);
    }

    pub(super) fn remove_path(&mut self, path: &Path) {
        if let Some((parent, name)) = self.split(path) {
            self.unlink(parent, name);
        }
    }

    /// `from` (and everything under it) is now at `to`, replacing what stood there.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) {
        let Some((tp, tname)) = self.split_creating(to) else {
            return;
        };
        let Some((fp, fname, ino)) = self
            .split(from)
            .and_then(|(fp, fname)| Some((fp, fname, self.child(fp, fname)?)))
        else {
            // Never looked up: it gets a node when it is.
            self.unlink(tp, tname);
            return;
        };
        // Onto itself, or onto another name of the same file: nothing changes (rename(2)).
        if self.child(tp, tname) == Some(ino) {
            return;
        }
        self.unlink(tp, tname);
        self.detach(fp, fname);
        self.link(tp, tname, ino);
    }

    /// The parent node and last name of `path`, if the parent has a node.
    fn split<'p>(&self, path: &'p Path) -> Option<(u64, &'p OsStr)> {
        let name = names(path).last()?;
        let parent = match path.parent() {
            Some(p) => names(p).try_fold(ROOT, |at, n| self.child(at, n))?,
            None => ROOT,
        };
        Some((parent, name))
    }

    /// The parent node and last name of `path`, giving the parent a node if it has none.
    fn split_creating<'p>(&mut self, path: &'p Path) -> Option<(u64, &'p OsStr)> {
        let name = names(path).last()?;
        let parent = match path.parent() {
            Some(p) => self.ino_for(p),
            None => ROOT,
        };
        Some((parent, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn paths_get_stable_numbers_and_come_back() {
        let mut t = Table::new();
        assert_eq!(t.ino_for(Path::new("")), ROOT);
        assert_eq!(t.path_of(ROOT), Some(p("")));
        let f = t.ino_for(&p("a/b/f"));
        assert_eq!(t.ino_for(&p("a/b/f")), f);
        assert_eq!(t.path_of(f), Some(p("a/b/f")));
        let b = t.ino_for(&p("a/b"));
        assert_ne!(b, f);
        assert_eq!(t.path_of(b), Some(p("a/b")));
        assert_eq!(t.path_of(999), None);
    }

    #[test]
    fn a_rename_moves_the_subtree_and_replaces_the_target() {
        let mut t = Table::new();
        let d = t.ino_for(&p("d"));
        let f = t.ino_for(&p("d/sub/f"));
        let old = t.ino_for(&p("e/old"));
        let replaced = t.ino_for(&p("e"));
        t.rename(&p("d"), &p("e"));
        assert_eq!(t.path_of(d), Some(p("e")));
        assert_eq!(t.path_of(f), Some(p("e/sub/f")));
        assert_eq!(t.ino_for(&p("e/sub/f")), f);
        // The replaced directory and what was in it are gone.
        assert_eq!(t.path_of(replaced), None);
        assert_eq!(t.path_of(old), None);
        // The old name is free: a new entry there gets a new number.
        let again = t.ino_for(&p("d"));
        assert_ne!(again, d);
        // Renaming a file onto a sibling, and onto itself.
        let x = t.ino_for(&p("e/x"));
        t.rename(&p("e/x"), &p("e/sub/f"));
        assert_eq!(t.path_of(x), Some(p("e/sub/f")));
        assert_eq!(t.path_of(f), None);
        t.rename(&p("e/sub/f"), &p("e/sub/f"));
        assert_eq!(t.path_of(x), Some(p("e/sub/f")));
        // Onto another name of the same file: both names stay.
        t.add_link(x, &p("e/y"));
        t.rename(&p("e/y"), &p("e/sub/f"));
        assert_eq!(t.ino_for(&p("e/y")), x);
        assert_eq!(t.ino_for(&p("e/sub/f")), x);
    }

    #[test]
    fn hard_links_keep_the_node_until_the_last_name_goes() {
        let mut t = Table::new();
        let f = t.ino_for(&p("a/f"));
        t.add_link(f, &p("b/g"));
        assert_eq!(t.ino_for(&p("b/g")), f);
        t.remove_path(&p("a/f"));
        assert_eq!(t.path_of(f), Some(p("b/g")));
        let a = t.ino_for(&p("a"));
        assert_eq!(t.child(a, OsStr::new("f")), None);
        t.remove_path(&p("b/g"));
        assert_eq!(t.path_of(f), None);
        // A link made over an existing name replaces it.
        let h = t.ino_for(&p("h"));
        let k = t.ino_for(&p("k"));
        t.add_link(h, &p("k"));
        assert_eq!(t.ino_for(&p("k")), h);
        assert_eq!(t.path_of(k), None);
    }

    #[test]
    fn removing_a_directory_forgets_what_was_below_it() {
        let mut t = Table::new();
        let d = t.ino_for(&p("d"));
        let f = t.ino_for(&p("d/f"));
        let linked = t.ino_for(&p("d/l"));
        t.add_link(linked, &p("keep"));
        t.remove_path(&p("d"));
        assert_eq!(t.path_of(d), None);
        assert_eq!(t.path_of(f), None);
        // A file linked from elsewhere keeps that name.
        assert_eq!(t.path_of(linked), Some(p("keep")));
        assert!(t
            .node(f)
            .is_some_and(|n| n.first.is_none() && n.children.is_none()));
    }
}
