//! Stopping a build from outside: a [`CancelToken`] shared by the caller (a Ctrl-C
//! handler, an embedding program) and the build. Once cancelled, no further step starts,
//! running RUN commands are killed, active snapshots are dropped (removed), and the build
//! returns [`crate::BuildError::Cancelled`]. The scheduler cancels it too when a stage
//! fails, so the rest of the build stops at once (fail fast).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag a build checks between steps and while a RUN runs.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the build to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for a signal handler to set (e.g. `signal_hook::flag::register`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}
