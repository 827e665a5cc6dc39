//! `kiln du` and `kiln prune`: what the kiln root holds, and freeing it.
//!
//! Both run inside the build's user namespace, as builds do, so they can read and remove
//! whatever a build wrote (files owned by subordinate ids included). `prune` removes only
//! with `--force`, or after a `y` on a terminal; without a terminal it says what it would
//! remove and refuses.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use kiln_executor::store::inventory::{Item, Kind};
use kiln_executor::store::prune::{self, Collector, PruneOptions, Removed};
use kiln_executor::store::usage::Usage;

use crate::images::human;

#[derive(Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum DuFormat {
    #[default]
    Table,
    Json,
}

#[derive(Args)]
pub struct DuArgs {
    #[arg(long, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// Every item (blob, snapshot, cache entry, …), not only the totals.
    #[arg(short, long)]
    verbose: bool,
    #[arg(long, value_enum, default_value_t)]
    format: DuFormat,
}

#[derive(Args)]
pub struct PruneArgs {
    #[arg(long, env = "KILN_ROOT")]
    root: Option<PathBuf>,
    /// Also remove the build cache: every cache entry, what only entries use, and the
    /// cache-mount directories. Tagged images are never removed.
    #[arg(short, long)]
    all: bool,
    /// Stop once the root takes at most SIZE (oldest first): 512MB, 1GB, 2GiB, 1000 (bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// `until=DURATION` (24h, 90m, 1h30m, 10s): only what was last written or used longer
    /// ago. Other keys are refused.
    #[arg(long, value_name = "FILTER", value_parser = parse_filter)]
    filter: Vec<Filter>,
    /// Do not ask.
    #[arg(short, long)]
    force: bool,
}

/// A `--filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Until(Duration),
}

/// Why an argument was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("invalid size {0:?}: expected a number with an optional unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    Size(String),
    #[error("invalid duration {0:?}: expected e.g. 24h, 90m, 1h30m, 10s")]
    Duration(String),
    #[error("unknown filter key {0:?}: kiln prune supports until=DURATION")]
    FilterKey(String),
    #[error("invalid filter {0:?}: expected KEY=VALUE")]
    Filter(String),
}

/// `1GB` (decimal units, as `kiln du` prints), `2GiB` (binary), `1000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, ArgError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| ArgError::Size(s.into()))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(ArgError::Size(s.into())),
    };
    Ok((value * scale as f64) as u64)
}

/// A duration as Go writes them: `24h`, `90m`, `1h30m`, `1.5h`, `10s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let err = || ArgError::Duration(s.into());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = rest[..n].parse().map_err(|_| err())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * seconds;
        rest = &rest[u..];
    }
    Ok(Duration::from_secs_f64(total))
}

fn parse_filter(s: &str) -> Result<Filter, ArgError> {
    match s.split_once('=') {
        Some(("until", v)) => Ok(Filter::Until(parse_duration(v)?)),
        Some((k, _)) if !k.is_empty() => Err(ArgError::FilterKey(k.into())),
        _ => Err(ArgError::Filter(s.into())),
    }
}

fn root_of(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(kiln_executor::default_root)
}

fn waiting(root: &Path) -> impl FnMut() + '_ {
    move || {
        eprintln!(
            "waiting for the other kiln processes using {} to finish…",
            root.display()
        )
    }
}

/// `kiln du`.
pub fn du(args: DuArgs, out: &mut dyn Write) -> Result<i32> {
    if let crate::root::Namespace::Exited(code) = crate::root::namespace()? {
        return Ok(code);
    }
    let root = root_of(args.root);
    let usage =
        prune::usage(&root).with_context(|| format!("reading the kiln root {}", root.display()))?;
    match args.format {
        DuFormat::Table => write_table(&usage, args.verbose, out)?,
        DuFormat::Json => write_json(&usage, args.verbose, out)?,
    }
    Ok(0)
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

fn write_table(usage: &Usage, verbose: bool, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "{:<14} {:>7} {:>7} {:>10} {:>16}",
        "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"
    )?;
    for k in &usage.kinds {
        let reclaim = format!(
            "{} ({}%)",
            human(k.reclaimable),
            percent(k.reclaimable, k.size)
        );
        writeln!(
            out,
            "{:<14} {:>7} {:>7} {:>10} {:>16}",
            k.kind.label(),
            k.count,
            k.active,
            human(k.size),
            reclaim
        )?;
    }
    let (size, reclaimable) = (usage.size(), usage.reclaimable());
    let reclaim = format!("{} ({}%)", human(reclaimable), percent(reclaimable, size));
    writeln!(
        out,
        "{:<14} {:>7} {:>7} {:>10} {:>16}",
        "Total",
        "",
        "",
        human(size),
        reclaim
    )?;
    if verbose {
        writeln!(out)?;
        writeln!(
            out,
            "{:<14} {:<72} {:>10} {:<7} LAST USED",
            "TYPE", "NAME", "SIZE", "HELD BY"
        )?;
        for i in &usage.items {
            writeln!(
                out,
                "{:<14} {:<72} {:>10} {:<7} {}",
                i.kind.label(),
                i.name,
                human(i.size),
                i.held.label(),
                age(i)
            )?;
        }
    }
    Ok(())
}

fn age(item: &Item) -> String {
    let secs = SystemTime::now()
        .duration_since(item.modified)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn write_json(usage: &Usage, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let kinds: Vec<_> = usage
        .kinds
        .iter()
        .map(|k| {
            serde_json::json!({
                "type": k.kind.key(),
                "total": k.count,
                "active": k.active,
                "size": k.size,
                "reclaimable": k.reclaimable,
            })
        })
        .collect();
    let mut doc = serde_json::json!({
        "types": kinds,
        "size": usage.size(),
        "reclaimable": usage.reclaimable(),
    });
    if verbose {
        doc["items"] = usage
            .items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "type": i.kind.key(),
                    "name": i.name,
                    "size": i.size,
                    "held_by": i.held.label(),
                    "modified": unix_seconds(i.modified),
                })
            })
            .collect();
    }
    writeln!(out, "{doc}")?;
    Ok(())
}

/// How `kiln prune` and `kiln rmi` name what they remove.
pub fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Images => "image blob",
        Kind::Layers => "layer",
        Kind::Snapshots => "snapshot",
        Kind::BuildCache => "cache entry",
        Kind::CacheMounts => "cache mount",
        Kind::Temporaries => "temporary",
    }
}

fn total(removed: &[Removed]) -> u64 {
    removed.iter().map(|r| r.size).sum()
}

/// `kiln prune`.
pub fn prune(args: PruneArgs, out: &mut dyn Write) -> Result<i32> {
    if let crate::root::Namespace::Exited(code) = crate::root::namespace()? {
        return Ok(code);
    }
    let root = root_of(args.root);
    let opts = PruneOptions {
        all: args.all,
        keep_storage: args.keep_storage,
        until: args.filter.iter().map(|Filter::Until(d)| *d).max(),
    };
    let open = || {
        Collector::open(&root, &mut waiting(&root))
            .with_context(|| format!("opening the kiln root {}", root.display()))
    };
    if !args.force {
        // The lease is not held while asking: builds go on meanwhile.
        let planned = open()?.plan(&opts).context("planning the prune")?;
        let interactive = std::io::stdin().is_terminal();
        if !interactive {
            for r in &planned {
                writeln!(
                    out,
                    "Would delete {}: {} ({})",
                    noun(r.kind),
                    r.name,
                    human(r.size)
                )?;
            }
            writeln!(out, "Total reclaimable space: {}", human(total(&planned)))?;
            bail!("not removing anything: stdin is not a terminal; pass --force to prune");
        }
        eprintln!(
            "WARNING! This will remove {} items ({}) from {}{}.",
            planned.len(),
            human(total(&planned)),
            root.display(),
            if args.all {
                ", the build cache included"
            } else {
                ""
            }
        );
        eprint!("Are you sure? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            writeln!(out, "Nothing removed.")?;
            return Ok(0);
        }
    }
    let removed = open()?.prune(&opts).context("pruning")?;
    for r in &removed {
        writeln!(
            out,
            "Deleted {}: {} ({})",
            noun(r.kind),
            r.name,
            human(r.size)
        )?;
    }
    writeln!(out, "Total reclaimed space: {}", human(total(&removed)))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5mb"), Ok(1_500_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("GB").is_err());
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn durations_read_like_go() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "h", "1d", "1h x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_until_filters() {
        assert_eq!(
            parse_filter("until=1h"),
            Ok(Filter::Until(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse_filter("type=regular"),
            Err(ArgError::FilterKey("type".into()))
        );
        assert!(parse_filter("until").is_err());
        assert!(parse_filter("until=soon").is_err());
    }
}
