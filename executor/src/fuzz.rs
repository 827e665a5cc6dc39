//! What the property-based harnesses (`proptest`, in the `#[cfg(test)]` modules next to
//! the code they drive) share: every case must end within [`CASE_LIMIT`], so a hang or a
//! blow-up on some input fails like a panic does. `scripts/fuzz.sh` runs them with many
//! more cases (`PROPTEST_CASES`).

use std::time::{Duration, Instant};

/// The longest one case may take (inputs are small; a debug build on a busy machine
/// still finishes each in milliseconds).
pub(crate) const CASE_LIMIT: Duration = Duration::from_secs(3);

/// Runs `f`, failing when it takes longer than [`CASE_LIMIT`].
pub(crate) fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(
        took < CASE_LIMIT,
        "{what} took {took:?}, more than {CASE_LIMIT:?}"
    );
    out
}

/// A proptest configuration of `cases` cases (each harness picks what keeps the whole
/// suite within about a minute), unless `PROPTEST_CASES` says otherwise.
pub(crate) fn config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        // A failing case is printed, never written into the source tree.
        failure_persistence: None,
        ..Default::default()
    }
}
