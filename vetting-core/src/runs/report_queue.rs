//! The queue of runs whose orchestrator-owned states (`SpecValidate`,
//! `Reporting`) wait to be resolved off the request path. One worker task
//! takes them one at a time: a wave of runs that end together (a bay
//! started at once) writes its reports one after the other instead of all
//! at once, and pauses as long as each took before the next, so the
//! agents' requests keep at least half of a busy core. A run is queued
//! once however often it is asked for.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The longest pause between two runs.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Runs waiting for the worker, and whether it is running.
#[derive(Debug, Default)]
pub(crate) struct ReportQueue {
    state: std::sync::Mutex<QueueState>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    order: VecDeque<String>,
    /// Queued or being resolved now.
    pending: HashSet<String>,
    worker: bool,
}

impl ReportQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `run_id`; returns whether the worker must be started.
    pub(crate) fn push(&self, run_id: &str) -> bool {
        let mut state = self.lock();
        if state.pending.insert(run_id.to_string()) {
            state.order.push_back(run_id.to_string());
        }
        let start = !state.worker;
        state.worker = true;
        drop(state);
        self.wake.notify_one();
        start
    }

    /// Whether `run_id` is queued or being resolved.
    pub(crate) fn is_pending(&self, run_id: &str) -> bool {
        self.lock().pending.contains(run_id)
    }

    /// How many runs wait or are being resolved.
    pub(crate) fn len(&self) -> usize {
        self.lock().pending.len()
    }

    fn next(&self) -> Option<String> {
        self.lock().order.pop_front()
    }

    fn done(&self, run_id: &str) {
        self.lock().pending.remove(run_id);
    }
}

/// What the worker resolves runs with: the runs service, reached through
/// a handle that does not keep the orchestrator alive.
pub(crate) trait Resolve: Send + Sync + 'static {
    /// Resolves one run; `false` when the owner is gone.
    fn resolve(&self, run_id: String) -> impl std::future::Future<Output = bool> + Send;
    /// Whether the owner is still there.
    fn alive(&self) -> bool;
}

/// The worker: resolves queued runs one at a time; ends when the
/// orchestrator is gone (it holds no strong handle while it waits).
pub(crate) async fn work(queue: Arc<ReportQueue>, resolver: impl Resolve) {
    loop {
        match queue.next() {
            Some(run_id) => {
                let started = std::time::Instant::now();
                let alive = resolver.resolve(run_id.clone()).await;
                queue.done(&run_id);
                if !alive {
                    return;
                }
                // at most half of the time while runs wait: the agents'
                // requests keep the rest of a busy core
                if queue.len() > 0 {
                    tokio::time::sleep(started.elapsed().min(MAX_PAUSE)).await;
                }
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), queue.wake.notified()).await;
                if !resolver.alive() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_queued_once_and_the_worker_started_once() {
        let queue = ReportQueue::default();
        assert!(queue.push("a"), "the first push starts the worker");
        assert!(!queue.push("a"));
        assert!(!queue.push("b"));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next().as_deref(), Some("a"));
        // being resolved: still pending, so not queued a second time
        assert!(queue.is_pending("a"));
        assert!(!queue.push("a"));
        assert_eq!(queue.next().as_deref(), Some("b"));
        queue.done("b");
        assert!(!queue.is_pending("b"));
        assert_eq!(queue.next(), None);
        queue.done("a");
        assert_eq!(queue.len(), 0);
    }
}
