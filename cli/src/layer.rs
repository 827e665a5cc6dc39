//! `kiln debug layer export|apply`: the snapshotter's diff, layer writer and apply on
//! plain directories, for checking layers by hand and for `scripts/bench-layer.sh`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use kiln_snapshotter::apply::{apply_layer, ApplyOptions, ApplyTarget};
use kiln_snapshotter::diff::{write_diff, DiffOptions};
use kiln_snapshotter::layer::{LayerCompression, LayerWriter};

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Gzip,
    Uncompressed,
}

#[derive(Subcommand)]
pub enum LayerCommand {
    /// Write DIR (an upper directory in overlay format) as a layer blob into BLOB_DIR and
    /// print its descriptor as JSON.
    Export {
        #[arg(long, value_enum, default_value = "zstd")]
        compression: CompressionArg,
        /// Compression level (zstd 1–19, gzip 0–9).
        #[arg(long)]
        compression_level: Option<i32>,
        /// Clamp file times to this Unix time (SOURCE_DATE_EPOCH).
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        source_date_epoch: Option<u64>,
        dir: PathBuf,
        blob_dir: PathBuf,
    },
    /// Apply a layer blob (plain, gzip or zstd tar) to DIR.
    Apply {
        /// DIR holds the lower layers merged (whiteouts delete) instead of being a fresh
        /// overlay-format snapshot directory.
        #[arg(long)]
        merged: bool,
        blob: PathBuf,
        dir: PathBuf,
    },
}

pub fn run(cmd: LayerCommand, out: &mut impl Write) -> Result<()> {
    match cmd {
        LayerCommand::Export {
            compression,
            compression_level,
            source_date_epoch,
            dir,
            blob_dir,
        } => {
            let compression = match compression {
                CompressionArg::Zstd => LayerCompression::Zstd {
                    level: compression_level.unwrap_or(3),
                    threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                },
                CompressionArg::Gzip => LayerCompression::Gzip {
                    level: compression_level.map_or(6, |l| l.clamp(0, 9) as u32),
                },
                CompressionArg::Uncompressed => LayerCompression::None,
            };
            let mut w = LayerWriter::new(&blob_dir, compression)?;
            let opts = DiffOptions {
                source_date_epoch,
                ..DiffOptions::default()
            };
            let stats = write_diff(&dir, &opts, &mut w)?;
            let layer = w.finish()?;
            let v = serde_json::json!({
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.size,
                "diffID": layer.diff_id,
                "blake3": layer.blake3,
                "path": layer.path,
                "entries": stats.entries,
            });
            serde_json::to_writer_pretty(&mut *out, &v)?;
            writeln!(out)?;
        }
        LayerCommand::Apply { merged, blob, dir } => {
            let f = std::fs::File::open(&blob)
                .with_context(|| format!("opening {}", blob.display()))?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let opts = ApplyOptions {
                target: if merged {
                    ApplyTarget::Merged
                } else {
                    ApplyTarget::Overlay
                },
                ..ApplyOptions::default()
            };
            let stats = apply_layer(f, &dir, &opts)?;
            for w in &stats.warnings {
                eprintln!("warning: {w}");
            }
            writeln!(
                out,
                "applied {} entries, {} bytes",
                stats.entries, stats.bytes
            )?;
        }
    }
    Ok(())
}
