//! Push: an image of the local store to a registry — each blob the registry lacks
//! (asked with HEAD first; a cross-repository mount from the repository a blob was
//! pulled from, when that is on the same registry), streamed in chunks from its file,
//! then the manifest, byte for byte, last: a reader never sees a manifest whose blobs
//! are missing.

use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::Reference;
use oci_spec::image::Descriptor;
use serde_json::Value;

use super::{
    distribution, parse_reference, sha256_digest, Registry, RegistryError, Transfer, TransferAction,
};
use crate::store::{ImageStore, REF_NAME};

/// Chunk size of uploads (a PATCH each).
const CHUNK: usize = 8 << 20;

/// A pushed image.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Where it went, as Docker spells it in full, and the manifest's digest there.
    pub reference: String,
    pub digest: String,
    /// Blobs uploaded (or mounted), and blobs the registry had.
    pub uploaded: usize,
    pub skipped: usize,
}

impl Registry {
    /// Pushes the image `manifest` (of `store`) to `dest`.
    pub fn push(
        &self,
        store: &ImageStore,
        manifest: &Descriptor,
        dest: &str,
        on_transfer: &mut dyn FnMut(Transfer),
    ) -> Result<Pushed, RegistryError> {
        let r = parse_reference(dest)?;
        let client = self.client(&r);
        let auth = self.auth(&r)?;
        let digest = manifest.digest().to_string();
        let bytes = store.read_blob(&digest)?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
            reference: r.whole(),
            what: "manifest",
            source,
        })?;
        let mut blobs = Vec::new();
        let descs = doc
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(doc.get("config"));
        for d in descs {
            let (Some(dg), Some(size)) = (
                d.get("digest").and_then(Value::as_str),
                d.get("size").and_then(Value::as_u64),
            ) else {
                continue;
            };
            blobs.push((dg.to_string(), size));
        }
        let media_type = manifest.media_type().to_string();
        let parallel = self.opts.parallel.max(1);
        let sources = mount_sources(store, &r);
        self.drive(on_transfer, |tx| {
            self.runtime.block_on(async {
                client
                    .auth(&r, &auth, oci_client::RegistryOperation::Push)
                    .await
                    .map_err(distribution(&r))?;
                let results: Vec<bool> = futures_util::stream::iter(blobs)
                    .map(|(d, size)| {
                        let from = sources.get(&d).cloned();
                        upload(&client, &r, store, d, size, from, tx.clone())
                    })
                    .buffer_unordered(parallel)
                    .try_collect()
                    .await?;
                let content_type = http::HeaderValue::from_str(&media_type)
                    .unwrap_or(http::HeaderValue::from_static(super::OCI_MANIFEST));
                client
                    .push_manifest_raw(&r, bytes.clone(), content_type)
                    .await
                    .map_err(distribution(&r))?;
                let uploaded = results.iter().filter(|u| **u).count();
                Ok(Pushed {
                    reference: r.whole(),
                    digest: sha256_digest(&bytes),
                    uploaded,
                    skipped: results.len() - uploaded,
                })
            })
        })?
    }
}

/// Repositories of `r`'s registry that the store's tags say hold each blob: where a
/// push can mount a blob from instead of uploading it.
fn mount_sources(store: &ImageStore, r: &Reference) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(index) = store.index() else {
        return out;
    };
    for d in index.manifests() {
        let Some(name) = d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) else {
            continue;
        };
        let Ok(src) = parse_reference(name) else {
            continue;
        };
        if src.registry() != r.registry() || src.repository() == r.repository() {
            continue;
        }
        let Ok(bytes) = store.read_blob(d.digest().as_ref()) else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let blobs = doc
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(doc.get("config"));
        for b in blobs {
            if let Some(digest) = b.get("digest").and_then(Value::as_str) {
                out.entry(digest.to_string())
                    .or_insert_with(|| src.repository().to_string());
            }
        }
    }
    out
}

/// Uploads one blob unless the registry has it (mounting it from `from`, a repository
/// of the same registry, when that works); whether it was uploaded or mounted.
async fn upload(
    client: &oci_client::Client,
    r: &Reference,
    store: &ImageStore,
    digest: String,
    size: u64,
    from: Option<String>,
    tx: std::sync::mpsc::Sender<Transfer>,
) -> Result<bool, RegistryError> {
    let started = Instant::now();
    let report = |done: u64, finished: bool, skipped: bool| Transfer {
        action: TransferAction::Push,
        digest: digest.clone(),
        done,
        total: size,
        finished,
        skipped,
        mounted: false,
        seconds: started.elapsed().as_secs_f64(),
    };
    if client
        .blob_exists(r, &digest)
        .await
        .map_err(distribution(r))?
    {
        let _ = tx.send(report(size, true, true));
        return Ok(false);
    }
    if let Some(repo) = from {
        let source = Reference::with_tag(r.registry().to_string(), repo, "latest".into());
        // A registry that cannot mount answers with an upload session: upload then.
        if client.mount_blob(r, &source, &digest).await.is_ok() {
            let _ = tx.send(Transfer {
                mounted: true,
                ..report(size, true, false)
            });
            return Ok(true);
        }
    }
    let path = store.blob_path(&digest);
    let file = std::fs::File::open(&path).map_err(|source| RegistryError::Io {
        reference: r.whole(),
        digest: digest.clone(),
        source,
    })?;
    let progress = tx.clone();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let name = digest.clone();
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Some((Err(OciDistributionError::IoError(e)), None)),
            }
        }
        if n == 0 {
            return None;
        }
        buf.truncate(n);
        Some((Ok(bytes::Bytes::from(buf)), Some(file)))
    })
    .inspect(move |c| {
        if let Ok(c) = c {
            let done = counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + c.len() as u64;
            let _ = progress.send(Transfer {
                action: TransferAction::Push,
                digest: name.clone(),
                done,
                total: size,
                finished: false,
                skipped: false,
                mounted: false,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    });
    client
        .push_blob_stream(r, chunks, &digest, Some(size))
        .await
        .map_err(distribution(r))?;
    let _ = tx.send(report(size, true, false));
    Ok(true)
}
