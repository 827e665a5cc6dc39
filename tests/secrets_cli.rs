//! Secrets never reach any byte kiln writes: one build uses a file secret, an env secret,
//! a secret with uid/gid/mode options and an ssh key file, prints them (masked), and
//! writes every output kiln has (the store, `type=oci` as a directory and a tar, `docker`,
//! `local`, `tar`), a rawjson log, `--metadata-file`, `--iidfile` and a `--cache-to`
//! layout; a failing RUN that prints a secret adds an error message. Then every file of
//! the root, the outputs and the logs is read — compressed blobs decompressed, tars
//! opened, recursively — and none may hold a secret's value, nor the ssh key's private
//! seed (raw, hex or base64). Runs as root and (scripts/test.sh) as `kiln-ci` and
//! `kiln-ci-single`.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use kiln_tests::{busybox_context, combined, full_ids, have, kiln_bin, BUSYBOX_BASE};

fn marker() -> String {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    format!(
        "kilnsecret{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// The 32-byte private seed of an unencrypted OpenSSH ed25519 key file.
fn ed25519_seed(key_file: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(key_file).expect("key");
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let raw = base64_decode(&body);
    let mut at = b"openssh-key-v1\0".len();
    let _cipher = field(&raw, &mut at);
    let _kdf = field(&raw, &mut at);
    let _kdf_options = field(&raw, &mut at);
    at += 4; // the number of keys
    let _public = field(&raw, &mut at);
    let private = field(&raw, &mut at);
    // checkint ×2, key type, public key, then the 64-byte private part: seed || public.
    let mut p = 8;
    assert_eq!(field(&private, &mut p), b"ssh-ed25519");
    let _pub = field(&private, &mut p);
    field(&private, &mut p)[..32].to_vec()
}

/// A length-prefixed string of the OpenSSH key format at `*at`.
fn field(b: &[u8], at: &mut usize) -> Vec<u8> {
    let n = u32::from_be_bytes(b[*at..*at + 4].try_into().unwrap()) as usize;
    let s = b[*at + 4..*at + 4 + n].to_vec();
    *at += 4 + n;
    s
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = A.iter().position(|a| *a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn base64_encode(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, x| (a << 8) | *x as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What must never be found, by name.
struct Needles(Vec<(String, Vec<u8>)>);

impl Needles {
    fn find_in(&self, bytes: &[u8], place: &str, found: &mut Vec<String>) {
        for (name, n) in &self.0 {
            if bytes.windows(n.len()).any(|w| w == &n[..]) {
                found.push(format!("{name} in {place}"));
            }
        }
        // Compressed data and tars are opened, recursively.
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut d = Vec::new();
            if flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut d)
                .is_ok()
            {
                self.find_in(&d, &format!("{place} (gunzipped)"), found);
            }
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            if let Ok(d) = zstd::decode_all(bytes) {
                self.find_in(&d, &format!("{place} (unzstd)"), found);
            }
        } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
            let mut a = tar::Archive::new(bytes);
            if let Ok(entries) = a.entries() {
                for mut e in entries.flatten() {
                    let name = e
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    let mut d = Vec::new();
                    if e.read_to_end(&mut d).is_ok() && !d.is_empty() {
                        self.find_in(&d, &format!("{place}:{name}"), found);
                    }
                }
            }
        }
    }

    fn scan_tree(&self, dir: &Path, found: &mut Vec<String>) -> usize {
        let mut files = 0;
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                files += self.scan_tree(&p, found);
            } else if t.is_file() {
                // Files kiln made readable only inside its namespace are read with their
                // owner's rights where possible; unreadable ones are counted as failures.
                match std::fs::read(&p) {
                    Ok(b) => {
                        files += 1;
                        self.find_in(&b, &p.display().to_string(), found);
                    }
                    Err(e) => found.push(format!("unreadable {}: {e}", p.display())),
                }
            }
        }
        files
    }
}

#[test]
fn no_secret_in_any_byte_kiln_writes() {
    let Some(ctx) = busybox_context() else { return };
    if !have("ssh-keygen") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = |n: &str| work.path().join(n);
    let file_secret = marker();
    let env_secret = marker();
    let opts_secret = marker();
    // Secret sources live outside every scanned place.
    let sources = tempfile::tempdir().expect("tempdir");
    std::fs::write(sources.path().join("tok"), &file_secret).unwrap();
    std::fs::write(sources.path().join("opts"), &opts_secret).unwrap();
    let key = sources.path().join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kiln-secret-test",
            "-f",
        ])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let seed = ed25519_seed(&key);
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let needles = Needles(vec![
        ("file secret".into(), file_secret.clone().into_bytes()),
        ("env secret".into(), env_secret.clone().into_bytes()),
        (
            "secret with options".into(),
            opts_secret.clone().into_bytes(),
        ),
        ("ssh seed".into(), seed.clone()),
        ("ssh seed (hex)".into(), hex.into_bytes()),
        (
            "ssh seed (base64)".into(),
            base64_encode(&seed[..30]).into_bytes(),
        ),
    ]);
    let (owner, mode_check) = if full_ids() {
        ("uid=1000,gid=2000,mode=0400", "1000 2000 400")
    } else {
        ("uid=0,gid=0,mode=0400", "0 0 400")
    };
    let df = format!(
        "{BUSYBOX_BASE}RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo
RUN --mount=type=secret,id=envtok,env=MY_SECRET echo \"env=$MY_SECRET\"
RUN --mount=type=secret,id=opts,{owner} stat -c '%u %g %a' /run/secrets/opts && cat /run/secrets/opts > /dev/null
RUN --mount=type=ssh,id=key test -S $SSH_AUTH_SOCK && echo agent-ok
RUN echo image-file > /kept
"
    );
    std::fs::write(ctx.path().join("Dockerfile"), &df).unwrap();
    let root = w("root");
    let args: Vec<String> = vec![
        "build".into(),
        "--progress".into(),
        "rawjson".into(),
        "-t".into(),
        "secrets:1".into(),
        "--secret".into(),
        format!("id=tok,src={}", sources.path().join("tok").display()),
        "--secret".into(),
        "id=envtok,env=KILN_TEST_SECRET_ENV".into(),
        "--secret".into(),
        format!("id=opts,src={}", sources.path().join("opts").display()),
        "--ssh".into(),
        format!("key={}", key.display()),
        "-o".into(),
        format!("type=oci,dest={}", w("oci-dir").display()),
        "-o".into(),
        format!("type=oci,dest={}", w("oci.tar").display()),
        "-o".into(),
        format!("type=docker,dest={}", w("docker.tar").display()),
        "-o".into(),
        format!("type=local,dest={}", w("local").display()),
        "-o".into(),
        format!("type=tar,dest={}", w("fs.tar").display()),
        "--cache-to".into(),
        format!("type=local,dest={},mode=max", w("cache").display()),
        "--metadata-file".into(),
        w("metadata.json").display().to_string(),
        "--iidfile".into(),
        w("iid").display().to_string(),
        ctx.path().display().to_string(),
    ];
    let out = Command::new(kiln_bin())
        .args(&args)
        .env("KILN_ROOT", &root)
        .env("KILN_TEST_SECRET_ENV", &env_secret)
        .output()
        .expect("kiln");
    let log = combined(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(mode_check), "{log}");
    assert!(log.contains("agent-ok"), "{log}");
    assert!(
        log.contains("****"),
        "the printed secrets are masked: {log}"
    );
    std::fs::write(w("build.log"), &log).unwrap();

    // A failing RUN that prints the secret: its error message and output tail.
    std::fs::write(
        ctx.path().join("Dockerfile.fail"),
        format!("{BUSYBOX_BASE}RUN --mount=type=secret,id=tok cat /run/secrets/tok; echo; echo {}; exit 7\n", "tail"),
    )
    .unwrap();
    let failed = Command::new(kiln_bin())
        .args(["build", "--progress", "plain", "-f"])
        .arg(ctx.path().join("Dockerfile.fail"))
        .args([
            "--secret",
            &format!("id=tok,src={}", sources.path().join("tok").display()),
        ])
        .arg(ctx.path())
        .env("KILN_ROOT", &root)
        .output()
        .expect("kiln");
    let failed_log = combined(&failed);
    assert!(!failed.status.success());
    assert!(failed_log.contains("exit code: 7"), "{failed_log}");
    // The tail under its heading: the secret masked, then what the step printed after it.
    let (_, tail) = failed_log
        .split_once("\nlast output:\n")
        .unwrap_or_else(|| panic!("no last output: {failed_log}"));
    let tail: Vec<&str> = tail.lines().collect();
    let at = tail.iter().position(|l| l.contains("****"));
    assert!(
        at.is_some_and(|i| tail[i + 1..].iter().take(2).any(|l| *l == "tail")),
        "{failed_log}"
    );
    std::fs::write(w("failed.log"), &failed_log).unwrap();

    // The image works and has what the build wrote (the scan reads real content).
    assert!(std::fs::read_to_string(w("local/kept"))
        .unwrap()
        .contains("image-file"));
    let mut found = Vec::new();
    let files = needles.scan_tree(work.path(), &mut found);
    assert!(files > 20, "only {files} files scanned");
    assert!(found.is_empty(), "secrets found: {found:#?}");
    // The scan can fail: the same needles are found where they are.
    let mut control = Vec::new();
    needles.find_in(
        &zstd::encode_all(file_secret.as_bytes(), 3).unwrap(),
        "control",
        &mut control,
    );
    needles.find_in(&seed, "control", &mut control);
    for name in ["file secret in control", "ssh seed in control"] {
        assert!(control.iter().any(|c| c.starts_with(name)), "{control:?}");
    }
}
