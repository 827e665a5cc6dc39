//! Pull: a reference's manifest (from an index or manifest list, the one for this
//! platform, variant-aware), its config and layers into the local store, then a tag.
//!
//! Every blob streams into a temporary file in the store's blob directory while its
//! sha256 is computed; only a blob whose digest and size match is renamed to its digest
//! name, so an interrupted or tampered pull stores nothing (the temporary goes with a
//! failed fetch; a killed pull's is swept at the next start). Blobs the store has are not fetched again: images share
//! layers by digest. The manifest is stored byte for byte, so its digest stays the
//! registry's; the tag is written last.

use std::io::Write;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use oci_spec::image::{Descriptor, MediaType};
use serde_json::Value;
use sha2::Digest as _;

use super::{
    distribution, parse_reference, sha256_digest, Registry, RegistryError, Transfer,
    TransferAction, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use crate::plan::Platform;
use crate::store::{descriptor, ImageStore};

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference, as Docker spells it in full.
    pub reference: String,
    /// The platform manifest, as tagged in the store.
    pub manifest: Descriptor,
    /// Blobs fetched (the others were in the store) and their bytes.
    pub fetched: usize,
    pub bytes: u64,
}

/// A blob to fetch: digest and size from its descriptor.
#[derive(Debug, Clone)]
struct Want {
    digest: String,
    size: u64,
}

/// A manifest fetched with its blobs, not tagged.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub reference: String,
    pub manifest: Descriptor,
    /// The manifest's bytes, as the registry serves them.
    pub bytes: Vec<u8>,
    pub fetched: usize,
    pub total: u64,
}

impl Registry {
    /// Pulls `reference` into `store` and tags it there as written.
    pub fn pull(
        &self,
        reference: &str,
        platform: &Platform,
        store: &ImageStore,
        on_transfer: &mut dyn FnMut(Transfer),
    ) -> Result<Pulled, RegistryError> {
        let f = self.fetch(reference, platform, store, on_transfer)?;
        store.tag(reference, &f.manifest)?;
        Ok(Pulled {
            reference: f.reference,
            manifest: f.manifest,
            fetched: f.fetched,
            bytes: f.total,
        })
    }

    /// `reference`'s manifest (this platform's, from an index) as the registry serves it,
    /// digest-checked, and its digest; nothing is stored.
    pub fn fetch_manifest(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let r = parse_reference(reference)?;
        let client = self.client(&r);
        let auth = self.auth(&r)?;
        self.runtime.block_on(async {
            let (bytes, digest, _) = manifest_for(&client, &auth, &r, platform).await?;
            Ok((bytes, digest))
        })
    }

    /// Fetches blob `digest` (`size` bytes) of `reference`'s repository into `store`
    /// (streamed, checked, renamed into place); its size.
    pub fn fetch_blob(
        &self,
        reference: &str,
        digest: &str,
        size: u64,
        store: &ImageStore,
        on_transfer: &mut dyn FnMut(Transfer),
    ) -> Result<u64, RegistryError> {
        let r = parse_reference(reference)?;
        let client = self.client(&r);
        let auth = self.auth(&r)?;
        let w = Want {
            digest: digest.to_string(),
            size,
        };
        self.drive(on_transfer, |tx| {
            self.runtime.block_on(async {
                client
                    .auth(&r, &auth, oci_client::RegistryOperation::Pull)
                    .await
                    .map_err(distribution(&r))?;
                fetch_blob(&client, &r, w, store, &self.cancel, tx).await
            })
        })?
    }

    /// Fetches `reference`'s manifest (this platform's, from an index) and the blobs it
    /// names into `store`, without tagging it.
    pub fn fetch(
        &self,
        reference: &str,
        platform: &Platform,
        store: &ImageStore,
        on_transfer: &mut dyn FnMut(Transfer),
    ) -> Result<Fetched, RegistryError> {
        let r = parse_reference(reference)?;
        let client = self.client(&r);
        let auth = self.auth(&r)?;
        let parallel = self.opts.parallel.max(1);
        self.drive(on_transfer, |tx| {
            self.runtime.block_on(async {
                let (bytes, digest, media_type) =
                    manifest_for(&client, &auth, &r, platform).await?;
                let doc = json(&r, "manifest", &bytes)?;
                let mut wants = Vec::new();
                let config = want(&r, doc.get("config"))?;
                wants.push(config);
                for l in doc
                    .get("layers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    wants.push(want(&r, Some(l))?);
                }
                let missing: Vec<Want> = wants
                    .into_iter()
                    .filter(|w| !store.blob_path(&w.digest).exists())
                    .collect();
                let fetched = missing.len();
                let total: u64 = futures_util::stream::iter(missing)
                    .map(|w| fetch_blob(&client, &r, w, store, &self.cancel, tx.clone()))
                    .buffer_unordered(parallel)
                    .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
                    .await?;
                let stored = store.put_blob(&bytes)?;
                if stored != digest {
                    return Err(RegistryError::Digest {
                        reference: r.whole(),
                        digest,
                        actual: stored,
                    });
                }
                let desc = descriptor(
                    MediaType::from(media_type.as_str()),
                    &digest,
                    bytes.len() as u64,
                )?;
                Ok::<_, RegistryError>(Fetched {
                    reference: r.whole(),
                    manifest: desc,
                    bytes,
                    fetched,
                    total,
                })
            })
        })?
    }
}

fn json(r: &Reference, what: &'static str, bytes: &[u8]) -> Result<Value, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::Json {
        reference: r.whole(),
        what,
        source,
    })
}

fn want(r: &Reference, d: Option<&Value>) -> Result<Want, RegistryError> {
    let bad = |why: &str| RegistryError::Json {
        reference: r.whole(),
        what: "manifest",
        source: serde::de::Error::custom(why),
    };
    let d = d.ok_or_else(|| bad("a descriptor is missing"))?;
    let digest = d
        .get("digest")
        .and_then(Value::as_str)
        .filter(|s| {
            s.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .ok_or_else(|| bad("a descriptor has no sha256 digest"))?;
    let size = d
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("a descriptor has no size"))?;
    Ok(Want {
        digest: digest.to_ascii_lowercase(),
        size,
    })
}

/// The media type a manifest document says it is (OCI allows leaving it out).
fn media_type_of(doc: &Value) -> String {
    match doc.get("mediaType").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None if doc.get("manifests").is_some() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    }
}

/// Fetches a manifest, checks its digest, and follows an index to `platform`'s manifest.
async fn manifest_for(
    client: &oci_client::Client,
    auth: &oci_client::secrets::RegistryAuth,
    r: &Reference,
    platform: &Platform,
) -> Result<(Vec<u8>, String, String), RegistryError> {
    let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let (bytes, _) = client
        .pull_manifest_raw(r, auth, &accepted)
        .await
        .map_err(distribution(r))?;
    let digest = checked(r, &bytes, r.digest())?;
    let doc = json(r, "manifest", &bytes)?;
    let media_type = media_type_of(&doc);
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok((bytes.to_vec(), digest, media_type)),
        OCI_INDEX | DOCKER_LIST => {
            let chosen = choose_platform(r, &doc, platform)?;
            let child = r.clone_with_digest(chosen.clone());
            let (bytes, _) = client
                .pull_manifest_raw(&child, auth, &accepted)
                .await
                .map_err(distribution(r))?;
            let digest = checked(r, &bytes, Some(&chosen))?;
            let doc = json(r, "manifest", &bytes)?;
            let media_type = media_type_of(&doc);
            if !matches!(media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) {
                return Err(RegistryError::NotAnImage {
                    reference: r.whole(),
                    media_type,
                });
            }
            Ok((bytes.to_vec(), digest, media_type))
        }
        _ => Err(RegistryError::NotAnImage {
            reference: r.whole(),
            media_type,
        }),
    }
}

/// `bytes`' digest, which must be `expected` when the reference or index names one.
fn checked(r: &Reference, bytes: &[u8], expected: Option<&str>) -> Result<String, RegistryError> {
    let actual = sha256_digest(bytes);
    match expected {
        Some(e) if e != actual => Err(RegistryError::Digest {
            reference: r.whole(),
            digest: e.to_string(),
            actual,
        }),
        _ => Ok(actual),
    }
}

/// The digest of `platform`'s manifest in an index: same os and architecture, the same
/// variant preferred, then one without a variant, then (when no variant is asked for)
/// any.
fn choose_platform(r: &Reference, index: &Value, want: &Platform) -> Result<String, RegistryError> {
    let entries: Vec<&Value> = index
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let field = |e: &Value, k: &str| -> Option<String> {
        e.get("platform")?.get(k)?.as_str().map(str::to_string)
    };
    let matching: Vec<&Value> = entries
        .iter()
        .copied()
        .filter(|e| {
            field(e, "os").as_deref() == Some(want.os.as_str())
                && field(e, "architecture").as_deref() == Some(want.architecture.as_str())
        })
        .collect();
    let variant = want.variant.as_deref();
    let pick = matching
        .iter()
        .find(|e| field(e, "variant").as_deref() == variant)
        .or_else(|| matching.iter().find(|e| field(e, "variant").is_none()))
        .or_else(|| variant.is_none().then(|| matching.first()).flatten());
    match pick.and_then(|e| e.get("digest")?.as_str()) {
        Some(d) => Ok(d.to_string()),
        None => Err(RegistryError::NoPlatform {
            reference: r.whole(),
            platform: want.to_string(),
            available: entries
                .iter()
                .map(|e| {
                    let mut p = format!(
                        "{}/{}",
                        field(e, "os").unwrap_or_else(|| "?".into()),
                        field(e, "architecture").unwrap_or_else(|| "?".into())
                    );
                    if let Some(v) = field(e, "variant") {
                        p = format!("{p}/{v}");
                    }
                    p
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Streams one blob into the store (temporary file, digest and size checked, renamed);
/// its size.
async fn fetch_blob(
    client: &oci_client::Client,
    r: &Reference,
    w: Want,
    store: &ImageStore,
    cancel: &crate::CancelToken,
    tx: std::sync::mpsc::Sender<Transfer>,
) -> Result<u64, RegistryError> {
    let started = Instant::now();
    let io = |source| RegistryError::Io {
        reference: r.whole(),
        digest: w.digest.clone(),
        source,
    };
    let desc = OciDescriptor {
        digest: w.digest.clone(),
        size: w.size as i64,
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(r, &desc)
        .await
        .map_err(distribution(r))?;
    let dest = store.blob_path(&w.digest);
    // Removed when dropped: on an error, and when a sibling's error drops this future
    // mid-stream (the parallel fetch stops at the first failure).
    let hex = w.digest.trim_start_matches("sha256:");
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{hex}.pull-"))
        .tempfile_in(store.blob_dir())
        .map_err(io)?;
    let mut file = std::io::BufWriter::new(tmp);
    let mut hasher = sha2::Sha256::new();
    let mut done = 0u64;
    let mut last = Instant::now();
    let report = |done: u64, finished: bool| Transfer {
        action: TransferAction::Pull,
        digest: w.digest.clone(),
        done,
        total: w.size,
        finished,
        skipped: false,
        mounted: false,
        seconds: started.elapsed().as_secs_f64(),
    };
    let result: Result<(), RegistryError> = async {
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client's own check of the digest at the stream's end.
                Err(e) if e.to_string().contains("igest") => break,
                Err(e) => return Err(io(e)),
            };
            if cancel.is_cancelled() {
                return Err(RegistryError::Cancelled {
                    reference: r.whole(),
                });
            }
            done += chunk.len() as u64;
            if done > w.size {
                return Err(RegistryError::Size {
                    reference: r.whole(),
                    digest: w.digest.clone(),
                    expected: w.size,
                    actual: done,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(io)?;
            if last.elapsed().as_millis() >= 500 {
                last = Instant::now();
                let _ = tx.send(report(done, false));
            }
        }
        let actual = format!("sha256:{:x}", hasher.clone().finalize());
        if actual != w.digest {
            return Err(RegistryError::Digest {
                reference: r.whole(),
                digest: w.digest.clone(),
                actual,
            });
        }
        if done != w.size {
            return Err(RegistryError::Size {
                reference: r.whole(),
                digest: w.digest.clone(),
                expected: w.size,
                actual: done,
            });
        }
        let tmp = file.into_inner().map_err(|e| io(e.into_error()))?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&dest).map_err(|e| io(e.error))?;
        Ok(())
    }
    .await;
    result?;
    let _ = tx.send(report(done, true));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Value {
        serde_json::json!({"manifests": [
            {"digest": "sha256:aa", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
            {"digest": "sha256:bb", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": "sha256:cc", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:dd", "platform": {"os": "unknown", "architecture": "unknown"}},
            {"digest": "sha256:ee", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
        ]})
    }

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn the_platform_and_its_variant_choose_the_manifest() {
        let r = parse_reference("127.0.0.1:5000/x:1").unwrap();
        let i = index();
        assert_eq!(
            choose_platform(&r, &i, &p("linux", "amd64", None)).unwrap(),
            "sha256:cc"
        );
        assert_eq!(
            choose_platform(&r, &i, &p("linux", "arm", Some("v7"))).unwrap(),
            "sha256:bb"
        );
        assert_eq!(
            choose_platform(&r, &i, &p("linux", "arm", Some("v6"))).unwrap(),
            "sha256:aa"
        );
        assert_eq!(
            choose_platform(&r, &i, &p("linux", "arm64", None)).unwrap(),
            "sha256:ee"
        );
        let e = choose_platform(&r, &i, &p("linux", "s390x", None)).unwrap_err();
        assert!(e.to_string().contains("linux/arm/v7"), "{e}");
        assert!(choose_platform(&r, &i, &p("linux", "arm", Some("v5"))).is_err());
    }
}
