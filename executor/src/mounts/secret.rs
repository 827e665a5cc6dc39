//! Build secrets (`--secret id=ID,src=PATH` or `id=ID,env=VAR`): read once at the start of
//! the build onto a tmpfs private to the build's mount namespace, from where each step
//! that asks copies its secrets onto its own `/dev` tmpfs. The values are never logged,
//! never part of a cache key, and never written to a disk by kiln.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{io_err, MountError};

/// Why a `--secret` value is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretSpecError {
    #[error("invalid secret field {field:?} in {spec:?}")]
    InvalidField { field: String, spec: String },
    #[error("unexpected key {key:?} in secret {spec:?}")]
    UnknownKey { key: String, spec: String },
    #[error("secret {0:?} has no id")]
    NoId(String),
    #[error("unsupported secret type {0:?}")]
    UnsupportedType(String),
    #[error("secret {0:?} has both src and env")]
    SrcAndEnv(String),
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Parses the CLI's `id=ID,src=PATH` / `id=ID,env=VAR` (also `source=`, `type=file|env`,
    /// and a bare `ID`, meaning the variable or file of that name, as buildx does).
    pub fn parse(spec: &str) -> Result<(String, SecretSource), SecretSpecError> {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for field in spec.split(',') {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), v.to_string()),
                None if !spec.contains('=') => ("id".to_string(), field.to_string()),
                None => {
                    return Err(SecretSpecError::InvalidField {
                        field: field.to_string(),
                        spec: spec.to_string(),
                    })
                }
            };
            match k.as_str() {
                "id" => id = Some(v),
                "src" | "source" => src = Some(v),
                "env" => env = Some(v),
                "type" => kind = Some(v),
                _ => {
                    return Err(SecretSpecError::UnknownKey {
                        key: k,
                        spec: spec.to_string(),
                    })
                }
            }
        }
        let id = id
            .or_else(|| src.clone())
            .or_else(|| env.clone())
            .ok_or_else(|| SecretSpecError::NoId(spec.to_string()))?;
        let source = match (kind.as_deref(), src, env) {
            (Some("env"), Some(v), None) | (_, None, Some(v)) => SecretSource::Env(v),
            (Some("file") | None, Some(p), None) => SecretSource::File(PathBuf::from(p)),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (None, None, None) => {
                if std::env::var_os(&id).is_some() {
                    SecretSource::Env(id.clone())
                } else {
                    SecretSource::File(PathBuf::from(&id))
                }
            }
            (Some(t), _, _) if t != "file" && t != "env" => {
                return Err(SecretSpecError::UnsupportedType(t.to_string()))
            }
            _ => return Err(SecretSpecError::SrcAndEnv(spec.to_string())),
        };
        Ok((id, source))
    }
}

/// The build's secrets, as files on memory-backed storage.
#[derive(Debug, Default)]
pub struct SecretStore {
    files: BTreeMap<String, PathBuf>,
}

/// The values of the build's secrets, read once at the start of the build: id and bytes.
pub fn read_values(
    secrets: &[(String, SecretSource)],
) -> Result<Vec<(String, Vec<u8>)>, MountError> {
    secrets
        .iter()
        .map(|(id, source)| {
            let bytes = match source {
                SecretSource::File(p) => fs::read(p).map_err(io_err(format!(
                    "reading secret {id:?} from {}",
                    p.display()
                )))?,
                SecretSource::Env(var) => std::env::var_os(var)
                    .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
                    .ok_or_else(|| MountError::SecretEnvUnset {
                        id: id.clone(),
                        var: var.clone(),
                    })?,
            };
            Ok((id.clone(), bytes))
        })
        .collect()
}

impl SecretStore {
    /// Writes every secret's value (from [`read_values`]) into `dir` (a tmpfs the build
    /// owns), mode 0400.
    pub fn load(dir: &Path, values: &[(String, Vec<u8>)]) -> Result<SecretStore, MountError> {
        let mut files = BTreeMap::new();
        for (i, (id, bytes)) in values.iter().enumerate() {
            let path = dir.join(format!("secret-{i}"));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(io_err(format!("storing secret {id:?}")))?;
            f.write_all(bytes)
                .map_err(io_err(format!("storing secret {id:?}")))?;
            files.insert(id.clone(), path);
        }
        Ok(SecretStore { files })
    }

    /// The file holding secret `id`.
    pub fn file(&self, id: &str) -> Option<PathBuf> {
        self.files.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_forms() {
        assert_eq!(
            SecretSource::parse("id=tok,src=/tmp/t").unwrap(),
            ("tok".into(), SecretSource::File("/tmp/t".into()))
        );
        assert_eq!(
            SecretSource::parse("id=tok,env=TOKEN").unwrap(),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            SecretSource::parse("type=env,id=TOKEN").unwrap(),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        assert!(SecretSource::parse("id=a,bogus=1").is_err());
    }

    #[test]
    fn stores_values_readable_only_by_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in");
        fs::write(&src, b"s3cr3t").unwrap();
        let store_dir = dir.path().join("store");
        fs::create_dir(&store_dir).unwrap();
        let values = read_values(&[("a".into(), SecretSource::File(src))]).unwrap();
        let s = SecretStore::load(&store_dir, &values).unwrap();
        let f = s.file("a").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"s3cr3t");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert!(s.file("b").is_none());
    }
}
