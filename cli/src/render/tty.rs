//! `--progress=tty`: a live view. Each running step is one line with its elapsed time
//! (steps of parallel stages show at once), the last lines of its output under it; a
//! finished step becomes one line above the live ones — `CACHED`, or `DONE 1.2s` after
//! the size of the layer it wrote, or `ERROR` — and the build ends with a summary line.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use console::style;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use kiln_executor::Event;

use super::{first_line, from_name, step_name, Outcome, Progress, Tally};

/// How many lines of a running step's output show under it.
const TAIL_LINES: usize = 5;

/// The live view, on standard error.
pub struct Tty {
    bars: MultiProgress,
    running: BTreeMap<usize, LiveStep>,
    tally: Tally,
    step_style: ProgressStyle,
    tail_style: ProgressStyle,
}

/// A running step: its line, and the last lines of its output under it.
struct LiveStep {
    name: String,
    line: ProgressBar,
    tail: OutputTail,
    tail_lines: Vec<ProgressBar>,
}

impl Tty {
    pub fn new() -> Tty {
        let step_style = ProgressStyle::with_template(" {spinner:.cyan} {wide_msg} {secs:>7}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("secs", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", s.elapsed().as_secs_f64());
            });
        let tail_style = ProgressStyle::with_template("     {wide_msg:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        Tty {
            bars: MultiProgress::new(),
            running: BTreeMap::new(),
            tally: Tally::default(),
            step_style,
            tail_style,
        }
    }

    /// A line above the live ones.
    fn println(&self, line: impl AsRef<str>) {
        let _ = self.bars.println(line);
    }

    /// A finished step's line: `mark name … status`, fitted to the terminal's width.
    fn finished(&self, mark: String, name: &str, status: String) {
        // The last column stays empty: a line that fills it wraps on some terminals.
        let width = usize::from(console::Term::stderr().size().1).saturating_sub(1);
        self.println(finished_line(&mark, name, &status, width));
    }

    /// Takes step `id` off the live view.
    fn close(&mut self, id: usize) -> Option<LiveStep> {
        let step = self.running.remove(&id)?;
        for t in &step.tail_lines {
            t.finish_and_clear();
            self.bars.remove(t);
        }
        step.line.finish_and_clear();
        self.bars.remove(&step.line);
        Some(step)
    }

    fn show(&mut self, event: &Event) {
        match event {
            Event::Warning(w) => self.println(format!("{} {w}", style("WARN:").yellow().bold())),
            Event::Snapshotter { kind, reason } => self.println(
                style(format!("snapshotter: {kind} ({reason})"))
                    .dim()
                    .to_string(),
            ),
            Event::StageStarted {
                stage, base, total, ..
            } => self.finished(
                style("✔").green().to_string(),
                &from_name(stage, base, *total),
                String::new(),
            ),
            Event::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let name = step_name(stage, *index, *total, text);
                let line = self
                    .bars
                    .add(ProgressBar::new_spinner().with_style(self.step_style.clone()));
                line.set_message(name.clone());
                line.enable_steady_tick(Duration::from_millis(100));
                self.running.insert(
                    *id,
                    LiveStep {
                        name,
                        line,
                        tail: OutputTail::default(),
                        tail_lines: Vec::new(),
                    },
                );
            }
            Event::Output { id, bytes } => {
                let Some(step) = self.running.get_mut(id) else {
                    return;
                };
                step.tail.push(bytes);
                let shown = step.tail.shown();
                while step.tail_lines.len() < shown.len() {
                    let after = step.tail_lines.last().unwrap_or(&step.line);
                    let t = self.bars.insert_after(
                        after,
                        ProgressBar::new_spinner().with_style(self.tail_style.clone()),
                    );
                    step.tail_lines.push(t);
                }
                for (bar, text) in step.tail_lines.iter().zip(shown) {
                    bar.set_message(text.to_string());
                }
            }
            Event::StepDone {
                id,
                layer,
                layer_size,
                seconds,
                cached,
            } => {
                let Some(step) = self.close(*id) else {
                    return;
                };
                let size = match layer {
                    Some(_) if !*cached => HumanBytes(layer_size.unwrap_or(0)).to_string(),
                    _ => String::new(),
                };
                let state = if *cached {
                    style(format!("{:>10}", "CACHED")).blue().to_string()
                } else {
                    format!("{:>10}", format!("DONE {seconds:.1}s"))
                };
                self.finished(
                    style("✔").green().to_string(),
                    &step.name,
                    format!("{size:>10} {state}"),
                );
            }
            Event::ImageWritten { config, tags, .. } => {
                self.println(format!("writing image {config}"));
                if !tags.is_empty() {
                    self.println(format!("naming to {}", tags.join(", ")));
                }
            }
            Event::Exported(what) => self.println(format!("exported {what}")),
            e @ (Event::Transfer(_) | Event::Pulled { .. } | Event::Pushed { .. }) => {
                if let Some(line) = super::registry_line(e, false) {
                    self.println(line);
                }
            }
        }
    }
}

impl Progress for Tty {
    fn event(&mut self, event: Event) {
        self.tally.record(&event);
        self.show(&event);
    }

    fn finish(&mut self, outcome: Outcome<'_>) {
        match outcome {
            Outcome::Built => {
                let summary = style(self.tally.summary()).bold().to_string();
                self.println(summary);
            }
            Outcome::Failed(error) => {
                let failed: Vec<usize> = self.tally.running().map(|(id, _)| id).collect();
                for id in failed {
                    let Some(step) = self.close(id) else { continue };
                    let seconds = step.line.elapsed().as_secs_f64();
                    let state = format!("{:>10}", format!("ERROR {seconds:.1}s"));
                    self.finished(
                        style("✘").red().to_string(),
                        &step.name,
                        format!("{:>10} {}", "", style(state).red()),
                    );
                    for l in step.tail.shown() {
                        self.println(style(format!("     {l}")).dim().to_string());
                    }
                    self.println(format!(
                        "     {}",
                        style(format!("ERROR: {}", first_line(error))).red()
                    ));
                }
                let _ = self.bars.clear();
                eprintln!("error: {error}");
            }
        }
        let _ = self.bars.clear();
    }
}

/// ` mark name … status`: the name cut to fit `width` columns, the status at the right.
fn finished_line(mark: &str, name: &str, status: &str, width: usize) -> String {
    let status_width = console::measure_text_width(status);
    // " ✔ " before the name, a space before the status.
    let room = width.saturating_sub(3 + status_width + 1).max(10);
    let name = console::truncate_str(name, room, "…");
    let pad = room.saturating_sub(console::measure_text_width(&name));
    let mut line = format!(" {mark} {name}");
    if !status.is_empty() {
        let _ = write!(line, "{:pad$} {status}", "");
    }
    line
}

/// The last lines of a step's output: complete lines and the one being written.
#[derive(Default)]
struct OutputTail {
    lines: VecDeque<String>,
    partial: String,
}

impl OutputTail {
    fn push(&mut self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
        for ch in console::strip_ansi_codes(&text).chars() {
            match ch {
                '\n' => {
                    self.lines.push_back(std::mem::take(&mut self.partial));
                    if self.lines.len() > TAIL_LINES {
                        self.lines.pop_front();
                    }
                }
                // A carriage return starts the line again (progress meters in output).
                '\r' => self.partial.clear(),
                '\t' => self.partial.push_str("    "),
                c if c.is_control() => {}
                c => self.partial.push(c),
            }
        }
    }

    /// At most [`TAIL_LINES`] lines, the unfinished one last.
    fn shown(&self) -> Vec<&str> {
        let mut shown: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            shown.push(&self.partial);
        }
        let skip = shown.len().saturating_sub(TAIL_LINES);
        shown.split_off(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_and_the_unfinished_one() {
        let mut t = OutputTail::default();
        for i in 1..=7 {
            t.push(format!("line {i}\r\n").as_bytes());
        }
        assert_eq!(
            t.shown(),
            ["line 3", "line 4", "line 5", "line 6", "line 7"]
        );
        t.push(b"10%\r50%\r\x1b[1mhalf\x1b[0m way");
        assert_eq!(
            t.shown(),
            ["line 4", "line 5", "line 6", "line 7", "half way"]
        );
    }

    #[test]
    fn finished_lines_fit_the_width_with_the_status_at_the_right() {
        let l = finished_line("✔", "[b 2/3] RUN make", "DONE 1.0s", 40);
        assert_eq!(l, " ✔ [b 2/3] RUN make            DONE 1.0s");
        assert_eq!(console::measure_text_width(&l), 40);
        let long = finished_line("✔", &"x".repeat(100), "CACHED", 40);
        assert_eq!(console::measure_text_width(&long), 40);
        assert!(long.contains('…') && long.ends_with(" CACHED"), "{long}");
        assert_eq!(
            finished_line("✔", "[b 1/3] FROM a", "", 40),
            " ✔ [b 1/3] FROM a"
        );
    }
}
