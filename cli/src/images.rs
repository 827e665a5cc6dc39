//! `kiln images`, `kiln rmi`, `kiln save`, `kiln load`: the local image store.
//!
//! `rmi` removes the tags, then frees what only those images used: their manifest and
//! config blobs, and the layers and snapshots no other tag and no build-cache entry
//! reaches (so a rebuild stays cached; `kiln prune --all` frees the rest). Like `prune`
//! it runs inside the build's namespace and holds the root's exclusive lease.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use kiln_executor::store::archive::ArchiveFormat;
use kiln_executor::store::prune::Collector;
use kiln_executor::store::ImageStore;

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker load`/`podman load`-able archive.
    #[default]
    Docker,
    /// OCI image layout, as a tar.
    Oci,
}

fn open(root: Option<PathBuf>) -> Result<ImageStore> {
    let root = root.unwrap_or_else(kiln_executor::default_root);
    ImageStore::open(&root).with_context(|| format!("opening the image store {}", root.display()))
}

fn short(d: &str) -> &str {
    let hex = d.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

pub(crate) fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

pub fn images(root: Option<PathBuf>, out: &mut dyn Write) -> Result<()> {
    let store = open(root)?;
    writeln!(
        out,
        "{:<40} {:<14} {:<24} {:>9}",
        "TAG", "IMAGE ID", "CREATED", "SIZE"
    )?;
    for i in store.list()? {
        writeln!(
            out,
            "{:<40} {:<14} {:<24} {:>9}",
            i.tag,
            short(&i.config),
            i.created.as_deref().unwrap_or("-"),
            human(i.size)
        )?;
    }
    Ok(())
}

pub fn rmi(root: Option<PathBuf>, names: &[String], out: &mut dyn Write) -> Result<()> {
    match crate::root::namespace()? {
        crate::root::Namespace::Inside(_) => {}
        // The command ran (and reported) inside; its exit code is ours.
        crate::root::Namespace::Exited(0) => return Ok(()),
        crate::root::Namespace::Exited(code) => std::process::exit(code),
    }
    let root = root.unwrap_or_else(kiln_executor::default_root);
    let collector = Collector::open(&root, &mut || {
        eprintln!(
            "waiting for the other kiln processes using {} to finish…",
            root.display()
        )
    })
    .with_context(|| format!("opening the kiln root {}", root.display()))?;
    let store = collector.images();
    let mut missing = Vec::new();
    let mut untagged = Vec::new();
    for n in names {
        let found = store.resolve(n)?;
        if store.untag(n)? {
            writeln!(out, "Untagged: {n}")?;
            untagged.extend(found.map(|d| d.digest().to_string()));
        } else {
            missing.push(n.as_str());
        }
    }
    let removed = collector
        .release(&untagged)
        .context("removing what the untagged images used")?;
    for r in removed {
        writeln!(out, "Deleted {}: {}", crate::prune::noun(r.kind), r.name)?;
    }
    if !missing.is_empty() {
        bail!("no such image: {}", missing.join(", "));
    }
    Ok(())
}

pub fn save(
    root: Option<PathBuf>,
    name: &str,
    output: &std::path::Path,
    format: SaveFormat,
) -> Result<()> {
    let store = open(root)?;
    let f = match format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    store
        .save(name, output, f)
        .with_context(|| format!("saving {name} to {}", output.display()))
}

pub fn load(root: Option<PathBuf>, input: &std::path::Path, out: &mut dyn Write) -> Result<()> {
    let store = open(root)?;
    let tags = store
        .load_archive(input)
        .with_context(|| format!("loading {}", input.display()))?;
    for t in tags {
        writeln!(out, "Loaded image: {t}")?;
    }
    Ok(())
}
