//! An image under construction: where a stage stands after each step.

use crate::image::ImageConfig;
use crate::snapshots::{ChainId, Committed};

/// A layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// Where a stage stands: its filesystem (a snapshot chain), config and layers.
#[derive(Debug, Clone, Default)]
pub struct StageState {
    pub chain: Option<ChainId>,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// ARGs declared so far, with values (for RUN's history text).
    pub build_args: Vec<(String, String)>,
    /// Whether this stage (not its base) set CMD: ENTRYPOINT keeps only such a CMD.
    pub cmd_set: bool,
    /// The build-cache key of this state (the last step's, or the base's).
    pub key: Option<crate::cache::StepKey>,
    /// What importing the base image found the user should know (skipped device
    /// nodes, ownership not kept, …); taken by whoever reports it.
    pub warnings: Vec<String>,
}

impl StageState {
    /// Puts a cached layer on top (the chain it leads to is `chain`).
    pub fn push_cached(&mut self, chain: Option<ChainId>, layer: Option<LayerRef>) {
        self.chain = chain;
        if let Some(l) = layer {
            self.config.rootfs.diff_ids.push(l.diff_id.clone());
            self.layers.push(l);
        }
    }

    /// Puts a committed step on top: its chain, its layer, its diff id.
    pub fn push_layer(&mut self, committed: Committed) {
        let layer = committed.layer;
        self.chain = Some(committed.chain);
        self.config.rootfs.diff_ids.push(layer.diff_id.clone());
        self.layers.push(LayerRef {
            digest: layer.digest,
            diff_id: layer.diff_id,
            size: layer.size,
            media_type: layer.media_type.to_string(),
        });
    }
}
