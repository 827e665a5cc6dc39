//! What every view counts: the steps still running, and the build's totals for the
//! summary line.

use std::collections::BTreeMap;
use std::time::Instant;

use indicatif::HumanBytes;
use kiln_executor::Event;

use super::{short_digest, step_name};

/// The build so far.
pub struct Tally {
    started: Instant,
    /// Steps started and not done: id → BuildKit-style name.
    running: BTreeMap<usize, String>,
    /// Steps that ran (not from the cache).
    pub steps_run: usize,
    /// Steps whose result came from the build cache.
    pub steps_cached: usize,
    /// Layers the build wrote (cached steps' layers are not counted), and their bytes.
    pub layers: usize,
    pub layer_bytes: u64,
    /// The image id (config digest), once written.
    pub image: Option<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            started: Instant::now(),
            running: BTreeMap::new(),
            steps_run: 0,
            steps_cached: 0,
            layers: 0,
            layer_bytes: 0,
            image: None,
        }
    }
}

impl Tally {
    /// Counts `event`.
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => {
                self.running
                    .insert(*id, step_name(stage, *index, *total, text));
            }
            Event::StepDone {
                id,
                cached,
                layer,
                layer_size,
                ..
            } => {
                self.running.remove(id);
                if *cached {
                    self.steps_cached += 1;
                } else {
                    self.steps_run += 1;
                    if layer.is_some() {
                        self.layers += 1;
                        self.layer_bytes += layer_size.unwrap_or(0);
                    }
                }
            }
            Event::ImageWritten { config, .. } => self.image = Some(config.clone()),
            _ => {}
        }
    }

    /// The steps started and not done (the failed ones, once the build has failed).
    pub fn running(&self) -> impl Iterator<Item = (usize, &str)> {
        self.running.iter().map(|(id, name)| (*id, name.as_str()))
    }

    /// Seconds since the build started.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// One line: time, steps run and cached, layers written and their size, the image.
    pub fn summary(&self) -> String {
        let steps = self.steps_run + self.steps_cached;
        let mut line = format!(
            "built in {:.1}s: {steps} step{} ({} run, {} cached), {} layer{} written ({})",
            self.seconds(),
            plural(steps),
            self.steps_run,
            self.steps_cached,
            self.layers,
            plural(self.layers),
            HumanBytes(self.layer_bytes),
        );
        if let Some(image) = &self.image {
            line.push_str(&format!(", image sha256:{}", short_digest(image)));
        }
        line
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: usize) -> Event {
        Event::StepStarted {
            id,
            stage: "b".into(),
            index: id,
            total: 3,
            text: format!("RUN {id}"),
        }
    }

    fn done(id: usize, cached: bool, size: Option<u64>) -> Event {
        Event::StepDone {
            id,
            layer: size.map(|_| format!("sha256:{id:064}")),
            layer_size: size,
            seconds: 0.5,
            cached,
        }
    }

    #[test]
    fn counts_run_and_cached_steps_and_only_written_layers() {
        let mut t = Tally::default();
        for e in [
            started(1),
            done(1, true, Some(100)),
            started(2),
            done(2, false, Some(2048)),
            started(3),
            done(3, false, None),
            started(4),
        ] {
            t.record(&e);
        }
        assert_eq!((t.steps_run, t.steps_cached), (2, 1));
        assert_eq!((t.layers, t.layer_bytes), (1, 2048));
        assert_eq!(t.running().collect::<Vec<_>>(), [(4, "[b 5/4] RUN 4")]);
        t.record(&Event::ImageWritten {
            manifest: "sha256:m".into(),
            config: format!("sha256:{}", "ab".repeat(32)),
            tags: vec![],
        });
        let s = t.summary();
        assert!(s.starts_with("built in "), "{s}");
        assert!(
            s.ends_with(": 3 steps (2 run, 1 cached), 1 layer written (2.00 KiB), image sha256:abababababab"),
            "{s}"
        );
    }
}
