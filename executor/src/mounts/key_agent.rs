//! An ssh agent of kiln's own for `--ssh ID=KEYFILE`: it holds the private keys in memory
//! and answers the agent protocol (draft-miller-ssh-agent: list identities, sign) on a
//! socket private to the build, which RUN steps reach through the ssh mount's proxy. The
//! keys never enter a step; only signatures do.
//!
//! Written here because the Rust agent crates are async (tokio) servers, and the part
//! kiln needs is two messages; keys are read as BuildKit reads them (OpenSSH, PEM and
//! PKCS#8, see [`key_file`](super::key_file)), signing comes from `ssh-key`. Encrypted
//! keys are refused (load them into ssh-agent and pass its socket). RSA keys sign with
//! rsa-sha2-512 or rsa-sha2-256, as the client asks.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ssh_encoding::Encode as _;
use ssh_key::PrivateKey;

use super::{io_err, MountError};

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const RSA_SHA2_256: u32 = 2;
const RSA_SHA2_512: u32 = 4;

/// A running agent; stops and removes its socket when dropped.
pub struct KeyAgent {
    server: super::ssh::SocketServer,
}

impl KeyAgent {
    /// Loads `keys` and serves them at `socket` (mode 0600).
    pub fn start(keys: &[PathBuf], socket: &Path) -> Result<KeyAgent, MountError> {
        let mut loaded = Vec::new();
        for k in keys {
            let text =
                std::fs::read(k).map_err(io_err(format!("reading ssh key {}", k.display())))?;
            let key = super::key_file::parse(&text).map_err(|source| match source {
                super::key_file::KeyFileError::Encrypted => {
                    MountError::EncryptedKey { path: k.clone() }
                }
                source => MountError::NotAKey {
                    path: k.clone(),
                    source: Box::new(source),
                },
            })?;
            loaded.push(key);
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(io_err(format!(
            "creating the ssh agent socket {}",
            socket.display()
        )))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err("setting the agent socket's mode"))?;
        }
        let keys = Arc::new(loaded);
        let server = super::ssh::SocketServer::spawn(listener, socket, move |c| {
            if let Err(e) = serve(c, &keys) {
                tracing::debug!("ssh agent connection: {e}");
            }
        });
        Ok(KeyAgent { server })
    }

    pub fn socket(&self) -> &Path {
        self.server.socket()
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// Reads a `string` (u32 length + bytes) at `*pos`.
fn get_string<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(buf.get(*pos..*pos + 4)?.try_into().ok()?) as usize;
    let s = buf.get(*pos + 4..*pos + 4 + len)?;
    *pos += 4 + len;
    Some(s)
}

/// The reply to one request message.
fn answer(msg: &[u8], keys: &[PrivateKey]) -> Vec<u8> {
    let mut out = Vec::new();
    match msg.first() {
        Some(&REQUEST_IDENTITIES) => {
            out.push(IDENTITIES_ANSWER);
            let ids: Vec<(Vec<u8>, &str)> = keys
                .iter()
                .filter_map(|k| Some((k.public_key().to_bytes().ok()?, k.comment())))
                .collect();
            out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            for (blob, comment) in ids {
                put_string(&mut out, &blob);
                put_string(&mut out, comment.as_bytes());
            }
        }
        Some(&SIGN_REQUEST) => {
            let mut pos = 1;
            let (Some(blob), Some(data)) = (get_string(msg, &mut pos), get_string(msg, &mut pos))
            else {
                return vec![FAILURE];
            };
            let flags = msg
                .get(pos..pos + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .unwrap_or(0);
            let Some(key) = keys
                .iter()
                .find(|k| k.public_key().to_bytes().ok().as_deref() == Some(blob))
            else {
                return vec![FAILURE];
            };
            let sig = if key.algorithm().is_rsa() {
                rsa_sign(key, data, flags)
            } else {
                signature::Signer::try_sign(key, data).ok()
            };
            let mut encoded = Vec::new();
            if sig.and_then(|s| s.encode(&mut encoded).ok()).is_none() {
                return vec![FAILURE];
            }
            out.push(SIGN_RESPONSE);
            put_string(&mut out, &encoded);
        }
        _ => out.push(FAILURE),
    }
    out
}

/// An RSA signature as the request's flags ask: rsa-sha2-512, or rsa-sha2-256 (the SHA-1
/// `ssh-rsa` of flags 0 is refused, as current OpenSSH servers refuse it). Signed here
/// rather than by `ssh-key`, whose RSA conversion (0.6) builds the key from the wrong
/// primes and fails every signature.
fn rsa_sign(key: &PrivateKey, data: &[u8], flags: u32) -> Option<ssh_key::Signature> {
    use signature::{SignatureEncoding as _, Signer as _};
    use ssh_key::{Algorithm, HashAlg};
    let kp = key.key_data().rsa()?;
    let big = |m: &ssh_key::Mpint| m.as_positive_bytes().map(rsa::BigUint::from_bytes_be);
    let private = rsa::RsaPrivateKey::from_components(
        big(&kp.public.n)?,
        big(&kp.public.e)?,
        big(&kp.private.d)?,
        vec![big(&kp.private.p)?, big(&kp.private.q)?],
    )
    .ok()?;
    let (hash, bytes) = if flags & RSA_SHA2_512 != 0 {
        let k = rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(private);
        (HashAlg::Sha512, k.try_sign(data).ok()?.to_vec())
    } else if flags & RSA_SHA2_256 != 0 {
        let k = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private);
        (HashAlg::Sha256, k.try_sign(data).ok()?.to_vec())
    } else {
        return None;
    };
    ssh_key::Signature::new(Algorithm::Rsa { hash: Some(hash) }, bytes).ok()
}

fn serve(mut conn: UnixStream, keys: &[PrivateKey]) -> io::Result<()> {
    loop {
        let mut len = [0u8; 4];
        match conn.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > 256 * 1024 {
            return Err(io::Error::other("agent message too long"));
        }
        let mut msg = vec![0u8; n];
        conn.read_exact(&mut msg)?;
        let reply = answer(&msg, keys);
        conn.write_all(&(reply.len() as u32).to_be_bytes())?;
        conn.write_all(&reply)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_add_lists_and_ssh_keygen_verifies_signatures() {
        let have = |p: &str| Path::new(p).exists();
        if !(have("/usr/bin/ssh-keygen") && have("/usr/bin/ssh-add")) {
            println!("skipped: openssh-client missing");
            assert!(
                std::env::var_os("CI").is_none(),
                "openssh-client missing under CI"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        let st = std::process::Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "kiln-agent-test",
                "-f",
            ])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        let agent = KeyAgent::start(std::slice::from_ref(&key), &dir.path().join("agent")).unwrap();
        let out = std::process::Command::new("ssh-add")
            .arg("-L")
            .env("SSH_AUTH_SOCK", agent.socket())
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        let public = std::fs::read_to_string(dir.path().join("id.pub")).unwrap();
        assert_eq!(listed.trim(), public.trim());
        // Sign through the agent (ssh-keygen -Y sign -f PUBKEY uses the agent's key) and
        // verify the signature.
        std::fs::write(dir.path().join("msg"), b"hello").unwrap();
        let signed = std::process::Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(dir.path().join("id.pub"))
            .arg(dir.path().join("msg"))
            .env("SSH_AUTH_SOCK", agent.socket())
            .output()
            .unwrap();
        assert!(signed.status.success(), "{signed:?}");
        std::fs::write(
            dir.path().join("allowed"),
            format!("kiln@test {}", public.trim()),
        )
        .unwrap();
        let verified = std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "file", "-I", "kiln@test", "-f"])
            .arg(dir.path().join("allowed"))
            .arg("-s")
            .arg(dir.path().join("msg.sig"))
            .stdin(std::fs::File::open(dir.path().join("msg")).unwrap())
            .output()
            .unwrap();
        assert!(verified.status.success(), "{verified:?}");
    }

    /// Keys in PEM (PKCS#1, SEC1) and PKCS#8 form sign what `ssh-keygen -Y verify`
    /// accepts with the key's own public half.
    #[test]
    fn pem_and_pkcs8_keys_sign_verifiably() {
        let have = |p: &str| Path::new(p).exists();
        if !have("/usr/bin/ssh-keygen") {
            println!("skipped: openssh-client missing");
            assert!(
                std::env::var_os("CI").is_none(),
                "openssh-client missing under CI"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("ssh-keygen")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "ssh-keygen {args:?}: {out:?}");
            out
        };
        std::fs::write(dir.path().join("msg"), b"hello").unwrap();
        for (name, t, bits, m) in [
            ("rsa1", "rsa", "2048", "PEM"),
            ("ec256", "ecdsa", "256", "PEM"),
            ("ec384", "ecdsa", "384", "PEM"),
            ("rsa8", "rsa", "2048", "PKCS8"),
            ("ec8", "ecdsa", "256", "PKCS8"),
        ] {
            run(&["-q", "-N", "", "-t", t, "-b", bits, "-m", m, "-f", name]);
            let key = dir.path().join(name);
            let agent = KeyAgent::start(std::slice::from_ref(&key), &dir.path().join("agent"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let pubfile = format!("{name}.pub");
            let signed = std::process::Command::new("ssh-keygen")
                .args(["-Y", "sign", "-n", "file", "-f", &pubfile, "msg"])
                .current_dir(dir.path())
                .env("SSH_AUTH_SOCK", agent.socket())
                .output()
                .unwrap();
            assert!(signed.status.success(), "{name}: {signed:?}");
            let public = std::fs::read_to_string(dir.path().join(&pubfile)).unwrap();
            std::fs::write(dir.path().join("allowed"), format!("k {}", public.trim())).unwrap();
            let verified = std::process::Command::new("ssh-keygen")
                .args([
                    "-Y", "verify", "-n", "file", "-I", "k", "-f", "allowed", "-s", "msg.sig",
                ])
                .current_dir(dir.path())
                .stdin(std::fs::File::open(dir.path().join("msg")).unwrap())
                .output()
                .unwrap();
            assert!(verified.status.success(), "{name}: {verified:?}");
            std::fs::remove_file(dir.path().join("msg.sig")).unwrap();
        }
    }

    /// An Ed25519 key in PKCS#8 (as openssl writes it) is read.
    #[test]
    fn ed25519_pkcs8_is_read() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let key = super::super::key_file::parse(pem.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), ssh_key::Algorithm::Ed25519);
    }
}
