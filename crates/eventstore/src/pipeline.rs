//! Sending several statements in one round trip.
//!
//! tokio-postgres writes a statement to the connection when its future is first polled (if
//! the statement is prepared already), and the server runs statements in the order they
//! arrive. Polling futures in order therefore sends them as one pipeline: the server runs
//! them back to back, and the writer waits once for all the answers instead of once per
//! statement. Every statement must be prepared *before* the pipeline is sent: one that is
//! still to be prepared would go out after the statements behind it.
//!
//! A transaction can begin in a pipeline and send its `COMMIT` in one ([`OpenTransaction`]), as
//! the sealer and the projections' publisher do. That `COMMIT` goes out before the answers of
//! the statements ahead of it are in, so it is safe only when every outcome that must not be
//! committed is some statement's error.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use deadpool_postgres::Object;
use futures_util::future::{maybe_done, poll_fn, MaybeDone};
use futures_util::FutureExt;

/// Awaits every future, polling them in the order given (see the module documentation).
/// `futures_util::join!` does the same for a fixed number of futures of different types.
pub async fn in_order<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<MaybeDone<F>>>> = futures
        .into_iter()
        .map(|f| Box::pin(maybe_done(f)))
        .collect();
    poll_fn(|cx| {
        let mut done = true;
        for future in &mut pending {
            done &= future.as_mut().poll(cx).is_ready();
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    // Every one is done: each holds its output.
    pending
        .iter_mut()
        .filter_map(|future| future.as_mut().take_output())
        .collect()
}

/// A transaction begun in a pipeline (`BEGIN` sent with its first statements, see
/// [`Self::begin`]) that must end with [`Self::finish`] or, in that same pipeline,
/// [`Self::commit_in_pipeline`]. Dropped without either (a cancelled request), it sends `ROLLBACK` without waiting for the answer, so that the connection
/// goes back to the pool outside any transaction: the server runs that `ROLLBACK` before
/// whatever the connection's next user sends.
pub struct OpenTransaction<'a> {
    client: &'a Object,
    open: bool,
}

impl<'a> OpenTransaction<'a> {
    /// `BEGIN`, to be sent as the first statement of a pipeline.
    pub fn begin(
        client: &'a Object,
    ) -> (
        Self,
        impl Future<Output = Result<(), tokio_postgres::Error>> + 'a,
    ) {
        (
            OpenTransaction { client, open: true },
            client.batch_execute("BEGIN"),
        )
    }

    /// `COMMIT`, to be sent as the last statement of the pipeline that begins the
    /// transaction (polled with the others, after them): the transaction ends in the same
    /// round trip. The server commits only if every statement before succeeded; after an
    /// error it answers this `COMMIT` by rolling back, without an error of its own. So every
    /// outcome that must not be committed has to be an error of some statement, never a
    /// result that the caller would refuse once it reads it.
    pub fn commit_in_pipeline(
        mut self,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + 'a {
        // Sent in the same poll as `BEGIN` (the caller polls them together): from then on
        // the server ends the transaction whatever happens to this side.
        self.open = false;
        self.client.batch_execute("COMMIT")
    }

    /// Ends the transaction with `COMMIT` (when `commit`) or `ROLLBACK`. A `COMMIT` of a
    /// transaction that an error aborted rolls it back without an error of its own: commit
    /// only when every statement succeeded.
    pub async fn finish(mut self, commit: bool) -> Result<(), tokio_postgres::Error> {
        let end = self
            .client
            .batch_execute(if commit { "COMMIT" } else { "ROLLBACK" });
        // Sent when `end` is first polled, just below, in the same poll.
        self.open = false;
        end.await
    }
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // The first poll sends it; the answer is discarded by the connection.
            let _ = self.client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;
    use tokio_postgres::types::ToSql;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_dropped_unfinished_leaves_its_connection_outside_any_transaction() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let client = store.pool().get().await.expect("client");
        client
            .batch_execute("CREATE TABLE scratch (n int)")
            .await
            .expect("table");
        let (transaction, begin) = OpenTransaction::begin(&client);
        let (begun, wrote) =
            futures_util::join!(begin, client.execute("INSERT INTO scratch VALUES (1)", &[]));
        begun.expect("begin");
        wrote.expect("write");
        drop(transaction); // a cancelled request

        // The next user of the connection writes in autocommit: seen at once elsewhere,
        // and the dropped transaction's row is not.
        client
            .execute("INSERT INTO scratch VALUES (2)", &[])
            .await
            .expect("write");
        let other = store.pool().get().await.expect("another client");
        let rows: Vec<i32> = other
            .query("SELECT n FROM scratch", &[])
            .await
            .expect("read")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(rows, vec![2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_in_the_pipeline_keeps_everything_or_after_any_error_nothing() {
        let db = TestDatabase::create().await;
        let store = db.store();
        let client = store.pool().get().await.expect("client");
        client
            .batch_execute("CREATE TABLE scratch (n int PRIMARY KEY)")
            .await
            .expect("table");
        // Prepared before the pipeline (see the module documentation).
        let insert = (client.prepare("INSERT INTO scratch VALUES ($1)").await).expect("prepare");
        // (first row, second row, whether both go in): 1 again fails on the key.
        for (first, second, both) in [(1, 2, true), (3, 1, false)] {
            let first: [&(dyn ToSql + Sync); 1] = [&first];
            let second: [&(dyn ToSql + Sync); 1] = [&second];
            let (transaction, begin) = OpenTransaction::begin(&client);
            let (begun, wrote, wrote_again, committed) = futures_util::join!(
                begin,
                client.execute(&insert, &first),
                client.execute(&insert, &second),
                transaction.commit_in_pipeline(),
            );
            begun.expect("begin");
            wrote.expect("the first insert");
            assert_eq!(wrote_again.is_ok(), both);
            committed.expect("after an error, the commit rolls back without an error");
        }
        let rows: Vec<i32> = client
            .query("SELECT n FROM scratch ORDER BY n", &[])
            .await
            .expect("read")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            rows,
            vec![1, 2],
            "the transaction with an error left nothing"
        );
        // And the connection is outside any transaction again.
        client.execute(&insert, &[&4]).await.expect("autocommit");
        let other = store.pool().get().await.expect("another client");
        let seen: i64 = (other
            .query_one("SELECT count(*) FROM scratch WHERE n = 4", &[])
            .await)
            .expect("read")
            .get(0);
        assert_eq!(seen, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_polled_in_order_run_in_that_order() {
        let db = TestDatabase::create().await;
        let client = db.store().pool().get().await.expect("client");
        client
            .batch_execute("CREATE TABLE scratch (n int, at bigint GENERATED ALWAYS AS IDENTITY)")
            .await
            .expect("table");
        let insert = client
            .prepare_cached("INSERT INTO scratch (n) VALUES ($1)")
            .await
            .expect("prepare");
        let numbers: Vec<i32> = (0..40).collect();
        let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
            numbers.iter().map(|n| [n as _]).collect();
        let results = in_order(params.iter().map(|p| client.execute(&insert, p))).await;
        assert!(results.iter().all(Result::is_ok));
        let order: Vec<i32> = client
            .query("SELECT n FROM scratch ORDER BY at", &[])
            .await
            .expect("read")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(order, numbers);
    }
}
