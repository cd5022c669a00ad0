//! Reading the global log from a position to its head with the next batches' queries already
//! in flight.
//!
//! One query at a time leaves the server idle while the client decodes a batch, and the
//! client idle while the server reads the next. Positions are dense (the sealer hands them
//! out one after another, a whole seal in one transaction), so the range of the next batch is
//! known before the current one arrives: a full batch after P holds exactly P+1 ..= P+n,
//! whenever it was read. Only a short batch, the head as one snapshot saw it, cannot be
//! followed by batches read ahead: a seal committed in between would put its events after a
//! gap. So after a short batch the reader drops what it read ahead and reads one batch at a
//! time until batches come back full again.

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use crate::model::LoggedEvent;
use crate::read::MAX_READ_BATCH;
use crate::{EventStore, StoreError};

/// Reads kept in flight while the log is behind by more than a batch. Each holds a pooled
/// connection; three kept the server busy in the bench, more gained nothing on two cores.
const READ_AHEAD: usize = 3;

type PendingRead = JoinHandle<Result<Vec<LoggedEvent>, StoreError>>;

/// Hands out the sealed global log in order, in batches, reading ahead (see the module
/// documentation). Dropping it cancels the reads in flight; dropping a `next_batch` call
/// before it answers loses nothing.
pub struct LogReader {
    store: EventStore,
    batch_size: usize,
    /// The last position handed out.
    position: u64,
    /// Reads in flight, in log order, each with the position it reads after.
    in_flight: VecDeque<(u64, PendingRead)>,
    /// How many reads to keep in flight: one after a short batch, doubling after full ones
    /// up to [`READ_AHEAD`].
    depth: usize,
}

impl EventStore {
    /// A reader of the sealed global log after `after`, in batches of `batch_size` events
    /// (at most [`MAX_READ_BATCH`]), that reads ahead while the log is behind. For catching
    /// up on a long log: replay, benchmarks. It answers exactly what successive
    /// [`EventStore::read_log`] calls would.
    pub fn log_reader(&self, after: u64, batch_size: usize) -> LogReader {
        LogReader {
            store: self.clone(),
            batch_size: batch_size.clamp(1, MAX_READ_BATCH),
            position: after,
            in_flight: VecDeque::new(),
            depth: READ_AHEAD,
        }
    }
}

impl LogReader {
    /// The last position handed out (the starting position before the first batch).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next batch of the log, empty at its head. After an error the reader starts again
    /// from [`LogReader::position`], so the call can be retried.
    pub async fn next_batch(&mut self) -> Result<Vec<LoggedEvent>, StoreError> {
        self.read_ahead();
        let Some((after, pending)) = self.in_flight.front_mut() else {
            // read_ahead always leaves one read in flight.
            return Ok(Vec::new());
        };
        let after = *after;
        // Awaited where it stands, and taken out only once finished (no await in between):
        // a call dropped meanwhile (a timeout, a `select!`) leaves the read to the next call.
        let finished = pending.await;
        self.in_flight.pop_front();
        let batch = match finished {
            Ok(Ok(batch)) => batch,
            Ok(Err(error)) => {
                self.cancel_reads_ahead();
                return Err(error);
            }
            Err(join_error) => {
                self.cancel_reads_ahead();
                if join_error.is_panic() {
                    std::panic::resume_unwind(join_error.into_panic());
                }
                return Err(StoreError::Unavailable(
                    "the runtime is shutting down".into(),
                ));
            }
        };
        if self.is_full_range(after, &batch) {
            self.depth = (self.depth * 2).min(READ_AHEAD);
        } else {
            // The head, as one snapshot saw it (or, were positions ever not dense, a range
            // the reads ahead did not start from): what was read ahead may follow a gap.
            self.cancel_reads_ahead();
            self.depth = 1;
        }
        if let Some(last) = batch.last() {
            self.position = last.position;
        }
        Ok(batch)
    }

    /// Whether `batch`, read after `after`, is the full range `after+1 ..= after+batch_size`,
    /// where the next read in flight starts.
    fn is_full_range(&self, after: u64, batch: &[LoggedEvent]) -> bool {
        let expected_last = after.checked_add(self.batch_size as u64);
        batch.len() == self.batch_size
            && batch.first().map(|e| e.position) == after.checked_add(1)
            && batch.last().map(|e| e.position) == expected_last
    }

    /// Starts reads until `depth` are in flight, each after where the one before it ends.
    fn read_ahead(&mut self) {
        while self.in_flight.len() < self.depth.max(1) {
            let after = match self.in_flight.back() {
                Some((after, _)) => match after.checked_add(self.batch_size as u64) {
                    Some(next) => next,
                    None => break,
                },
                None => self.position,
            };
            let store = self.store.clone();
            let count = self.batch_size;
            let pending = tokio::spawn(async move { store.read_log(after, count).await });
            self.in_flight.push_back((after, pending));
        }
    }

    fn cancel_reads_ahead(&mut self) {
        for (_, pending) in self.in_flight.drain(..) {
            pending.abort();
        }
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.cancel_reads_ahead();
    }
}
