//! COPY and ADD as steps: sources resolved (the context, another stage, a named context,
//! downloads), then written into the stage's snapshot by [`tree`].
//!
//! - [`tree`]: copying files with BuildKit's rules, unpacking local archives;
//! - [`download`]: ADD's http(s) sources, checked against `--checksum`.

pub mod download;
pub mod tree;

use std::path::PathBuf;

use tree::{copy_into, extract_into, CopyRequest, InlineSource};

use super::{owner_in, StepContext};
use crate::dockerfile::chmod::Chmod;
use crate::error::StepError;
use crate::event::Event;
use crate::graph::CopyOp;
use crate::image::state::StageState;

/// Runs a COPY or ADD; the digest of the layer it made.
pub(super) fn run(
    cx: &StepContext<'_>,
    st: &mut StageState,
    op: &CopyOp,
    id: usize,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Option<String>, StepError> {
    let from = match &op.from {
        Some(input) => Some(cx.view_of(input)?),
        None => None,
    };
    // Downloads are copied like local files, mode 0600 as BuildKit gives them.
    let mut downloads = Vec::new();
    for (n, url) in op.urls.iter().enumerate() {
        let dir = cx.scratch.join(format!("add-{id}-{n}"));
        let name = download::fetch(url, &dir, op.checksum.as_deref())?;
        downloads.push((dir, name));
    }
    let mut req = CopyRequest {
        sources: op.sources.clone(),
        inline: op
            .inline
            .iter()
            .map(|f| InlineSource {
                name: f.name.clone(),
                data: f.data.clone(),
            })
            .collect(),
        dest: op.dest.clone(),
        src_root: match &from {
            Some(t) => t.root().to_path_buf(),
            None => cx.opts.context.clone(),
        },
        from_context: op.from.is_none(),
        chown: None,
        chmod: op.chmod.clone(),
        workdir: st.config.config.working_dir.clone(),
        excludes: op.excludes.clone(),
        parents: op.parents,
        ignore: Some(cx.ignore.clone()),
    };
    // Local archives of ADD, named or matched by a wildcard, are unpacked (unless
    // --unpack=false); the rest is copied.
    let mut archives = Vec::new();
    if op.add && op.unpack != Some(false) {
        let mut plain = Vec::new();
        for s in &op.sources {
            let matches = if crate::context::pattern::has_wildcard(s) {
                tree::expand_source(&cx.opts.context, s, &req)?
            } else {
                vec![s.clone()]
            };
            for m in matches {
                let excluded = cx.ignore.excluded(&m)
                    || op
                        .excludes
                        .iter()
                        .any(|x| crate::context::pattern::match_path(x, &m));
                let archive = crate::mounts::resolve_beneath(&cx.opts.context, &m)
                    .ok()
                    .filter(|p| !excluded && tree::archive_kind(p).is_some());
                match archive {
                    Some(p) => archives.push(p),
                    None if !excluded || !crate::context::pattern::has_wildcard(s) => plain.push(m),
                    None => {}
                }
            }
        }
        req.sources = plain;
    }
    let extra: Vec<CopyRequest> = downloads
        .into_iter()
        .map(|(dir, name): (PathBuf, String)| CopyRequest {
            sources: vec![name],
            inline: Vec::new(),
            src_root: dir,
            from_context: false,
            chmod: req.chmod.clone().or(Some(Chmod::Octal(0o600))),
            ignore: None,
            ..req.clone()
        })
        .collect();
    let mutate =
        |root: &std::path::Path, owner_root: &std::path::Path| -> Result<Vec<String>, StepError> {
            let mut req = req.clone();
            if let Some(c) = &op.chown {
                req.chown = Some(owner_in(owner_root, c)?);
            }
            let mut skipped: Vec<String> = Vec::new();
            if !req.sources.is_empty() || !req.inline.is_empty() {
                skipped.extend(copy_into(root, &req)?);
            }
            for x in &extra {
                let mut x = x.clone();
                x.chown = req.chown;
                skipped.extend(copy_into(root, &x)?);
            }
            for a in &archives {
                extract_into(root, a, &req.dest, &req.workdir, req.chown)?;
            }
            Ok(skipped)
        };
    let mut skipped: Vec<String> = Vec::new();
    let layer = if op.link {
        link(cx, st, |root, owner_root| {
            skipped = mutate(root, owner_root)?;
            Ok(())
        })?
    } else {
        cx.fs_step(st, |root| {
            skipped = mutate(root, root)?;
            Ok(())
        })?
    };
    drop(from);
    if !skipped.is_empty() {
        on_event(Event::Warning(special_files_skipped(&skipped)));
    }
    cx.history(st, format!("{} # buildkit", op.history), layer.is_some());
    Ok(layer)
}

/// `--link`: the copy made on an empty tree and committed as a layer of its own, then
/// that layer applied on top of the stage; names in `--chown` are looked up in the
/// stage's `/etc`. The layer does not depend on what is below it.
fn link(
    cx: &StepContext<'_>,
    st: &mut StageState,
    f: impl FnOnce(&std::path::Path, &std::path::Path) -> Result<(), StepError>,
) -> Result<Option<String>, StepError> {
    cx.materialize(st)?;
    let below = cx.snapshots.view(st.chain.as_ref())?;
    let active = cx.snapshots.prepare(None)?;
    f(active.root(), below.root())?;
    drop(below);
    let Some(own) = cx.snapshots.commit(active, &cx.commit_options())? else {
        return Ok(None);
    };
    let layer = own.layer;
    let blob = std::fs::File::open(&layer.path)?;
    let (chain, _) = cx.snapshots.apply_layer(
        st.chain.as_ref(),
        &layer.digest,
        std::io::BufReader::new(blob),
    )?;
    let digest = layer.digest.clone();
    st.push_cached(
        Some(chain),
        Some(crate::image::state::LayerRef {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            media_type: layer.media_type.to_string(),
        }),
    );
    Ok(Some(digest))
}

/// The warning for device nodes a COPY could not make (no CAP_MKNOD here): how many, and
/// the first few.
fn special_files_skipped(paths: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut names = paths
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        names.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    format!(
        "COPY skipped {} device node{} (creating device nodes is not permitted here): {names}",
        paths.len(),
        if paths.len() == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::special_files_skipped;

    #[test]
    fn the_skip_warning_names_the_first_files_and_counts_the_rest() {
        assert_eq!(
            special_files_skipped(&["/a/fifo".into()]),
            "COPY skipped 1 device node (creating device nodes is not permitted here): /a/fifo"
        );
        let many: Vec<String> = (1..=5).map(|i| format!("/s{i}")).collect();
        assert!(special_files_skipped(&many).ends_with(
            "5 device nodes (creating device nodes is not permitted here): /s1, /s2, /s3 and 2 more"
        ));
    }
}
