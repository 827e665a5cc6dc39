//! How `kiln build` shows a build's progress: the executor's typed [`Event`]s in, one of
//! buildx's `--progress` modes out, on standard error.
//!
//! - [`plain`]: one line per event, BuildKit's `#N` form;
//! - [`rawjson`]: one JSON object per line per event (the schema is in the README);
//! - [`tty`]: a live view of the running steps (indicatif);
//! - quiet: warnings and the error only (the image id goes to standard output).
//!
//! Steps are named as BuildKit names them: the FROM is step 1 of a stage, so the
//! executor's `index/total` (which count the steps after FROM) show as
//! `[stage index+1/total+1]`.

mod plain;
mod rawjson;
mod tally;
mod tty;

use std::io::Write;

use kiln_executor::Event;

pub use tally::Tally;

/// `--progress`: how the build's progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` when standard error is a terminal and `CI` is unset, else `plain`.
    Auto,
    /// A live view of the running steps.
    Tty,
    /// One line per event.
    Plain,
    /// One JSON object per line per event.
    Rawjson,
    /// Warnings and errors only; the image id on standard output.
    Quiet,
}

impl ProgressMode {
    /// The mode `auto` stands for here; other modes are themselves.
    pub fn resolve(self, stderr_is_terminal: bool, ci: bool) -> ProgressMode {
        match self {
            ProgressMode::Auto if stderr_is_terminal && !ci => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

/// How the build ended, for the last lines of the progress.
pub enum Outcome<'a> {
    /// The image was built.
    Built,
    /// The build failed with this error (its full text).
    Failed(&'a str),
}

/// A view of the build's progress.
pub trait Progress {
    /// Shows one event.
    fn event(&mut self, event: Event);
    /// Shows how the build ended: the summary, or the failed steps and the error.
    fn finish(&mut self, outcome: Outcome<'_>);
}

/// The view `mode` (resolved: not `auto`) asks for, on standard error.
pub fn progress(mode: ProgressMode) -> Box<dyn Progress> {
    match mode {
        ProgressMode::Tty => Box::new(tty::Tty::new()),
        ProgressMode::Rawjson => Box::new(rawjson::RawJson::new(std::io::stderr())),
        ProgressMode::Quiet => Box::new(Quiet(std::io::stderr())),
        ProgressMode::Auto | ProgressMode::Plain => Box::new(plain::Plain::new(std::io::stderr())),
    }
}

/// `-q`: warnings and the error only.
struct Quiet<W: Write>(W);

impl<W: Write> Progress for Quiet<W> {
    fn event(&mut self, event: Event) {
        if let Event::Warning(w) = event {
            let _ = writeln!(self.0, "WARN: {w}");
        }
    }

    fn finish(&mut self, outcome: Outcome<'_>) {
        if let Outcome::Failed(e) = outcome {
            let _ = writeln!(self.0, "error: {e}");
        }
    }
}

/// A step's name as BuildKit prints it: `[stage k/n] TEXT`, the FROM counted as step 1.
pub fn step_name(stage: &str, index: usize, total: usize, text: &str) -> String {
    format!("[{stage} {}/{}] {text}", index + 1, total + 1)
}

/// The name of a stage's FROM step: `[stage 1/n] FROM base`.
pub fn from_name(stage: &str, base: &str, total: usize) -> String {
    step_name(stage, 0, total, &format!("FROM {base}"))
}

/// A digest's first 12 hex digits.
/// The line a registry event shows (`None`: nothing to show). Progress lines of blobs in
/// flight only with `in_flight`.
pub fn registry_line(event: &Event, in_flight: bool) -> Option<String> {
    use indicatif::{HumanBytes, HumanDuration};
    use kiln_executor::registry::TransferAction;
    match event {
        Event::Transfer(t) => {
            let verb = match t.action {
                TransferAction::Pull => "pulling",
                TransferAction::Push => "pushing",
            };
            let blob = short_digest(&t.digest);
            let rate = HumanBytes((t.done as f64 / t.seconds.max(0.001)) as u64);
            match (t.finished, t.skipped) {
                (true, true) => Some(format!("{verb} {blob}: already there")),
                (true, false) if t.mounted => Some(format!("{verb} {blob}: mounted from another repository")),
                (true, false) => Some(format!(
                    "{verb} {blob}: {} in {:.1}s ({rate}/s)",
                    HumanBytes(t.total),
                    t.seconds
                )),
                (false, _) if in_flight && t.done < t.total => Some(format!(
                    "{verb} {blob}: {} / {} ({rate}/s)",
                    HumanBytes(t.done),
                    HumanBytes(t.total)
                )),
                (false, _) => None,
            }
        }
        Event::Pulled {
            reference,
            digest,
            fetched,
            bytes,
            seconds,
        } => Some(format!(
            "pulled {reference} ({}): {fetched} blobs, {} in {}",
            short_digest(digest),
            HumanBytes(*bytes),
            HumanDuration(std::time::Duration::from_secs_f64(*seconds))
        )),
        Event::Pushed {
            reference,
            digest,
            uploaded,
            skipped,
            seconds,
        } => Some(format!(
            "pushed {reference}@{digest}: {uploaded} blobs uploaded, {skipped} already there, in {:.1}s",
            seconds
        )),
        _ => None,
    }
}

pub fn short_digest(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex)
}

/// The first line of an error's text (its code frame follows on later lines).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_tty_only_on_a_terminal_outside_ci() {
        assert_eq!(ProgressMode::Auto.resolve(true, false), ProgressMode::Tty);
        assert_eq!(ProgressMode::Auto.resolve(true, true), ProgressMode::Plain);
        assert_eq!(
            ProgressMode::Auto.resolve(false, false),
            ProgressMode::Plain
        );
        assert_eq!(
            ProgressMode::Rawjson.resolve(true, false),
            ProgressMode::Rawjson
        );
    }

    #[test]
    fn steps_are_numbered_with_the_from_as_step_one() {
        assert_eq!(from_name("build", "alpine", 2), "[build 1/3] FROM alpine");
        assert_eq!(step_name("build", 2, 2, "RUN make"), "[build 3/3] RUN make");
    }

    #[test]
    fn quiet_shows_warnings_and_the_error_only() {
        let mut q = Quiet(Vec::new());
        q.event(Event::Warning("careful".into()));
        q.event(Event::Exported("somewhere".into()));
        q.finish(Outcome::Failed("it broke"));
        assert_eq!(
            String::from_utf8_lossy(&q.0),
            "WARN: careful\nerror: it broke\n"
        );
    }
}
