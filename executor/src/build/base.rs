//! Base images: an image of a store (or OCI layout) turned into snapshots, layer by layer,
//! its blobs copied into kiln's store.

use kiln_snapshotter::store::{ChainId, Store};

use crate::image::ImageConfig;
use crate::store::ImageStore;

/// A layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// Where a stage stands: its filesystem (a snapshot chain), config and layers.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageState {
    pub chain: Option<ChainId>,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// ARGs declared so far, with values (for RUN's history text).
    pub build_args: Vec<(String, String)>,
    /// Whether this stage (not its base) set CMD: ENTRYPOINT keeps only such a CMD.
    pub cmd_set: bool,
}

/// Makes snapshots of `desc`'s layers (copying its blobs from `from` into `images`).
pub(crate) fn import_image(
    snapshots: &Store,
    images: &ImageStore,
    from: &ImageStore,
    desc: &oci_spec::image::Descriptor,
) -> Result<StageState, String> {
    let img = from.load(desc).map_err(|e| e.to_string())?;
    let mut st = StageState {
        config: img.config.clone(),
        ..Default::default()
    };
    for (i, l) in img.manifest.layers().iter().enumerate() {
        let digest = l.digest().to_string();
        let src = from.blob_path(&digest);
        let dst = images.blob_path(&digest);
        if src != dst && !dst.exists() {
            let tmp = dst.with_extension("tmp-import");
            std::fs::copy(&src, &tmp).map_err(|e| format!("copying layer {digest}: {e}"))?;
            std::fs::rename(&tmp, &dst).map_err(|e| format!("copying layer {digest}: {e}"))?;
        }
        let diff_id = img
            .config
            .rootfs
            .diff_ids
            .get(i)
            .cloned()
            .unwrap_or_default();
        let id = ChainId::new(st.chain.as_ref(), &digest);
        if !snapshots.exists(&id) {
            let f =
                std::fs::File::open(&dst).map_err(|e| format!("reading layer {digest}: {e}"))?;
            snapshots
                .apply(
                    st.chain.as_ref(),
                    &digest,
                    std::io::BufReader::new(f),
                    &Default::default(),
                )
                .map_err(|e| format!("applying layer {digest}: {e}"))?;
        }
        st.chain = Some(id);
        st.layers.push(LayerRef {
            digest,
            diff_id,
            size: l.size(),
            media_type: l.media_type().to_string(),
        });
    }
    Ok(st)
}
