//! The scheduler: walks the step graph with a pool of at most `jobs` workers. A stage
//! starts as soon as every stage it needs is built (not level by level); steps inside a
//! stage run in order; a stage several others use is built once; stages the target does
//! not need are not in the graph. Events reach the caller through a crossbeam channel in
//! the order they happen.
//!
//! Fail fast: the first failing stage cancels the build's [`CancelToken`], so running RUN
//! commands are killed and no further step starts; that first error is the build's. A
//! cancellation from outside (Ctrl-C, an embedder) ends the build the same way, with
//! [`BuildError::Cancelled`].

use std::collections::{BTreeMap, BTreeSet};

use crossbeam_channel::{select, unbounded};

use crate::cancel::CancelToken;
use crate::error::{BuildError, SetupError};
use crate::event::Event;
use crate::graph::StepGraph;
use crate::step::StepContext;

/// How many stages build at once when the caller does not say: the CPUs, at least 2.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// Builds every stage of `graph` with at most `jobs` at once; the results are in `cx`.
pub(crate) fn run(
    cx: &StepContext<'_>,
    graph: &StepGraph,
    jobs: usize,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(Event),
) -> Result<(), BuildError> {
    let order = graph.order();
    let (work_tx, work_rx) = unbounded::<usize>();
    let (done_tx, done_rx) = unbounded::<(usize, Result<(), BuildError>)>();
    let (event_tx, event_rx) = unbounded::<Event>();
    let mut first_error: Option<BuildError> = None;
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(order.len().max(1)) {
            let (work_rx, done_tx, event_tx) = (work_rx.clone(), done_tx.clone(), event_tx.clone());
            scope.spawn(move || {
                for index in work_rx.iter() {
                    let Some(node) = graph.stages.get(&index) else {
                        continue;
                    };
                    let emit = |e: Event| {
                        let _ = event_tx.send(e);
                    };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        cx.run_stage(graph, node, &emit)
                    }));
                    let result = match outcome {
                        Ok(Ok(st)) => {
                            cx.set_result(index, st);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(BuildError::setup("building", SetupError::WorkerPanicked)),
                    };
                    if done_tx.send((index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((work_rx, done_tx, event_tx));
        let mut done: BTreeSet<usize> = BTreeSet::new();
        let mut started: BTreeSet<usize> = BTreeSet::new();
        let mut running = 0usize;
        let start_ready = |done: &BTreeSet<usize>, started: &mut BTreeSet<usize>| -> usize {
            let mut n = 0;
            for i in &order {
                let ready = graph.stages[i].needs.iter().all(|d| done.contains(d));
                if ready && !started.contains(i) && work_tx.send(*i).is_ok() {
                    started.insert(*i);
                    n += 1;
                }
            }
            n
        };
        running += start_ready(&done, &mut started);
        let mut errors: BTreeMap<usize, BuildError> = BTreeMap::new();
        while running > 0 {
            select! {
                recv(event_rx) -> e => {
                    if let Ok(e) = e {
                        on_event(e);
                    }
                }
                recv(done_rx) -> d => {
                    let Ok((index, result)) = d else { break };
                    running -= 1;
                    match result {
                        Ok(()) => {
                            done.insert(index);
                            if !cancel.is_cancelled() {
                                running += start_ready(&done, &mut started);
                            }
                        }
                        Err(e) => {
                            // The first failure stops the rest.
                            cancel.cancel();
                            errors.insert(index, e);
                        }
                    }
                }
            }
        }
        drop(work_tx);
        for e in event_rx.try_iter() {
            on_event(e);
        }
        // A stage's own failure wins over the cancellations it caused elsewhere.
        first_error = errors
            .iter()
            .find(|(_, e)| !matches!(e, BuildError::Cancelled))
            .map(|(i, _)| *i)
            .or_else(|| errors.keys().next().copied())
            .and_then(|i| errors.remove(&i));
    });
    match first_error {
        Some(e) => Err(e),
        None if cancel.is_cancelled() => Err(BuildError::Cancelled),
        None => Ok(()),
    }
}
