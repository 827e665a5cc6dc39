//! `ADD https://…`: downloading a file for a build, checked against `--checksum`.
//! The file is named after the URL's last path segment, as BuildKit names it.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Downloads `url` into `dir` and returns the file's name; verifies `checksum`
/// (`sha256:<hex>`) when given.
pub fn fetch(url: &str, dir: &Path, checksum: Option<&str>) -> Result<String, String> {
    let path_part = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path_part.splitn(4, '/').nth(3).unwrap_or("");
    let name = after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("__unnamed__")
        .to_string();
    let expected = match checksum {
        None => None,
        Some(c) => match c.split_once(':') {
            Some(("sha256", hex))
                if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                Some(hex.to_ascii_lowercase())
            }
            _ => {
                return Err(format!(
                    "invalid checksum {c:?}: expected sha256:<64 hex digits>"
                ))
            }
        },
    };
    let resp = ureq::get(url)
        .call()
        .map_err(|e| format!("downloading {url}: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = dir.join(&name);
    let mut file =
        std::fs::File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let mut reader = resp.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut reader, &mut buf)
            .map_err(|e| format!("downloading {url}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    let got = format!("{:x}", hasher.finalize());
    if let Some(want) = expected {
        if got != want {
            return Err(format!(
                "digest mismatch for {url}: expected sha256:{want}, got sha256:{got}"
            ));
        }
    }
    Ok(name)
}
