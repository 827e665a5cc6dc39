//! `RUN --mount=type=ssh`: the step sees a socket of its own (owner and mode as the mount
//! asks, 0600 by default) that forwards every connection to the agent socket given with
//! `--ssh` (`default` is `$SSH_AUTH_SOCK`). The agent's keys never leave the agent: only
//! the agent protocol crosses, so nothing of a key can reach a layer.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{io_err, MountError};

/// Why an `--ssh` value is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SshSpecError {
    #[error("invalid --ssh {0:?}: empty id")]
    EmptyId(String),
    #[error("--ssh {0}: no socket given and SSH_AUTH_SOCK is not set (start an agent, or pass --ssh {0}=SOCKET|KEYFILE)")]
    NoAgent(String),
    /// A socket followed by another path (BuildKit's words).
    #[error("--ssh {0}: only single socket allowed")]
    SeveralSockets(String),
    /// Key files and a socket for one id (BuildKit's words).
    #[error("--ssh {0}: invalid combination of keys and sockets")]
    KeysAndSocket(String),
    #[error("--ssh {id}={path}: {source}")]
    Unreadable {
        id: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What `--ssh ID=…` gives: an agent's socket, or private key files that kiln serves
/// through an agent of its own ([`KeyAgent`](super::key_agent::KeyAgent)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    Socket(PathBuf),
    Keys(Vec<PathBuf>),
}

/// Parses the CLI's `--ssh ID[=SOCKET|KEY[,KEY…]]`; no path means `$SSH_AUTH_SOCK`.
pub fn parse_ssh_spec(spec: &str) -> Result<(String, SshSource), SshSpecError> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), p.to_string()),
        None => (spec.to_string(), String::new()),
    };
    if id.is_empty() {
        return Err(SshSpecError::EmptyId(spec.to_string()));
    }
    let paths: Vec<String> = if paths.is_empty() {
        vec![std::env::var("SSH_AUTH_SOCK").map_err(|_| SshSpecError::NoAgent(id.clone()))?]
    } else {
        paths.split(',').map(str::to_string).collect()
    };
    // As BuildKit's agent provider: one socket, or key files, never both.
    let mut keys = Vec::new();
    let mut socket = None;
    for path in &paths {
        if socket.is_some() {
            return Err(SshSpecError::SeveralSockets(id));
        }
        let p = PathBuf::from(path);
        match std::fs::metadata(&p) {
            Ok(md) if std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) => {
                socket = Some(p)
            }
            Ok(_) => keys.push(p),
            Err(source) => {
                return Err(SshSpecError::Unreadable {
                    id,
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    match socket {
        Some(_) if !keys.is_empty() => Err(SshSpecError::KeysAndSocket(id)),
        Some(s) => Ok((id, SshSource::Socket(s))),
        None => Ok((id, SshSource::Keys(keys))),
    }
}

/// A listening socket that forwards connections to an agent, until dropped.
pub struct AgentProxy {
    server: SocketServer,
}

/// A listening socket whose connections go to `handle` on threads of their own, until
/// dropped (then the socket file is removed).
pub(super) struct SocketServer {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SocketServer {
    pub(super) fn spawn(
        listener: UnixListener,
        socket: &Path,
        handle: impl Fn(UnixStream) + Send + Sync + 'static,
    ) -> SocketServer {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = Arc::new(handle);
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let h = handle.clone();
                    std::thread::spawn(move || h(c));
                }
            }
        });
        SocketServer {
            socket: socket.to_path_buf(),
            stop,
            accept: Some(accept),
        }
    }

    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl AgentProxy {
    /// Listens at `socket` (owner `uid:gid`, `mode`) and forwards to `agent`.
    pub fn start(
        agent: &Path,
        socket: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<AgentProxy, MountError> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(io_err(format!(
            "creating the ssh socket {}",
            socket.display()
        )))?;
        rustix::fs::chown(
            socket,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|e| io_err(format!("giving the ssh socket to {uid}:{gid}"))(e.into()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))
                .map_err(io_err("setting the ssh socket's mode"))?;
        }
        let agent = agent.to_path_buf();
        let server =
            SocketServer::spawn(listener, socket, move |client| {
                match UnixStream::connect(&agent) {
                    Ok(upstream) => forward(client, upstream),
                    Err(e) => tracing::warn!("ssh agent {}: {e}", agent.display()),
                }
            });
        Ok(AgentProxy { server })
    }

    pub fn socket(&self) -> &Path {
        self.server.socket()
    }
}

fn forward(client: UnixStream, upstream: UnixStream) {
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (mut c, mut u) = (client, upstream);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut u, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn forwards_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = agent.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.map(|b| b + 1)).unwrap();
        });
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let proxy = AgentProxy::start(&agent_path, &dir.path().join("p"), uid, gid, 0o600).unwrap();
        let mut c = UnixStream::connect(proxy.socket()).unwrap();
        c.write_all(b"abcd").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"bcde");
        server.join().unwrap();
        drop(proxy);
        assert!(!dir.path().join("p").exists());
    }

    #[test]
    fn specs_tell_sockets_from_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "x").unwrap();
        assert_eq!(
            parse_ssh_spec(&format!("default={}", key.display())).unwrap(),
            ("default".into(), SshSource::Keys(vec![key.clone()]))
        );
        let sock = dir.path().join("s");
        let _l = UnixListener::bind(&sock).unwrap();
        assert_eq!(
            parse_ssh_spec(&format!("x={}", sock.display())).unwrap(),
            ("x".into(), SshSource::Socket(sock))
        );
        assert!(parse_ssh_spec("y=/nonexistent").is_err());
    }
}
