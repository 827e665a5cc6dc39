//! `ADD https://…`: downloading a file for a build, checked against `--checksum`.
//! The file is named after the URL's last path segment, as BuildKit names it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid checksum {0:?}: expected sha256:<64 hex digits>")]
    BadChecksum(String),
    #[error("downloading {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("downloading {url}: {source}")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("digest mismatch for {url}: expected sha256:{want}, got sha256:{got}")]
    Mismatch {
        url: String,
        want: String,
        got: String,
    },
}

/// `sha256:<hex>` → the lower-case hex digest.
pub fn parse_checksum(c: &str) -> Result<String, DownloadError> {
    match c.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(hex.to_ascii_lowercase())
        }
        _ => Err(DownloadError::BadChecksum(c.to_string())),
    }
}

/// Downloads `url` into `dir` and returns the file's name; verifies `checksum`
/// (`sha256:<hex>`) when given.
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<String, DownloadError> {
    let path_part = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path_part.splitn(4, '/').nth(3).unwrap_or("");
    let name = after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("__unnamed__")
        .to_string();
    let expected = checksum.map(parse_checksum).transpose()?;
    let resp = ureq::get(url).call().map_err(|e| DownloadError::Http {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let target = dir.join(&name);
    let mut file = std::fs::File::create(&target).map_err(write_err(&target))?;
    let mut reader = resp.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n =
            std::io::Read::read(&mut reader, &mut buf).map_err(|source| DownloadError::Read {
                url: url.to_string(),
                source,
            })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(write_err(&target))?;
    }
    let got = format!("{:x}", hasher.finalize());
    if let Some(want) = expected {
        if got != want {
            return Err(DownloadError::Mismatch {
                url: url.to_string(),
                want,
                got,
            });
        }
    }
    Ok(name)
}
