//! The scheduler: walks the step graph, starting every stage as soon as the stages it
//! needs are built (not level by level), each on its own scoped thread; steps inside a
//! stage run in order. Events reach the caller through a crossbeam channel, in the order
//! they happen. The first failure stops stages that have not started yet; its error is
//! the build's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex};

use crate::error::{BuildError, SetupError};
use crate::event::Event;
use crate::graph::StepGraph;
use crate::step::StepContext;

/// Which stages are finished, and whether the build has failed.
#[derive(Default)]
struct Progress {
    done: BTreeSet<usize>,
    failed: bool,
}

/// Builds every stage of `graph`; the results are in `cx`.
pub(crate) fn run(
    cx: &StepContext<'_>,
    graph: &StepGraph,
    on_event: &mut dyn FnMut(Event),
) -> Result<(), BuildError> {
    let progress = Mutex::new(Progress::default());
    let changed = Condvar::new();
    let (tx, rx) = crossbeam_channel::unbounded::<Event>();
    let errors: Mutex<BTreeMap<usize, BuildError>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for index in graph.order() {
            let Some(node) = graph.stages.get(&index) else {
                continue;
            };
            let tx = tx.clone();
            let (progress, changed, errors) = (&progress, &changed, &errors);
            scope.spawn(move || {
                // Wait for the stages this one needs.
                {
                    let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                    while !p.failed && !node.needs.iter().all(|n| p.done.contains(n)) {
                        p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
                    }
                    if p.failed {
                        return;
                    }
                }
                let emit = move |e: Event| {
                    let _ = tx.send(e);
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    cx.run_stage(graph, node, &emit)
                }));
                let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Ok(Ok(st)) => {
                        cx.set_result(index, st);
                        p.done.insert(index);
                    }
                    Ok(Err(e)) => {
                        errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(index, e);
                        p.failed = true;
                    }
                    Err(_) => {
                        errors.lock().unwrap_or_else(|e| e.into_inner()).insert(
                            index,
                            BuildError::setup("building", SetupError::WorkerPanicked),
                        );
                        p.failed = true;
                    }
                }
                changed.notify_all();
            });
        }
        drop(tx);
        for e in rx.iter() {
            on_event(e);
        }
    });
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    match errors.pop_first() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}
