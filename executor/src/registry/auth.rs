//! Registry credentials, found where Docker and podman keep them, and `kiln login` /
//! `kiln logout` writing them back.
//!
//! Read in this order, first match wins: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json` (podman's), then `$DOCKER_CONFIG/config.json`
//! or `~/.docker/config.json`. Each has the same `auths` map (`"HOST": {"auth":
//! base64("user:password")}`); Docker's file may also name credential helpers
//! (`credHelpers` per host, `credsStore` for all), run as `docker-credential-NAME get`
//! with the host on stdin, as Docker runs them.
//!
//! Written here rather than with the `docker_credential` crate: that crate reads only
//! Docker's file and cannot write, while kiln must read podman's files too and store what
//! `kiln login` is given, in the same format.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ****)", self.username)
    }
}

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: the auth entry for {host} is not base64 of user:password", path.display())]
    BadAuth { path: PathBuf, host: String },
    #[error("credential helper docker-credential-{helper} for {host}: {why}")]
    Helper {
        helper: String,
        host: String,
        why: String,
    },
}

/// The files credentials are read from, in order, and the one `kiln login` writes.
#[derive(Debug, Clone)]
pub struct AuthFiles {
    pub read: Vec<PathBuf>,
    pub write: PathBuf,
}

impl AuthFiles {
    /// The files of this process's environment.
    pub fn from_env() -> AuthFiles {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let docker = var("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| var("HOME").map(|h| h.join(".docker/config.json")))
            .unwrap_or_else(|| PathBuf::from(".docker/config.json"));
        let mut read = Vec::new();
        if let Some(f) = var("REGISTRY_AUTH_FILE") {
            read.push(f);
        }
        if let Some(r) = var("XDG_RUNTIME_DIR") {
            read.push(r.join("containers/auth.json"));
        }
        read.push(docker.clone());
        let write = var("REGISTRY_AUTH_FILE").unwrap_or(docker);
        AuthFiles { read, write }
    }

    /// The credentials for `host` (`docker.io` also under Docker Hub's other names), if
    /// any file has them.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>, AuthError> {
        let keys = host_keys(host);
        for path in &self.read {
            let Some(doc) = read_doc(path)? else { continue };
            if let Some(c) = from_auths(&doc, path, &keys)? {
                return Ok(Some(c));
            }
            let helper = keys
                .iter()
                .find_map(|k| doc.get("credHelpers")?.get(k)?.as_str())
                .or_else(|| doc.get("credsStore")?.as_str());
            if let Some(helper) = helper {
                if let Some(c) = run_helper(helper, &keys[0])? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Stores `creds` for `host` in the file logins go to (creating it, mode 0600).
    pub fn store(&self, host: &str, creds: &Credentials) -> Result<(), AuthError> {
        let path = &self.write;
        let mut doc = read_doc(path)?.unwrap_or_else(|| Value::Object(Map::new()));
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", creds.username, creds.secret));
        let auths = doc.as_object_mut().map(|o| {
            o.entry("auths")
                .or_insert_with(|| Value::Object(Map::new()))
        });
        if let Some(Value::Object(auths)) = auths {
            auths.insert(
                host_keys(host)[0].clone(),
                serde_json::json!({ "auth": auth }),
            );
        }
        write_doc(path, &doc)
    }

    /// Removes what the login file has for `host`; whether it had anything.
    pub fn remove(&self, host: &str) -> Result<bool, AuthError> {
        let path = &self.write;
        let Some(mut doc) = read_doc(path)? else {
            return Ok(false);
        };
        let mut removed = false;
        if let Some(Value::Object(auths)) = doc.get_mut("auths") {
            for k in host_keys(host) {
                removed |= auths.remove(&k).is_some();
            }
        }
        if removed {
            write_doc(path, &doc)?;
        }
        Ok(removed)
    }
}

/// The keys a host may be stored under: itself first; Docker Hub's several spellings.
fn host_keys(host: &str) -> Vec<String> {
    const HUB: [&str; 4] = [
        "https://index.docker.io/v1/",
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
    ];
    if HUB.contains(&host) {
        HUB.iter().map(|s| s.to_string()).collect()
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    }
}

fn read_doc(path: &Path) -> Result<Option<Value>, AuthError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| AuthError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_doc(path: &Path, doc: &Value) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("auth"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let json = serde_json::to_vec_pretty(doc).map_err(|source| AuthError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn from_auths(doc: &Value, path: &Path, keys: &[String]) -> Result<Option<Credentials>, AuthError> {
    let Some(entry) = keys.iter().find_map(|k| doc.get("auths")?.get(k.as_str())) else {
        return Ok(None);
    };
    if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            secret: token.to_string(),
        }));
    }
    let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
        return Ok(None);
    };
    let bad = || AuthError::BadAuth {
        path: path.to_path_buf(),
        host: keys[0].clone(),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, secret) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: user.to_string(),
        secret: secret.to_string(),
    }))
}

/// `docker-credential-NAME get`: `None` when the helper knows nothing of `host`.
fn run_helper(helper: &str, host: &str) -> Result<Option<Credentials>, AuthError> {
    let fail = |why: String| AuthError::Helper {
        helper: helper.to_string(),
        host: host.to_string(),
        why,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Docker's helpers say this when they have nothing for the host.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {}", out.status, stdout.trim())));
    }
    let v: BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    match (v.get("Username"), v.get("Secret")) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.clone(),
            secret: s.clone(),
        })),
        _ => Err(fail("no Username and Secret in its answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> AuthFiles {
        AuthFiles {
            read: vec![dir.join("podman.json"), dir.join("config.json")],
            write: dir.join("config.json"),
        }
    }

    #[test]
    fn login_then_lookup_then_logout() {
        let d = tempfile::tempdir().unwrap();
        let f = files(d.path());
        assert_eq!(f.lookup("127.0.0.1:5000").unwrap(), None);
        let c = Credentials {
            username: "u".into(),
            secret: "p:w".into(),
        };
        f.store("127.0.0.1:5000", &c).unwrap();
        assert_eq!(f.lookup("127.0.0.1:5000").unwrap(), Some(c));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.write).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(f.remove("127.0.0.1:5000").unwrap());
        assert_eq!(f.lookup("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn earlier_files_win_and_hub_has_many_names() {
        let d = tempfile::tempdir().unwrap();
        let f = files(d.path());
        let auth = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            d.path().join("podman.json"),
            format!(
                r#"{{"auths":{{"docker.io":{{"auth":"{}"}}}}}}"#,
                auth("a:1")
            ),
        )
        .unwrap();
        std::fs::write(
            d.path().join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"r.example":{{"auth":"{}"}}}}}}"#,
                auth("b:2"),
                auth("c:3")
            ),
        )
        .unwrap();
        assert_eq!(f.lookup("docker.io").unwrap().unwrap().username, "a");
        assert_eq!(f.lookup("r.example").unwrap().unwrap().secret, "3");
        std::fs::write(
            d.path().join("config.json"),
            r#"{"auths":{"r.example":{"auth":"!!"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            f.lookup("r.example"),
            Err(AuthError::BadAuth { .. })
        ));
    }

    #[test]
    fn credential_helpers_are_run() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("docker-credential-kilntest");
        std::fs::write(
            &bin,
            "#!/bin/sh\nread host\n[ \"$host\" = r.example ] || { echo 'credentials not found in native keychain'; exit 1; }\necho '{\"Username\":\"h\",\"Secret\":\"s\"}'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"credHelpers":{"r.example":"kilntest"}}"#,
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            d.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // The helper is found on PATH, as Docker finds it.
        let found = {
            let old = std::env::var_os("PATH");
            std::env::set_var("PATH", &path);
            let r = files(d.path()).lookup("r.example");
            if let Some(o) = old {
                std::env::set_var("PATH", o);
            }
            r
        };
        assert_eq!(found.unwrap().unwrap().username, "h");
    }
}
