//! The layer writer: tar bytes in, an OCI layer blob out, in one streaming pass.
//!
//! ```text
//! tar ──▶ sha256 (diff_id) ──▶ zstd | gzip | none ──▶ sha256 (digest) + blake3 + size ──▶ temp file
//! ```
//! The blob is written under a temporary name in the blob directory, fsynced, and renamed
//! to its sha256 hex name, so a crash never leaves a half-written blob under a real name.
//! No uncompressed copy is ever stored. The same tar bytes and settings give the same blob.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Media types of OCI layers.
pub const MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// zstd at `level`, with `threads` worker threads (0: single-threaded).
    Zstd { level: i32, threads: u32 },
    /// gzip at `level` (0–9).
    Gzip { level: u32 },
    /// No compression.
    None,
}

impl Default for LayerCompression {
    fn default() -> Self {
        LayerCompression::Zstd {
            level: 3,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

impl LayerCompression {
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Zstd { .. } => MEDIA_TYPE_ZSTD,
            LayerCompression::Gzip { .. } => MEDIA_TYPE_GZIP,
            LayerCompression::None => MEDIA_TYPE_TAR,
        }
    }
}

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// blake3 hex of the blob (kiln's content store).
    pub blake3: String,
    pub media_type: &'static str,
    /// Where the blob is: `<blob_dir>/<sha256 hex>`.
    pub path: PathBuf,
}

/// Why a layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("writing the layer blob in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Hashes, counts and stores the compressed bytes.
struct BlobSink {
    file: BufWriter<File>,
    sha: Sha256,
    blake: blake3::Hasher,
    size: u64,
}

impl Write for BlobSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.sha.update(&buf[..n]);
        self.blake.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, BlobSink>),
    Gzip(flate2::write::GzEncoder<BlobSink>),
    Plain(BlobSink),
}

impl Encoder {
    fn inner(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Zstd(e) => e,
            Encoder::Gzip(e) => e,
            Encoder::Plain(s) => s,
        }
    }
    fn finish(self) -> io::Result<BlobSink> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Plain(s) => Ok(s),
        }
    }
}

/// Streams tar bytes into a compressed, content-addressed layer blob.
pub struct LayerWriter {
    dir: PathBuf,
    temp: tempfile::TempPath,
    diff_id: Sha256,
    encoder: Encoder,
    compression: LayerCompression,
}

impl LayerWriter {
    /// Starts a blob in `blob_dir` (created if missing).
    pub fn new(blob_dir: &Path, compression: LayerCompression) -> Result<Self, LayerError> {
        let io = |source| LayerError::Io {
            dir: blob_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(blob_dir).map_err(io)?;
        let temp = tempfile::Builder::new()
            .prefix(".tmp-layer-")
            .tempfile_in(blob_dir)
            .map_err(io)?;
        let (file, temp) = temp.into_parts();
        let sink = BlobSink {
            file: BufWriter::with_capacity(1 << 20, file),
            sha: Sha256::new(),
            blake: blake3::Hasher::new(),
            size: 0,
        };
        let encoder = match compression {
            LayerCompression::Zstd { level, threads } => {
                let mut e = zstd::stream::write::Encoder::new(sink, level).map_err(io)?;
                if threads > 0 {
                    e.multithread(threads).map_err(io)?;
                }
                e.include_checksum(false).map_err(io)?;
                Encoder::Zstd(e)
            }
            LayerCompression::Gzip { level } => Encoder::Gzip(flate2::write::GzEncoder::new(
                sink,
                flate2::Compression::new(level.min(9)),
            )),
            LayerCompression::None => Encoder::Plain(sink),
        };
        Ok(LayerWriter {
            dir: blob_dir.to_path_buf(),
            temp,
            diff_id: Sha256::new(),
            encoder,
            compression,
        })
    }

    /// Ends the stream: flushes, fsyncs and renames the blob to its digest.
    pub fn finish(self) -> Result<Layer, LayerError> {
        let dir = self.dir.clone();
        let io = |source| LayerError::Io {
            dir: dir.clone(),
            source,
        };
        let sink = self.encoder.finish().map_err(io)?;
        let BlobSink {
            file,
            sha,
            blake,
            size,
        } = sink;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let hex = format!("{:x}", sha.finalize());
        let path = self.dir.join(&hex);
        self.temp.persist(&path).map_err(|e| io(e.error))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(Layer {
            diff_id: format!("sha256:{:x}", self.diff_id.finalize()),
            digest: format!("sha256:{hex}"),
            size,
            blake3: blake.finalize().to_hex().to_string(),
            media_type: self.compression.media_type(),
            path,
        })
    }
}

/// Writes the layer of a mounted step's changes, or `None` when nothing changed (an empty
/// diff makes no layer, as in BuildKit); the blob of an empty diff is discarded.
pub fn write_layer(
    guard: &dyn crate::backend::MountGuard,
    opts: &crate::diff::DiffOptions,
    blob_dir: &Path,
    compression: LayerCompression,
) -> Result<Option<Layer>, LayerError> {
    let mut w = LayerWriter::new(blob_dir, compression)?;
    let stats = guard.write_diff(opts, &mut w).map_err(|e| LayerError::Io {
        dir: blob_dir.to_path_buf(),
        source: io::Error::other(e),
    })?;
    if stats.entries == 0 {
        return Ok(None); // the temporary blob is removed when `w` drops
    }
    w.finish().map(Some)
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.inner().write(buf)?;
        self.diff_id.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.inner().flush()
    }
}
