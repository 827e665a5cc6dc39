//! Keeping secret values out of what a build prints: every step name, warning, line of
//! output and error has each secret's value replaced by `****` before the caller sees it.
//!
//! A value is matched as given and without its trailing newline (a secret file usually
//! ends with one); each line of a multi-line value (a key file) of at least
//! [`MIN_LINE`] bytes is a value too, since a step may print one line of it. Output
//! arrives in chunks: the end of a chunk that could be the start of a value is held back
//! until the next chunk of the same step, or the step's end, decides.

use std::collections::BTreeMap;

use crate::error::BuildError;
use crate::event::Event;

/// What a secret's value is replaced with.
pub const MASK: &str = "****";

/// The shortest line of a multi-line value that is masked on its own.
pub const MIN_LINE: usize = 4;

/// The secret values to mask, longest first.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor for these secret values.
    pub fn new<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> Redactor {
        let mut all: Vec<Vec<u8>> = Vec::new();
        for v in values {
            let trimmed = trim_newline(v);
            if trimmed.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            all.push(trimmed.to_vec());
            if trimmed.contains(&b'\n') {
                for line in trimmed.split(|&b| b == b'\n') {
                    let line = trim_newline(line);
                    if line.len() >= MIN_LINE && !line.iter().all(u8::is_ascii_whitespace) {
                        all.push(line.to_vec());
                    }
                }
            }
        }
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { values: all }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether `text` holds a value.
    pub fn finds(&self, text: &[u8]) -> bool {
        self.values.iter().any(|v| find(text, v, 0).is_some())
    }

    /// `bytes` with every value masked.
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        self.scan(bytes, false).0
    }

    /// Masks `bytes` from the start; with `hold`, stops where the rest could begin a value
    /// that more bytes would complete. What was shown, and how many bytes it consumed.
    fn scan(&self, bytes: &[u8], hold: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'scan: while i < bytes.len() {
            let rest = &bytes[i..];
            for v in &self.values {
                if rest.starts_with(v) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += v.len();
                    continue 'scan;
                }
            }
            if hold && self.values.iter().any(|v| v.starts_with(rest)) {
                break;
            }
            out.push(bytes[i]);
            i += 1;
        }
        (out, i)
    }

    /// `text` with every value masked.
    pub fn text(&self, text: &str) -> String {
        if self.is_empty() || !self.finds(text.as_bytes()) {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// In place, as [`Redactor::text`].
    pub fn text_in(&self, text: &mut String) {
        if self.finds(text.as_bytes()) {
            *text = self.text(text);
        }
    }

    /// The error with every value masked in what it prints (messages, code frames, the
    /// command and the output of a failed RUN).
    pub fn error(&self, mut e: BuildError) -> BuildError {
        if self.is_empty() {
            return e;
        }
        let frame = |d: &mut crate::dockerfile::DockerfileError| {
            self.text_in(&mut d.message);
            d.lines.iter_mut().for_each(|l| self.text_in(l));
            if let Some(h) = d.hint.as_mut() {
                self.text_in(h);
            }
        };
        match &mut e {
            BuildError::Dockerfile(d) => frame(d),
            BuildError::Step(f) => frame(&mut f.at),
            BuildError::RunFailed(r) => {
                frame(&mut r.at);
                self.text_in(&mut r.command);
                self.text_in(&mut r.output_tail);
            }
            BuildError::Setup { context, .. } => self.text_in(context),
            BuildError::Plan(_) | BuildError::Lint(_) | BuildError::Cancelled => {}
        }
        e
    }
}

fn trim_newline(v: &[u8]) -> &[u8] {
    let mut v = v;
    while let Some(rest) = v.strip_suffix(b"\n").or_else(|| v.strip_suffix(b"\r")) {
        v = rest;
    }
    v
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| hay[i..].starts_with(needle))
}

/// Events with secret values masked; output held per step across chunk boundaries.
#[derive(Debug, Default)]
pub struct RedactedEvents {
    redactor: Redactor,
    held: BTreeMap<usize, Vec<u8>>,
}

impl RedactedEvents {
    pub fn new(redactor: Redactor) -> RedactedEvents {
        RedactedEvents {
            redactor,
            held: BTreeMap::new(),
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Masks `event` and hands what may be shown to `out`.
    pub fn forward(&mut self, event: Event, out: &mut dyn FnMut(Event)) {
        let r = &self.redactor;
        if r.is_empty() {
            return out(event);
        }
        match event {
            Event::Warning(w) => out(Event::Warning(r.text(&w))),
            Event::StageStarted {
                id,
                stage,
                base,
                total,
            } => out(Event::StageStarted {
                id,
                stage: r.text(&stage),
                base: r.text(&base),
                total,
            }),
            Event::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => out(Event::StepStarted {
                id,
                stage: r.text(&stage),
                index,
                total,
                text: r.text(&text),
            }),
            Event::Output { id, bytes } => {
                let mut buf = self.held.remove(&id).unwrap_or_default();
                buf.extend_from_slice(&bytes);
                // Mask what is complete; hold back a tail that may begin a value.
                let (shown, used) = r.scan(&buf, true);
                let tail = buf.split_off(used);
                if !tail.is_empty() {
                    self.held.insert(id, tail);
                }
                if !shown.is_empty() {
                    out(Event::Output { id, bytes: shown });
                }
            }
            done @ Event::StepDone { id, .. } => {
                if let Some(rest) = self.held.remove(&id) {
                    out(Event::Output {
                        id,
                        bytes: r.bytes(&rest),
                    });
                }
                out(done)
            }
            Event::ImageWritten {
                manifest,
                config,
                tags,
            } => out(Event::ImageWritten {
                manifest,
                config,
                tags: tags.iter().map(|t| r.text(t)).collect(),
            }),
            Event::Exported(x) => out(Event::Exported(r.text(&x))),
            other @ (Event::Snapshotter { .. } | Event::Transfer(_)) => out(other),
            Event::Pulled {
                reference,
                digest,
                fetched,
                bytes,
                seconds,
            } => out(Event::Pulled {
                reference: r.text(&reference),
                digest,
                fetched,
                bytes,
                seconds,
            }),
            Event::Pushed {
                reference,
                digest,
                uploaded,
                skipped,
                seconds,
            } => out(Event::Pushed {
                reference: r.text(&reference),
                digest,
                uploaded,
                skipped,
                seconds,
            }),
        }
    }

    /// Output still held back (a step that never reported its end), masked.
    pub fn flush(&mut self, out: &mut dyn FnMut(Event)) {
        for (id, rest) in std::mem::take(&mut self.held) {
            out(Event::Output {
                id,
                bytes: self.redactor.bytes(&rest),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(events: Vec<Event>, r: Redactor) -> Vec<u8> {
        let mut re = RedactedEvents::new(r);
        let mut out = Vec::new();
        for e in events {
            re.forward(e, &mut |e| {
                if let Event::Output { bytes, .. } = e {
                    out.extend(bytes)
                }
            });
        }
        re.flush(&mut |e| {
            if let Event::Output { bytes, .. } = e {
                out.extend(bytes)
            }
        });
        out
    }

    #[test]
    fn masks_values_split_across_chunks() {
        let r = Redactor::new([b"hunter2\n".as_slice()]);
        let chunks = ["pass: hun", "te", "r2 and hunter", "3 hu"];
        let events = chunks
            .iter()
            .map(|c| Event::Output {
                id: 1,
                bytes: c.as_bytes().to_vec(),
            })
            .collect();
        assert_eq!(
            String::from_utf8(collect(events, r)).unwrap(),
            "pass: **** and hunter3 hu"
        );
    }

    #[test]
    fn masks_lines_of_multi_line_values_and_skips_blank_ones() {
        let r = Redactor::new([b"line-one\nline-two\n".as_slice(), b"\n ".as_slice()]);
        assert_eq!(r.text("x line-two y"), "x **** y");
        assert_eq!(r.text("line-one\nline-two"), "****");
        assert_eq!(r.text("nothing  here"), "nothing  here");
    }

    #[test]
    fn step_end_flushes_what_was_held() {
        let r = Redactor::new([b"abcdef".as_slice()]);
        let mut re = RedactedEvents::new(r);
        let mut seen = Vec::new();
        let mut push = |e: Event| seen.push(e);
        re.forward(
            Event::Output {
                id: 3,
                bytes: b"x abc".to_vec(),
            },
            &mut push,
        );
        re.forward(
            Event::StepDone {
                id: 3,
                layer: None,
                layer_size: None,
                seconds: 0.0,
                cached: false,
            },
            &mut push,
        );
        let out: Vec<u8> = seen
            .iter()
            .filter_map(|e| match e {
                Event::Output { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(out, b"x abc");
        assert!(matches!(seen.last(), Some(Event::StepDone { id: 3, .. })));
    }
}
