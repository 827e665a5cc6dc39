//! Private key files for `--ssh ID=KEYFILE`, in the formats BuildKit reads (Go's
//! `ssh.ParseRawPrivateKey`): OpenSSH (`BEGIN OPENSSH PRIVATE KEY`), PEM RSA PKCS#1
//! (`BEGIN RSA PRIVATE KEY`), PEM EC SEC1 (`BEGIN EC PRIVATE KEY`, P-256 and P-384) and
//! PKCS#8 (`BEGIN PRIVATE KEY`: RSA, P-256, P-384, Ed25519), each turned into an
//! `ssh-key` private key. Encrypted keys (OpenSSH with a passphrase, PEM with
//! `Proc-Type: 4,ENCRYPTED`, `BEGIN ENCRYPTED PRIVATE KEY`) are refused.

use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::DecodePrivateKey as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, RsaKeypair};
use ssh_key::PrivateKey;

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the key is encrypted")]
    Encrypted,
    #[error("no PEM private key block (BEGIN OPENSSH PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)")]
    NotPem,
    #[error("unsupported key type {0:?}")]
    UnsupportedType(String),
    #[error("{0}")]
    OpenSsh(#[from] ssh_key::Error),
    #[error("RSA PKCS#1 key: {0}")]
    Pkcs1(#[from] rsa::pkcs1::Error),
    #[error("EC key: neither a P-256 nor a P-384 key")]
    Sec1,
    #[error("PKCS#8 key: neither an RSA, P-256, P-384 nor Ed25519 key")]
    Pkcs8,
}

/// The private key in `text`.
pub fn parse(text: &[u8]) -> Result<PrivateKey, KeyFileError> {
    let text = std::str::from_utf8(text).map_err(|_| KeyFileError::NotPem)?;
    let label = text
        .lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
        })
        .ok_or(KeyFileError::NotPem)?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(KeyFileError::Encrypted);
    }
    let key = match label {
        "OPENSSH PRIVATE KEY" => {
            let key = PrivateKey::from_openssh(text)?;
            if key.is_encrypted() {
                return Err(KeyFileError::Encrypted);
            }
            key
        }
        "RSA PRIVATE KEY" => rsa_key(rsa::RsaPrivateKey::from_pkcs1_pem(text)?)?,
        "EC PRIVATE KEY" => {
            if let Ok(sk) = p256::SecretKey::from_sec1_pem(text) {
                p256_key(sk)
            } else if let Ok(sk) = p384::SecretKey::from_sec1_pem(text) {
                p384_key(sk)
            } else {
                return Err(KeyFileError::Sec1);
            }
        }
        "PRIVATE KEY" => {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
                rsa_key(k)?
            } else if let Ok(sk) = p256::SecretKey::from_pkcs8_pem(text) {
                p256_key(sk)
            } else if let Ok(sk) = p384::SecretKey::from_pkcs8_pem(text) {
                p384_key(sk)
            } else if let Ok(sk) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
                PrivateKey::from(Ed25519Keypair::from(&sk))
            } else {
                return Err(KeyFileError::Pkcs8);
            }
        }
        "ENCRYPTED PRIVATE KEY" => return Err(KeyFileError::Encrypted),
        other => return Err(KeyFileError::UnsupportedType(other.to_string())),
    };
    Ok(key)
}

fn rsa_key(k: rsa::RsaPrivateKey) -> Result<PrivateKey, KeyFileError> {
    Ok(PrivateKey::from(RsaKeypair::try_from(k)?))
}

fn p256_key(sk: p256::SecretKey) -> PrivateKey {
    PrivateKey::from(EcdsaKeypair::NistP256 {
        public: sk.public_key().to_encoded_point(false),
        private: sk.into(),
    })
}

fn p384_key(sk: p384::SecretKey) -> PrivateKey {
    PrivateKey::from(EcdsaKeypair::NistP384 {
        public: sk.public_key().to_encoded_point(false),
        private: sk.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_no_private_key() {
        assert!(matches!(parse(b"hello"), Err(KeyFileError::NotPem)));
        assert!(matches!(
            parse(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            Err(KeyFileError::Encrypted)
        ));
        assert!(matches!(
            parse(b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
            Err(KeyFileError::Encrypted)
        ));
        assert!(matches!(
            parse(b"-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n"),
            Err(KeyFileError::UnsupportedType(t)) if t == "DSA PRIVATE KEY"
        ));
    }
}
