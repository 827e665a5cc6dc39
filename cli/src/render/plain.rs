//! `--progress=plain`: one line per event, as BuildKit's plain output: `#N [stage k/n]
//! TEXT`, the step's output prefixed `#N `, then `#N DONE 0.4s`, `#N CACHED` or
//! `#N ERROR: …`.

use std::collections::BTreeMap;
use std::io::Write;

use indicatif::HumanBytes;
use kiln_executor::Event;

use super::{first_line, from_name, short_digest, step_name, Outcome, Progress, Tally};

/// The plain view, writing to `out`.
pub struct Plain<W: Write> {
    out: W,
    tally: Tally,
    /// Steps whose output ended mid-line (the next line needs a newline first).
    mid_line: BTreeMap<usize, bool>,
}

impl<W: Write> Plain<W> {
    pub fn new(out: W) -> Plain<W> {
        Plain {
            out,
            tally: Tally::default(),
            mid_line: BTreeMap::new(),
        }
    }

    /// Ends step `id`'s unfinished output line, if any.
    fn end_line(&mut self, id: usize) {
        if self.mid_line.remove(&id).unwrap_or(false) {
            let _ = writeln!(self.out);
        }
    }

    fn write_event(&mut self, event: Event) -> std::io::Result<()> {
        match event {
            Event::Warning(w) => writeln!(self.out, "WARN: {w}"),
            Event::Snapshotter { kind, reason } => {
                writeln!(self.out, "snapshotter: {kind} ({reason})")
            }
            Event::StageStarted {
                id,
                stage,
                base,
                total,
            } => writeln!(self.out, "#{id} {}", from_name(&stage, &base, total)),
            Event::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => writeln!(self.out, "#{id} {}", step_name(&stage, index, total, &text)),
            Event::Output { id, bytes } => {
                let mut text = String::new();
                let mut mid = self.mid_line.get(&id).copied().unwrap_or(false);
                for ch in String::from_utf8_lossy(&bytes).chars() {
                    if !mid {
                        text.push_str(&format!("#{id} "));
                        mid = true;
                    }
                    text.push(ch);
                    if ch == '\n' {
                        mid = false;
                    }
                }
                self.mid_line.insert(id, mid);
                write!(self.out, "{text}")
            }
            Event::StepDone {
                id,
                layer,
                layer_size,
                seconds,
                cached,
            } => {
                self.end_line(id);
                match (layer, layer_size) {
                    _ if cached => writeln!(self.out, "#{id} CACHED"),
                    (Some(l), size) => writeln!(
                        self.out,
                        "#{id} DONE {seconds:.1}s (layer {}, {})",
                        short_digest(&l),
                        HumanBytes(size.unwrap_or(0))
                    ),
                    (None, _) => writeln!(self.out, "#{id} DONE {seconds:.1}s"),
                }
            }
            Event::ImageWritten {
                manifest,
                config,
                tags,
            } => {
                writeln!(self.out, "writing image {config} (manifest {manifest})")?;
                if tags.is_empty() {
                    Ok(())
                } else {
                    writeln!(self.out, "naming to {}", tags.join(", "))
                }
            }
            Event::Exported(what) => writeln!(self.out, "exported {what}"),
            e @ (Event::Transfer(_) | Event::Pulled { .. } | Event::Pushed { .. }) => {
                match super::registry_line(&e, true) {
                    Some(line) => writeln!(self.out, "{line}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl<W: Write> Progress for Plain<W> {
    fn event(&mut self, event: Event) {
        self.tally.record(&event);
        let _ = self.write_event(event);
    }

    fn finish(&mut self, outcome: Outcome<'_>) {
        match outcome {
            Outcome::Built => {
                let _ = writeln!(self.out, "{}", self.tally.summary());
            }
            Outcome::Failed(error) => {
                let failed: Vec<usize> = self.tally.running().map(|(id, _)| id).collect();
                for id in failed {
                    self.end_line(id);
                    let _ = writeln!(self.out, "#{id} ERROR: {}", first_line(error));
                }
                let _ = writeln!(self.out, "error: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(events: Vec<Event>, outcome: Outcome<'_>) -> String {
        let mut p = Plain::new(Vec::new());
        for e in events {
            p.event(e);
        }
        p.finish(outcome);
        String::from_utf8_lossy(&p.out).into_owned()
    }

    fn step(id: usize, index: usize, text: &str) -> Event {
        Event::StepStarted {
            id,
            stage: "build".into(),
            index,
            total: 2,
            text: text.into(),
        }
    }

    #[test]
    fn steps_output_and_results_one_line_each() {
        let out = render(
            vec![
                Event::Warning("mind this".into()),
                Event::StageStarted {
                    id: 1,
                    stage: "build".into(),
                    base: "scratch".into(),
                    total: 2,
                },
                step(2, 1, "COPY a /"),
                Event::StepDone {
                    id: 2,
                    layer: Some(format!("sha256:{}", "c".repeat(64))),
                    layer_size: Some(3 * 1024 * 1024),
                    seconds: 0.25,
                    cached: false,
                },
                step(3, 2, "RUN echo hi"),
                Event::Output {
                    id: 3,
                    bytes: b"hi\npart".to_vec(),
                },
                Event::Output {
                    id: 3,
                    bytes: b"ial\nno newline".to_vec(),
                },
                Event::StepDone {
                    id: 3,
                    layer: None,
                    layer_size: None,
                    seconds: 1.0,
                    cached: true,
                },
            ],
            Outcome::Built,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..8],
            [
                "WARN: mind this",
                "#1 [build 1/3] FROM scratch",
                "#2 [build 2/3] COPY a /",
                "#2 DONE 0.2s (layer cccccccccccc, 3.00 MiB)",
                "#3 [build 3/3] RUN echo hi",
                "#3 hi",
                "#3 partial",
                "#3 no newline",
            ]
        );
        assert_eq!(lines[8], "#3 CACHED");
        assert!(
            lines[9].ends_with("2 steps (1 run, 1 cached), 1 layer written (3.00 MiB)"),
            "{out}"
        );
    }

    #[test]
    fn a_failed_build_marks_its_running_step_and_prints_the_error() {
        let out = render(
            vec![
                step(1, 1, "RUN exit 3"),
                Event::Output {
                    id: 1,
                    bytes: b"last words".to_vec(),
                },
            ],
            Outcome::Failed("Dockerfile:2:1: exit code: 3\n   2 | RUN exit 3"),
        );
        assert_eq!(
            out,
            "#1 [build 2/3] RUN exit 3\n#1 last words\n#1 ERROR: Dockerfile:2:1: exit code: 3\n\
             error: Dockerfile:2:1: exit code: 3\n   2 | RUN exit 3\n"
        );
    }
}
