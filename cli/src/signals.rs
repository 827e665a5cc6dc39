//! Ctrl-C and SIGTERM during `kiln build`.
//!
//! `kiln build` runs twice: the caller's process starts itself again inside the build's
//! user and mount namespace and waits ([`Forwarder`]); the inner process builds
//! ([`Interrupts`]). A terminal's Ctrl-C reaches both (one process group): the outer one
//! ignores it and keeps waiting; a signal sent to the outer process alone (`kill -TERM`,
//! `kill -INT`) is passed on to the inner one. Inside, the first SIGINT or SIGTERM
//! cancels the build — running RUN commands are killed, active snapshots removed, the
//! store stays consistent — and kiln exits 130 or 143; a second one exits at once.

use std::io;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kiln_executor::CancelToken;
use signal_hook::consts::{SIGINT, SIGTERM};

/// The inner process's handlers.
pub struct Interrupts {
    interrupted: Arc<AtomicBool>,
    terminated: Arc<AtomicBool>,
}

impl Interrupts {
    /// Cancels `token` on the first SIGINT/SIGTERM; exits on the second.
    pub fn install(token: &CancelToken) -> io::Result<Interrupts> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let terminated = Arc::new(AtomicBool::new(false));
        let cancelled = token.flag();
        for (sig, code, flag) in [(SIGINT, 130, &interrupted), (SIGTERM, 143, &terminated)] {
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(sig, code, cancelled.clone())?;
            signal_hook::flag::register(sig, flag.clone())?;
            signal_hook::flag::register(sig, cancelled.clone())?;
        }
        Ok(Interrupts {
            interrupted,
            terminated,
        })
    }

    /// The exit code a received signal asks for: 130 (SIGINT) or 143 (SIGTERM).
    pub fn exit_code(&self) -> Option<i32> {
        if self.terminated.load(Ordering::SeqCst) {
            Some(143)
        } else if self.interrupted.load(Ordering::SeqCst) {
            Some(130)
        } else {
            None
        }
    }
}

/// The outer process's handlers, installed before the inner process is started: a
/// signal that arrives meanwhile is held and passed on once it runs (never the default
/// action, which would end this process and leave the inner one without its caller).
pub struct Forwarder {
    signals: signal_hook::iterator::SignalsInfo<signal_hook::iterator::exfiltrator::WithOrigin>,
}

impl Forwarder {
    /// Installed first thing in `main` when `args` (the process's own) run `kiln build`
    /// outside the build's namespace: a signal that comes while the binary starts and
    /// parses its arguments is held for the inner process too. `None` for any other
    /// command, inside the namespace, or when installing fails (the build then installs
    /// it itself and reports the error).
    pub fn for_build_args(args: &[String]) -> Option<Forwarder> {
        let command = args.iter().skip(1).find(|a| !a.starts_with('-'))?;
        if command != "build" || kiln_executor::sandbox::userns::build_namespace().is_some() {
            return None;
        }
        Forwarder::install().ok()
    }

    pub fn install() -> io::Result<Forwarder> {
        Ok(Forwarder {
            signals: signal_hook::iterator::SignalsInfo::new([SIGINT, SIGTERM])?,
        })
    }

    /// Waits for the inner process, passing on signals sent to this one alone.
    pub fn wait(self, child: Child) -> io::Result<i32> {
        wait_forwarding(self.signals, child)
    }
}

fn wait_forwarding(
    mut signals: signal_hook::iterator::SignalsInfo<signal_hook::iterator::exfiltrator::WithOrigin>,
    mut child: Child,
) -> io::Result<i32> {
    let handle = signals.handle();
    let pid = rustix::process::Pid::from_child(&child);
    let forwarder = std::thread::spawn(move || {
        for info in signals.forever() {
            // A terminal's Ctrl-C comes from the kernel and has reached the inner
            // process already; a signal from a process was sent to us alone.
            let from_process = info.process.is_some();
            let sig = match info.signal {
                SIGTERM => Some(rustix::process::Signal::TERM),
                SIGINT if from_process => Some(rustix::process::Signal::INT),
                _ => None,
            };
            if let Some(sig) = sig {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    });
    let status = child.wait();
    handle.close();
    let _ = forwarder.join();
    use std::os::unix::process::ExitStatusExt;
    let status = status?;
    // Ended by the signal itself: it came before the inner process had its handlers
    // (its first milliseconds), when nothing is written yet.
    if matches!(status.signal(), Some(SIGINT | SIGTERM)) {
        eprintln!("error: the build was interrupted as it started; nothing was tagged");
    }
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}
