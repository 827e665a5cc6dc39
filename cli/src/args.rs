//! Argument rules more than one command shares: `--build-arg` values and the
//! `--compression` mapping (`kiln build` and `kiln debug plan|layer`).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::ValueEnum;
use kiln_executor::LayerCompression;

/// `--compression`.
#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    Uncompressed,
}

impl Compression {
    /// The layer compression for this choice and `--compression-level` (zstd 1–19,
    /// default 3, on every core; gzip 0–9, default 6).
    pub fn layer(self, level: Option<i32>) -> LayerCompression {
        match self {
            Compression::Zstd => LayerCompression::Zstd {
                level: level.unwrap_or(3),
                threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            },
            Compression::Gzip => LayerCompression::Gzip {
                level: level.map_or(6, |l| l.clamp(0, 9) as u32),
            },
            Compression::Uncompressed => LayerCompression::None,
        }
    }
}

/// `--build-arg` values: `KEY=VALUE`, or `KEY` to take the value from the environment
/// (skipped when unset, as docker does).
pub fn build_args(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {item:?}: empty name"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if item.is_empty() => bail!("invalid --build-arg: empty"),
            None => {
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `--add-host NAME:IP` (or `NAME=IP`): the name and the address, checked.
pub fn add_host(spec: &str) -> Result<(String, String)> {
    let (name, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .filter(|(n, ip)| !n.is_empty() && !ip.is_empty())
        .ok_or_else(|| anyhow::anyhow!("invalid --add-host {spec:?}: expected NAME:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip.parse::<std::net::IpAddr>().is_err() {
        bail!("invalid --add-host {spec:?}: {ip:?} is not an IP address");
    }
    Ok((name.to_string(), ip.to_string()))
}

/// `KEY=VALUE` of an option named `what`.
pub fn key_value(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("invalid {what} {s:?}: expected KEY=VALUE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_values_or_the_environment() {
        std::env::set_var("KILN_ARGS_TEST_VALUE", "from-env");
        let a = build_args(&[
            "A=1".into(),
            "B=".into(),
            "KILN_ARGS_TEST_VALUE".into(),
            "KILN_ARGS_TEST_UNSET".into(),
        ])
        .unwrap();
        assert_eq!(a["A"], "1");
        assert_eq!(a["B"], "");
        assert_eq!(a["KILN_ARGS_TEST_VALUE"], "from-env");
        assert!(!a.contains_key("KILN_ARGS_TEST_UNSET"));
        assert!(build_args(&["=x".into()]).is_err());
    }

    #[test]
    fn add_host_takes_name_and_address() {
        assert_eq!(
            add_host("db:10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert_eq!(add_host("v6=::1").unwrap(), ("v6".into(), "::1".into()));
        assert!(add_host("db:nope").is_err());
        assert!(add_host("nocolon").is_err());
    }

    #[test]
    fn compression_levels() {
        assert_eq!(
            Compression::Gzip.layer(Some(42)),
            LayerCompression::Gzip { level: 9 }
        );
        assert_eq!(
            Compression::Uncompressed.layer(None),
            LayerCompression::None
        );
    }
}
