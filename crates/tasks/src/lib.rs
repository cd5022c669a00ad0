//! Background work with one lifecycle.
//!
//! Every long-running task of a `crier serve` process (the sealer, the NOTIFY listener, the
//! projection builder, the notice hub's follower, the delivery fan-out and senders, the
//! checkpoint signer, housekeeping) is a function of a [`CancellationToken`] that runs until
//! the token is cancelled. [`Tasks::spawn`] runs it under supervision:
//!
//! * transient trouble (the database away for a while) is the task's own business: it
//!   retries inside and keeps running;
//! * a task that returns an error, panics, or returns before it was cancelled has failed for
//!   good: the failure is logged with its whole chain of causes, counted in
//!   `crier_task_failures_total{task}`, marked in [`Health`] (so `/readyz` answers 503),
//!   and the task is started again after a backoff; once it runs again it is healthy;
//! * [`Tasks::stop`] cancels every task and waits for all of them, for a bounded time.
//!
//! Nothing is dropped silently: every task is tracked ([`TaskTracker`]) from its start to its
//! end.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a task may fail with.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The first wait before a failed task is started again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A task's state as [`Health`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// Failed for good and waiting to be started again.
    Failed(String),
    /// Ended because the process is stopping.
    Stopped,
}

/// The state of every supervised task of the process, for readiness.
#[derive(Debug, Default)]
pub struct Health {
    tasks: Mutex<BTreeMap<&'static str, TaskState>>,
}

impl Health {
    fn set(&self, task: &'static str, state: TaskState) {
        let up = matches!(state, TaskState::Running);
        metrics::gauge!("crier_task_up", "task" => task).set(if up { 1.0 } else { 0.0 });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.insert(task, state);
        }
    }

    /// The tasks that have failed and not run again since, with why.
    pub fn failing(&self) -> Vec<(&'static str, String)> {
        self.tasks
            .lock()
            .map(|tasks| {
                tasks
                    .iter()
                    .filter_map(|(name, state)| match state {
                        TaskState::Failed(why) => Some((*name, why.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every task's state, by name.
    pub fn states(&self) -> BTreeMap<&'static str, TaskState> {
        self.tasks.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// The supervised background work of one process.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    health: Arc<Health>,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Cancelled when the process stops.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs `start(token)` until the token is cancelled, starting it again (after a backoff)
    /// whenever it fails for good. `start` is called once per run.
    pub fn spawn<F, Fut, E>(&self, name: &'static str, mut start: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let health = self.health.clone();
        let tracker = self.tracker.clone();
        health.set(name, TaskState::Running);
        self.tracker.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                health.set(name, TaskState::Running);
                let run = tracker.spawn(start(cancel.clone()));
                let failure = match failure(run.await) {
                    None if cancel.is_cancelled() => None,
                    None => Some("it returned before the process stopped".to_owned()),
                    failed => failed,
                };
                let Some(why) = failure else { break };
                if cancel.is_cancelled() {
                    tracing::error!(task = name, error = %why, "a background task failed while stopping");
                    metrics::counter!("crier_task_failures_total", "task" => name).increment(1);
                    break;
                }
                tracing::error!(
                    task = name,
                    error = %why,
                    restart_in_ms = backoff.as_millis() as u64,
                    "a background task failed; it will be started again"
                );
                metrics::counter!("crier_task_failures_total", "task" => name).increment(1);
                health.set(name, TaskState::Failed(why));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            health.set(name, TaskState::Stopped);
        });
    }

    /// Runs `work` once, tracked like the others (so [`Tasks::stop`] waits for it) but not
    /// started again: for work with an end, such as preparing the database. An error or a
    /// panic is logged and counted, and marks the task failed.
    pub fn spawn_once<Fut, E>(&self, name: &'static str, work: Fut)
    where
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let health = self.health.clone();
        health.set(name, TaskState::Running);
        let run = self.tracker.spawn(work);
        self.tracker.spawn(async move {
            match failure(run.await) {
                None => health.set(name, TaskState::Stopped),
                Some(why) => {
                    tracing::error!(task = name, error = %why, "a background task failed");
                    metrics::counter!("crier_task_failures_total", "task" => name).increment(1);
                    health.set(name, TaskState::Failed(why));
                }
            }
        });
    }

    /// Cancels every task and waits for them all to end, at most `grace`. Answers whether
    /// they all ended in time.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        let ended = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !ended {
            let running: Vec<&str> = self
                .health
                .states()
                .into_iter()
                .filter(|(_, state)| *state != TaskState::Stopped)
                .map(|(name, _)| name)
                .collect();
            tracing::warn!(tasks = ?running, "background tasks did not stop in time");
        }
        ended
    }
}

/// Why a run ended, if it failed: its error with every cause, or its panic.
fn failure<E: Into<BoxError>>(
    ended: Result<Result<(), E>, tokio::task::JoinError>,
) -> Option<String> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(Chain(e.into().as_ref()).to_string()),
        Err(joined) if joined.is_panic() => Some(format!(
            "it panicked: {}",
            panic_message(joined.into_panic())
        )),
        Err(_) => Some("it was aborted".to_owned()),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// An error with all its causes: `outer: cause: root cause`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read the log")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_prints_every_cause() {
        let error = Outer(std::io::Error::other("connection reset"));
        assert_eq!(
            Chain(&error).to_string(),
            "cannot read the log: connection reset"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_marked_unhealthy_and_started_again_until_it_runs() {
        let tasks = Tasks::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        tasks.spawn("flaky", move |cancel: CancellationToken| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => Err(BoxError::from(Outer(std::io::Error::other("reset")))),
                    1 => panic!("second run panics"),
                    _ => {
                        cancel.cancelled().await;
                        Ok(())
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let failing = tasks.health().failing();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].0, "flaky");
        assert_eq!(failing[0].1, "cannot read the log: reset");
        tokio::time::sleep(FIRST_BACKOFF + Duration::from_millis(1)).await;
        let failing = tasks.health().failing();
        assert!(failing[0].1.contains("second run panics"), "{failing:?}");
        tokio::time::sleep(FIRST_BACKOFF * 2 + Duration::from_millis(1)).await;
        assert!(tasks.health().failing().is_empty());
        assert_eq!(tasks.health().states()["flaky"], TaskState::Running);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(tasks.stop(Duration::from_secs(1)).await);
        assert_eq!(tasks.health().states()["flaky"], TaskState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_early_has_failed() {
        let tasks = Tasks::new();
        tasks.spawn("quitter", |_cancel| async { Ok::<(), BoxError>(()) });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(tasks.health().failing()[0].0, "quitter");
        assert!(tasks.stop(Duration::from_secs(1)).await);
    }
}

#[cfg(test)]
mod metric_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Failures counted under `crier_task_failures_total{task="counted"}`.
    static COUNTED: AtomicU64 = AtomicU64::new(0);

    struct Failures;

    impl metrics::CounterFn for Failures {
        fn increment(&self, value: u64) {
            COUNTED.fetch_add(value, Ordering::SeqCst);
        }

        fn absolute(&self, value: u64) {
            COUNTED.store(value, Ordering::SeqCst);
        }
    }

    /// A recorder that keeps one counter: the failures of the task named `counted`.
    struct Recorder;

    impl metrics::Recorder for Recorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }

        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let ours = key.name() == "crier_task_failures_total"
                && key
                    .labels()
                    .any(|l| l.key() == "task" && l.value() == "counted");
            if ours {
                metrics::Counter::from_arc(Arc::new(Failures))
            } else {
                metrics::Counter::noop()
            }
        }

        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }

        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_failure_of_a_task_is_counted_in_the_metrics_by_its_name() {
        metrics::set_global_recorder(Recorder).unwrap();
        let tasks = Tasks::new();
        tasks.spawn("counted", |_cancel: CancellationToken| async {
            Err::<(), BoxError>(BoxError::from("the database is gone"))
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(COUNTED.load(Ordering::SeqCst), 1);
        tokio::time::sleep(FIRST_BACKOFF + Duration::from_millis(1)).await;
        assert_eq!(
            COUNTED.load(Ordering::SeqCst),
            2,
            "each failure, after each backoff"
        );
        assert!(tasks.stop(Duration::from_secs(1)).await);
    }
}
