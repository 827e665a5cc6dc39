//! What a build tells its caller while it runs: typed [`Event`]s, in order.

/// What happened, for the caller to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Something the user should know (shown once).
    Warning(String),
    /// A stage starts (before its first step): `id` numbers it among the steps, as
    /// BuildKit numbers a stage's FROM; `base` is what it starts from, expanded
    /// (`scratch`, an image reference, or an earlier stage's name); `total` counts its
    /// steps after FROM, as [`Event::StepStarted`]'s `total` does.
    StageStarted {
        id: usize,
        stage: String,
        base: String,
        total: usize,
    },
    /// A step starts: `id` numbers steps across the build; `index` (from 1) and `total`
    /// count the stage's steps after FROM.
    StepStarted {
        id: usize,
        stage: String,
        index: usize,
        total: usize,
        text: String,
    },
    /// Output of a running step.
    Output { id: usize, bytes: Vec<u8> },
    /// A step ended; `layer` is the digest of the layer it made, if any, and
    /// `layer_size` its compressed size in bytes; `cached`: its result came from the
    /// build cache.
    StepDone {
        id: usize,
        layer: Option<String>,
        layer_size: Option<u64>,
        seconds: f64,
        cached: bool,
    },
    /// Which snapshotter mounts the build's stages, and why (said once, first).
    Snapshotter { kind: String, reason: String },
    /// The image was written (`manifest` and `config` digests).
    ImageWritten {
        manifest: String,
        config: String,
        tags: Vec<String>,
    },
    /// An output was exported.
    Exported(String),
    /// A blob moving from or to a registry (reported about twice a second, and at its end).
    Transfer(crate::registry::Transfer),
    /// A base image was pulled: its full reference, manifest digest, the blobs fetched
    /// (the store had the others) and their bytes.
    Pulled {
        reference: String,
        digest: String,
        fetched: usize,
        bytes: u64,
        seconds: f64,
    },
    /// The image was pushed to `reference`; `uploaded` blobs went up, `skipped` the
    /// registry had.
    Pushed {
        reference: String,
        digest: String,
        uploaded: usize,
        skipped: usize,
        seconds: f64,
    },
}

impl Event {
    /// The event of a pull that ended after `seconds`.
    pub fn pulled(p: crate::registry::Pulled, seconds: f64) -> Event {
        Event::Pulled {
            reference: p.reference,
            digest: p.manifest.digest().to_string(),
            fetched: p.fetched,
            bytes: p.bytes,
            seconds,
        }
    }

    /// The event of a push that ended after `seconds`.
    pub fn pushed(p: crate::registry::Pushed, seconds: f64) -> Event {
        Event::Pushed {
            reference: p.reference,
            digest: p.digest,
            uploaded: p.uploaded,
            skipped: p.skipped,
            seconds,
        }
    }
}
