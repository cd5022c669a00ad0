//! Commands of many requests committed in one transaction.
//!
//! # Why
//!
//! A write's transaction is small (the append, a row or two of read models, perhaps an
//! idempotency answer) and most of what PostgreSQL spends on it is per transaction and per
//! statement, not per row: the lock, the round trip, the commit and its WAL flush. Modelled in
//! pgbench on this machine (the same statements at the same sizes), eight writes in one
//! transaction ran at 1.2–1.5 times the rate of single-row inserts, one write per transaction
//! at 0.45–0.6. So a process commits the writes that arrive together as one transaction: the
//! requests' appends one after another, then the read models of all of them in one set of
//! statements (one upsert per table, as a builder batch writes them), then their idempotency
//! answers, and one `COMMIT`, sent as one pipeline ([`eventstore::pipeline`]).
//!
//! # How
//!
//! A request decides its command first (outside any transaction) and hands the outcome, a
//! [`Job`], to the process's [`GroupCommit`]. Jobs queue; while fewer than
//! [`BATCHES_IN_FLIGHT`] batches run, a new job starts one, on a task of its own, which takes
//! every queued job (at most [`MAX_JOBS`]) and, when its batch is committed, the jobs queued
//! meanwhile, until none is left. A lone write is committed at once, and under load the
//! batches grow with it. The batch runs on its own task so that a request given up by its
//! client cannot cancel the other requests' transaction halfway.
//!
//! # What a batch keeps from a single write
//!
//! - **Each stream in stream order.** An append must not build on a version written by a
//!   younger transaction (see the event store's documentation: the log orders transactions by
//!   their ids). Every version a job appends after was decided on before its batch began, so
//!   it was committed by a transaction that took its id earlier; the batch's first write is
//!   its first append, as for a single write.
//! - **Each request at most once, all or nothing.** Everything is one transaction: it commits
//!   every job or none. The `COMMIT` goes out before any answer is in, so whatever must not be
//!   committed is a statement's error, which rolls the whole batch back. The job whose
//!   statement failed first is answered with its failure ([`Committed::Refused`], a lost
//!   idempotency race); every other job was written by nothing and is sent again
//!   ([`Committed::RolledBack`]). A job rolled back [`ALONE_AFTER`] times, or one whose batch
//!   failed where no single job is to blame (the shared read-model writes), is written alone,
//!   as before batches. A batch-wide failure (the database unreachable, the commit's answer
//!   lost) answers every job with it.
//! - **One job per stream.** A process writes one command per stream at a time
//!   ([`StreamTurns`]), so two jobs of one batch never touch the same stream or row; a batch
//!   still takes at most one job per stream, should a request have given up its turn early.
//!   Writers in other processes are still caught by the append's expected version.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use eventstore::pipeline::{in_order, OpenTransaction};
use eventstore::{AppendError, EventStore, NewEvent, StoreError};
use tokio::sync::oneshot;

use crate::idempotency::{self, IdempotentRequest, StoredAnswer};
use crate::write::{Changes, Writes};
use crate::{ProjectionError, PROJECTIONS_LOCK, READ_MODEL_WRITE_SQL};

/// How many batches a process commits at once. Two keep both cores of a small machine busy
/// (one batch builds its statements while the other's are in the database) without holding
/// more connections than the reads need.
pub(crate) const BATCHES_IN_FLIGHT: usize = 2;

/// The most jobs in one batch: a batch holds back the sealer (and so every follower) until
/// it commits, and a refused job costs the others a second round trip.
pub(crate) const MAX_JOBS: usize = 32;

/// After this many rollbacks caused by other jobs, a job is written alone.
pub(crate) const ALONE_AFTER: usize = 3;

/// A decided command, ready to be written with others.
pub(crate) struct Job {
    pub stream_id: String,
    /// The stream's version the command was decided on.
    pub expected: u64,
    pub events: Vec<NewEvent>,
    /// The resource's read models at its new version.
    pub changes: Changes,
    /// The answer to record under the request's idempotency key.
    pub remember: Option<(IdempotentRequest, StoredAnswer)>,
}

/// What became of a job.
#[derive(Debug)]
pub(crate) enum Committed {
    /// Written, with the batch's `COMMIT` answered.
    Written,
    /// The append was refused (the stream moved on, or the events are malformed): nothing
    /// of the batch was written.
    Refused(AppendError),
    /// A concurrent request under the same idempotency key recorded its answer first.
    IdempotencyRaceLost,
    /// Another job's failure rolled the batch back: nothing of this one was written.
    RolledBack,
    /// The batch failed where no one job is to blame: nothing was written; write it alone.
    WriteAlone,
    /// The batch failed as a whole (an unreachable database, an unanswered `COMMIT`).
    Failed(ProjectionError),
}

/// The process's batches of writes (see the module documentation).
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(Job, oneshot::Sender<Committed>)>,
    batches: usize,
}

impl GroupCommit {
    /// Writes `job` in the next batch and returns what became of it.
    pub(crate) async fn commit(self: &Arc<Self>, store: &EventStore, job: Job) -> Committed {
        let (reply, outcome) = oneshot::channel();
        self.lock().jobs.push_back((job, reply));
        self.start_batches(store);
        // The batch's task ends only after answering: no answer means the runtime it ran on
        // stopped (the process is shutting down), and whether it committed is unknown.
        outcome.await.unwrap_or_else(|_| {
            Committed::Failed(ProjectionError::Store(StoreError::Unavailable(
                "the write's batch stopped before it was answered".into(),
            )))
        })
    }

    /// Starts a batch task if jobs wait and fewer than [`BATCHES_IN_FLIGHT`] run.
    fn start_batches(self: &Arc<Self>, store: &EventStore) {
        let start = {
            let mut queue = self.lock();
            let start = !queue.jobs.is_empty() && queue.batches < BATCHES_IN_FLIGHT;
            if start {
                queue.batches += 1;
            }
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).run(store.clone()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent between any two statements: a panic elsewhere leaves it
        // usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits batches until no job waits.
    async fn run(self: Arc<Self>, store: EventStore) {
        let mut running = Running {
            commit: Arc::clone(&self),
            store: store.clone(),
            ended: false,
        };
        loop {
            let batch = {
                let mut queue = self.lock();
                let batch = take_batch(&mut queue.jobs);
                if batch.is_empty() {
                    // Given back under the same lock that a new job is queued under, so a
                    // job never waits with no batch task to take it.
                    queue.batches -= 1;
                    running.ended = true;
                    return;
                }
                batch
            };
            let (jobs, replies): (Vec<Job>, Vec<_>) = batch.into_iter().unzip();
            let outcomes = write_batch(&store, jobs).await;
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A request that gave up no longer listens.
                let _ = reply.send(outcome);
            }
        }
    }
}

/// A running batch task. Should it end by a panic, its slot is given back and, if jobs
/// wait, another task takes them.
struct Running {
    commit: Arc<GroupCommit>,
    store: EventStore,
    ended: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.ended {
            self.commit.lock().batches -= 1;
            if tokio::runtime::Handle::try_current().is_ok() {
                self.commit.start_batches(&self.store);
            }
        }
    }
}

/// The jobs of the next batch: the queued ones, in order, at most [`MAX_JOBS`], one per
/// stream and one per idempotency key (two requests under one key must not share a
/// transaction: the second's answer would fail on the first's, and both would roll back);
/// the others wait for the next batch. Sorted by stream, so that batches of two processes
/// meet at the streams' rows in the same order and never wait on each other in a cycle.
fn take_batch(
    queue: &mut VecDeque<(Job, oneshot::Sender<Committed>)>,
) -> Vec<(Job, oneshot::Sender<Committed>)> {
    let mut batch = Vec::with_capacity(queue.len().min(MAX_JOBS));
    let mut streams = HashSet::new();
    let mut keys = HashSet::new();
    let mut later = VecDeque::new();
    while batch.len() < MAX_JOBS {
        let Some(entry) = queue.pop_front() else {
            break;
        };
        let key = (entry.0.remember.as_ref())
            .map(|(request, _)| (request.api_key_id, request.key.clone()));
        let free = !streams.contains(&entry.0.stream_id)
            && key.as_ref().is_none_or(|key| !keys.contains(key));
        if free {
            streams.insert(entry.0.stream_id.clone());
            keys.extend(key);
            batch.push(entry);
        } else {
            later.push_back(entry);
        }
    }
    while let Some(entry) = later.pop_back() {
        queue.push_front(entry);
    }
    batch.sort_by(|a, b| a.0.stream_id.cmp(&b.0.stream_id));
    batch
}

/// Writes the jobs in one transaction and tells what became of each, in their order.
async fn write_batch(store: &EventStore, jobs: Vec<Job>) -> Vec<Committed> {
    let count = jobs.len();
    match try_write_batch(store, jobs).await {
        Ok(outcomes) => outcomes,
        Err(error) => shared(error, count)
            .into_iter()
            .map(Committed::Failed)
            .collect(),
    }
}

/// What each job's statements answered, and the batch's.
async fn try_write_batch(
    store: &EventStore,
    mut jobs: Vec<Job>,
) -> Result<Vec<Committed>, ProjectionError> {
    let mut outcomes: Vec<Option<Committed>> = (0..jobs.len()).map(|_| None).collect();
    let client = store.pool().get().await?;
    // Every statement is prepared before the pipeline is sent (see eventstore::pipeline).
    let lock = client.prepare_cached(READ_MODEL_WRITE_SQL).await?;
    let mut each_changes: Vec<Changes> = jobs
        .iter_mut()
        .map(|job| std::mem::take(&mut job.changes))
        .collect();
    let mut changes = Changes::default();
    let mut appends = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter().enumerate() {
        match store
            .prepare_pipelined_append(&client, &job.stream_id, job.expected, &job.events)
            .await
        {
            Ok(append) => {
                changes.absorb(std::mem::take(&mut each_changes[index]));
                appends.push((index, append));
            }
            Err(AppendError::Store(e)) => return Err(e.into()),
            // Events the store refuses before sending them: the job leaves the batch.
            Err(refused) => outcomes[index] = Some(Committed::Refused(refused)),
        }
    }
    if appends.is_empty() {
        return Ok(outcomes.into_iter().flatten().collect());
    }
    let writes = Writes::of(&changes)?.prepare(&client).await?;
    let mut remembers = Vec::new();
    for (index, _) in &appends {
        if let Some((request, answer)) = &jobs[*index].remember {
            let remember = idempotency::prepare_remember(&client, request, answer.clone()).await?;
            remembers.push((*index, remember));
        }
    }

    let (transaction, begin) = OpenTransaction::begin(&client);
    let (begun, locked, appended, wrote, remembered, committed) = futures_util::join!(
        begin,
        client.execute(&lock, &[&PROJECTIONS_LOCK]),
        in_order(appends.iter().map(|(_, append)| append.send(&client))),
        writes.send(&client),
        in_order(remembers.iter().map(|(_, remember)| remember.send(&client))),
        // Whatever must not be committed is an error of a statement above, which makes this
        // a rollback.
        transaction.commit_in_pipeline(),
    );

    // The first failure, in the order the statements ran, is the cause; the statements after
    // it failed only because it aborted the transaction.
    begun?;
    locked?;
    let mut blamed = None;
    for ((index, _), result) in appends.iter().zip(appended) {
        match result {
            Ok(_) => {}
            Err(AppendError::Store(e)) => {
                match blame(ProjectionError::Store(e)) {
                    Ok(outcome) => blamed = Some((*index, outcome)),
                    Err(end) => return end.answer(outcomes, sent(&appends)),
                }
                break;
            }
            Err(refused) => {
                blamed = Some((*index, Committed::Refused(refused)));
                break;
            }
        }
    }
    if blamed.is_none() {
        if let Err(e) = wrote {
            return match aborted_by_server(&e) {
                Abort::NotKnown => Err(e),
                Abort::Retry => Ok(fill(outcomes, sent(&appends), || Committed::RolledBack)),
                Abort::ByThis => {
                    tracing::warn!(error = %e, jobs = appends.len(), "a batch's read-model writes failed: each write is tried alone");
                    Ok(fill(outcomes, sent(&appends), || Committed::WriteAlone))
                }
            };
        }
        for ((index, _), result) in remembers.iter().zip(remembered) {
            match result {
                Ok(true) => {}
                Ok(false) => {
                    blamed = Some((*index, Committed::IdempotencyRaceLost));
                    break;
                }
                Err(e) => {
                    match blame(e) {
                        Ok(outcome) => blamed = Some((*index, outcome)),
                        Err(end) => return end.answer(outcomes, sent(&appends)),
                    }
                    break;
                }
            }
        }
    }
    if let Some((index, outcome)) = blamed {
        outcomes[index] = Some(outcome);
        return Ok(fill(outcomes, sent(&appends), || Committed::RolledBack));
    }
    committed?;
    store.notify_appended();
    Ok(fill(outcomes, sent(&appends), || Committed::Written))
}

/// The jobs whose statements went out.
fn sent<T>(appends: &[(usize, T)]) -> impl Iterator<Item = usize> + '_ {
    appends.iter().map(|(index, _)| *index)
}

/// A batch ended by a failure no one job is to blame for.
enum BatchEnd {
    /// Rolled back for reasons of timing: every job is sent again.
    Retry,
    /// Its outcome is not known: every job fails with this.
    Failed(ProjectionError),
}

impl BatchEnd {
    fn answer(
        self,
        outcomes: Vec<Option<Committed>>,
        sent: impl Iterator<Item = usize>,
    ) -> Result<Vec<Committed>, ProjectionError> {
        match self {
            BatchEnd::Retry => Ok(fill(outcomes, sent, || Committed::RolledBack)),
            BatchEnd::Failed(error) => Err(error),
        }
    }
}

/// A job's statement failed with `error`: the job's own outcome (the others are rolled back
/// with it), or the end of the whole batch.
fn blame(error: ProjectionError) -> Result<Committed, BatchEnd> {
    match aborted_by_server(&error) {
        Abort::ByThis => Ok(Committed::Failed(error)),
        Abort::Retry => Err(BatchEnd::Retry),
        Abort::NotKnown => Err(BatchEnd::Failed(error)),
    }
}

/// What a statement's failure says about the batch's transaction.
enum Abort {
    /// The server refused the statement for its own content: the transaction rolled back,
    /// and this job is to blame.
    ByThis,
    /// The server gave up on the transaction for reasons of timing (a deadlock with another
    /// process's batch, a serialization failure): it rolled back, and every job may simply
    /// be sent again.
    Retry,
    /// No answer from the server (the connection is gone, or the statement never left this
    /// side): whether the transaction committed is not known, so no job may be sent again.
    NotKnown,
}

fn aborted_by_server(error: &ProjectionError) -> Abort {
    let ProjectionError::Store(StoreError::Database(e)) = error else {
        return Abort::NotKnown;
    };
    match e.code().map(|code| code.code()) {
        Some("40P01" | "40001") => Abort::Retry,
        Some(_) if !error.is_unavailable() => Abort::ByThis,
        _ => Abort::NotKnown,
    }
}

/// Every outcome, those still unknown (among `sent`) made by `outcome`.
fn fill(
    mut outcomes: Vec<Option<Committed>>,
    sent: impl Iterator<Item = usize>,
    outcome: impl Fn() -> Committed,
) -> Vec<Committed> {
    for index in sent {
        if outcomes[index].is_none() {
            outcomes[index] = Some(outcome());
        }
    }
    // Every job was either refused before sending or sent.
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Committed::RolledBack))
        .collect()
}

/// One batch-wide failure for each of `count` jobs: the database's own error is shared, so
/// that each request answers as it would have alone (503 for an unreachable or busy
/// database).
fn shared(error: ProjectionError, count: usize) -> Vec<ProjectionError> {
    match error {
        ProjectionError::Store(store) => {
            let store = Arc::new(store);
            (0..count)
                .map(|_| ProjectionError::Store(StoreError::Shared(Arc::clone(&store))))
                .collect()
        }
        ProjectionError::Busy(why) => (0..count)
            .map(|_| ProjectionError::Busy(why.clone()))
            .collect(),
        other => {
            let what = other.to_string();
            (0..count)
                .map(|_| ProjectionError::Corrupt(what.clone()))
                .collect()
        }
    }
}

/// One command per stream at a time in this process: a write to a stream waits for the one
/// before it and then decides on the state it left, rather than deciding on the same state,
/// losing the race at the append and costing its batch a rollback.
#[derive(Default)]
pub(crate) struct StreamTurns {
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A stream's turn, held until dropped.
pub(crate) struct Turn<'a> {
    turns: &'a StreamTurns,
    stream_id: String,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl StreamTurns {
    pub(crate) async fn take(&self, stream_id: &str) -> Turn<'_> {
        // Made before the wait, so that a request given up while it waits still forgets
        // the stream's entry when nobody else needs it (its `Drop`).
        let mut turn = Turn {
            turns: self,
            stream_id: stream_id.to_owned(),
            held: None,
        };
        // Moved into the wait's future, which is dropped before `turn` if the wait is.
        let shared = Arc::clone(self.lock().entry(stream_id.to_owned()).or_default());
        turn.held = Some(shared.lock_owned().await);
        turn
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut turns = self.turns.lock();
        // Nobody else holds or waits for this stream's turn: forget it.
        if turns
            .get(&self.stream_id)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            turns.remove(&self.stream_id);
        }
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("stream_id", &self.stream_id)
            .field("expected", &self.expected)
            .field("events", &self.events.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(streams: &[&str]) -> VecDeque<(Job, oneshot::Sender<Committed>)> {
        streams
            .iter()
            .map(|stream_id| {
                let job = Job {
                    stream_id: (*stream_id).to_owned(),
                    expected: 1,
                    events: Vec::new(),
                    changes: Changes::default(),
                    remember: None,
                };
                (job, oneshot::channel().0)
            })
            .collect()
    }

    fn streams(jobs: &[(Job, oneshot::Sender<Committed>)]) -> Vec<&str> {
        jobs.iter().map(|(job, _)| job.stream_id.as_str()).collect()
    }

    #[test]
    fn a_batch_takes_one_job_per_stream_in_order_and_leaves_the_rest_queued_in_order() {
        let mut queue = queued(&["a", "b", "a", "c", "b", "a"]);
        let batch = take_batch(&mut queue);
        assert_eq!(streams(&batch), ["a", "b", "c"]);
        let left: Vec<(Job, _)> = queue.into_iter().collect();
        assert_eq!(streams(&left), ["a", "b", "a"]);
    }

    #[test]
    fn a_batch_takes_one_job_per_idempotency_key_and_sorts_its_jobs_by_stream() {
        let mut queue = queued(&["c", "b", "a"]);
        let request = IdempotentRequest {
            api_key_id: uuid::Uuid::nil(),
            key: "create-once".into(),
            request_sha256: String::new(),
        };
        let answer = StoredAnswer {
            status: 201,
            location: None,
            etag: None,
            body: String::new(),
        };
        for (job, _) in queue.iter_mut().take(2) {
            job.remember = Some((request.clone(), answer.clone()));
        }
        let batch = take_batch(&mut queue);
        assert_eq!(streams(&batch), ["a", "c"]);
        let left: Vec<(Job, _)> = queue.into_iter().collect();
        assert_eq!(streams(&left), ["b"]);
    }

    #[test]
    fn a_batch_takes_at_most_its_share_of_jobs() {
        let names: Vec<String> = (0..MAX_JOBS + 5).map(|n| n.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut queue = queued(&names);
        assert_eq!(take_batch(&mut queue).len(), MAX_JOBS);
        assert_eq!(queue.len(), 5);
        assert_eq!(queue[0].0.stream_id, MAX_JOBS.to_string());
    }

    #[tokio::test]
    async fn a_stream_turn_waits_for_the_one_before_it_and_is_forgotten_when_free() {
        let turns = StreamTurns::default();
        let first = turns.take("incident-1").await;
        let other = turns.take("incident-2").await;
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            turns.take("incident-1"),
        )
        .await;
        assert!(waiting.is_err(), "the second turn waits for the first");
        drop(first);
        drop(turns.take("incident-1").await);
        drop(other);
        assert!(turns.lock().is_empty());

        // A wait given up leaves nothing behind either, even once its turn had come.
        let held = turns.take("incident-3").await;
        let mut waiting = Box::pin(turns.take("incident-3"));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(held);
        drop(waiting);
        assert!(turns.lock().is_empty());
    }
}
