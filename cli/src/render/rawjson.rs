//! `--progress=rawjson`: one JSON object per line per event, `type` first; the schema is
//! documented in the README ("Progress"). A step's output is `text` (UTF-8, invalid
//! sequences replaced) plus `base64` of the exact bytes when they are not valid UTF-8.

use std::io::Write;

use base64::Engine;
use kiln_executor::Event;
use serde::Serialize;

use super::{first_line, Outcome, Progress, Tally};

/// One line of the rawjson stream.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record<'a> {
    Warning {
        message: &'a str,
    },
    Snapshotter {
        kind: &'a str,
        reason: &'a str,
    },
    StageStarted {
        id: usize,
        stage: &'a str,
        base: &'a str,
        total: usize,
    },
    StepStarted {
        id: usize,
        stage: &'a str,
        index: usize,
        total: usize,
        text: &'a str,
    },
    Output {
        id: usize,
        text: std::borrow::Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    StepDone {
        id: usize,
        seconds: f64,
        cached: bool,
        layer: Option<&'a str>,
        layer_size: Option<u64>,
    },
    ImageWritten {
        manifest: &'a str,
        config: &'a str,
        tags: &'a [String],
    },
    Exported {
        output: &'a str,
    },
    Transfer {
        action: &'a str,
        digest: &'a str,
        done: u64,
        total: u64,
        finished: bool,
        skipped: bool,
        mounted: bool,
        seconds: f64,
    },
    Pulled {
        reference: &'a str,
        digest: &'a str,
        fetched: usize,
        bytes: u64,
        seconds: f64,
    },
    Pushed {
        reference: &'a str,
        digest: &'a str,
        uploaded: usize,
        skipped: usize,
        seconds: f64,
    },
    StepFailed {
        id: usize,
        message: &'a str,
    },
    BuildFailed {
        message: &'a str,
    },
    Summary {
        seconds: f64,
        steps_run: usize,
        steps_cached: usize,
        layers: usize,
        layer_bytes: u64,
        image: Option<&'a str>,
    },
}

impl<'a> Record<'a> {
    fn of(event: &'a Event) -> Record<'a> {
        match event {
            Event::Warning(message) => Record::Warning { message },
            Event::Snapshotter { kind, reason } => Record::Snapshotter { kind, reason },
            Event::StageStarted {
                id,
                stage,
                base,
                total,
            } => Record::StageStarted {
                id: *id,
                stage,
                base,
                total: *total,
            },
            Event::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => Record::StepStarted {
                id: *id,
                stage,
                index: *index,
                total: *total,
                text,
            },
            Event::Output { id, bytes } => Record::Output {
                id: *id,
                text: String::from_utf8_lossy(bytes),
                base64: std::str::from_utf8(bytes)
                    .is_err()
                    .then(|| base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
            Event::StepDone {
                id,
                layer,
                layer_size,
                seconds,
                cached,
            } => Record::StepDone {
                id: *id,
                seconds: *seconds,
                cached: *cached,
                layer: layer.as_deref(),
                layer_size: *layer_size,
            },
            Event::ImageWritten {
                manifest,
                config,
                tags,
            } => Record::ImageWritten {
                manifest,
                config,
                tags,
            },
            Event::Exported(output) => Record::Exported { output },
            Event::Transfer(t) => Record::Transfer {
                action: match t.action {
                    kiln_executor::registry::TransferAction::Pull => "pull",
                    kiln_executor::registry::TransferAction::Push => "push",
                },
                digest: &t.digest,
                done: t.done,
                total: t.total,
                finished: t.finished,
                skipped: t.skipped,
                mounted: t.mounted,
                seconds: t.seconds,
            },
            Event::Pulled {
                reference,
                digest,
                fetched,
                bytes,
                seconds,
            } => Record::Pulled {
                reference,
                digest,
                fetched: *fetched,
                bytes: *bytes,
                seconds: *seconds,
            },
            Event::Pushed {
                reference,
                digest,
                uploaded,
                skipped,
                seconds,
            } => Record::Pushed {
                reference,
                digest,
                uploaded: *uploaded,
                skipped: *skipped,
                seconds: *seconds,
            },
        }
    }
}

/// The rawjson view, writing to `out`.
pub struct RawJson<W: Write> {
    out: W,
    tally: Tally,
}

impl<W: Write> RawJson<W> {
    pub fn new(out: W) -> RawJson<W> {
        RawJson {
            out,
            tally: Tally::default(),
        }
    }

    fn write(&mut self, record: &Record<'_>) {
        // Serializing these records cannot fail (string keys, finite or null numbers).
        if let Ok(line) = serde_json::to_string(record) {
            let _ = writeln!(self.out, "{line}");
        }
    }
}

impl<W: Write> Progress for RawJson<W> {
    fn event(&mut self, event: Event) {
        self.tally.record(&event);
        self.write(&Record::of(&event));
    }

    fn finish(&mut self, outcome: Outcome<'_>) {
        match outcome {
            Outcome::Built => {
                let image = self.tally.image.clone();
                let record = Record::Summary {
                    seconds: self.tally.seconds(),
                    steps_run: self.tally.steps_run,
                    steps_cached: self.tally.steps_cached,
                    layers: self.tally.layers,
                    layer_bytes: self.tally.layer_bytes,
                    image: image.as_deref(),
                };
                self.write(&record);
            }
            Outcome::Failed(message) => {
                let failed: Vec<usize> = self.tally.running().map(|(id, _)| id).collect();
                for id in failed {
                    self.write(&Record::StepFailed {
                        id,
                        message: first_line(message),
                    });
                }
                self.write(&Record::BuildFailed { message });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn lines(events: Vec<Event>, outcome: Outcome<'_>) -> Vec<Value> {
        let mut r = RawJson::new(Vec::new());
        for e in events {
            r.event(e);
        }
        r.finish(outcome);
        String::from_utf8_lossy(&r.out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    #[test]
    fn every_event_is_one_object_with_its_type() {
        let v = lines(
            vec![
                Event::Snapshotter {
                    kind: "overlay".into(),
                    reason: "kernel overlayfs".into(),
                },
                Event::StepStarted {
                    id: 3,
                    stage: "build".into(),
                    index: 2,
                    total: 5,
                    text: "RUN make".into(),
                },
                Event::Output {
                    id: 3,
                    bytes: b"ok\n".to_vec(),
                },
                Event::Output {
                    id: 3,
                    bytes: vec![0xff, b'a'],
                },
                Event::StepDone {
                    id: 3,
                    layer: Some("sha256:l".into()),
                    layer_size: Some(42),
                    seconds: 1.5,
                    cached: false,
                },
            ],
            Outcome::Built,
        );
        assert_eq!(
            v[0],
            json!({"type":"snapshotter","kind":"overlay","reason":"kernel overlayfs"})
        );
        assert_eq!(
            v[1],
            json!({"type":"step_started","id":3,"stage":"build","index":2,"total":5,"text":"RUN make"})
        );
        assert_eq!(v[2], json!({"type":"output","id":3,"text":"ok\n"}));
        assert_eq!(
            v[3],
            json!({"type":"output","id":3,"text":"\u{fffd}a","base64":"/2E="})
        );
        assert_eq!(
            v[4],
            json!({"type":"step_done","id":3,"seconds":1.5,"cached":false,"layer":"sha256:l","layer_size":42})
        );
        assert_eq!(v[5]["type"], "summary");
        assert_eq!(v[5]["steps_run"], 1);
        assert_eq!(v[5]["layer_bytes"], 42);
        assert_eq!(v[5]["image"], Value::Null);
    }

    #[test]
    fn a_failure_names_the_failed_step_then_the_error() {
        let v = lines(
            vec![Event::StepStarted {
                id: 1,
                stage: "s".into(),
                index: 1,
                total: 1,
                text: "RUN false".into(),
            }],
            Outcome::Failed("Dockerfile:2:1: exit code: 1\nframe"),
        );
        assert_eq!(
            v[1],
            json!({"type":"step_failed","id":1,"message":"Dockerfile:2:1: exit code: 1"})
        );
        assert_eq!(
            v[2],
            json!({"type":"build_failed","message":"Dockerfile:2:1: exit code: 1\nframe"})
        );
    }
}
