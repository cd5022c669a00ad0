//! Lookups that many concurrent requests make, answered by one query per round.
//!
//! A read must reflect every write answered before it began, on every process, so it cannot
//! be answered from this process's memory alone: it asks the database. But a thousand
//! clients polling one incident need not ask a thousand times. A request joins the queue;
//! one round runs at a time and answers everything queued when it began with one query.
//! A round begins only after each of its requests was queued, so it sees every write
//! committed before any of them arrived. An idle process runs a round at once (no added
//! wait); a busy one runs bigger rounds, not more of them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::problem::ApiError;

type Answer<V> = Result<Option<V>, ApiError>;
type Lookup<K, V> =
    dyn Fn(Vec<K>) -> BoxFuture<'static, Result<HashMap<K, V>, ApiError>> + Send + Sync;

/// Looks up values by key, batching the keys of concurrent callers into one lookup.
pub struct Coalesced<K, V> {
    shared: Arc<Shared<K, V>>,
}

struct Shared<K, V> {
    queue: Mutex<Queue<K, V>>,
    lookup: Box<Lookup<K, V>>,
    /// Where rounds run: the runtime the lookup was made on (the process's main one), not
    /// the HTTP worker whose request starts a round, which may stop first at shutdown.
    runtime: Option<tokio::runtime::Handle>,
}

/// Longest a round may take: every caller of the process waits on it, so one that hangs (a
/// half-open connection, a lock) must end as a 503 rather than hold them all.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

struct Queue<K, V> {
    waiting: Vec<(K, oneshot::Sender<Answer<V>>)>,
    round_running: bool,
}

impl<K, V> Shared<K, V> {
    /// The queue holds no invariant a panic elsewhere could break: a poisoned lock is as
    /// good as any.
    fn queue(&self) -> MutexGuard<'_, Queue<K, V>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V> Coalesced<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// `lookup` answers a round: the value of each key that has one (absent keys have none).
    pub fn new<F, Fut>(lookup: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, ApiError>> + Send + 'static,
    {
        Coalesced {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    waiting: Vec::new(),
                    round_running: false,
                }),
                lookup: Box::new(move |keys| lookup(keys).boxed()),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    /// The value of `key` as the database holds it now (at some moment after this call).
    pub async fn get(&self, key: K) -> Answer<V> {
        let (sender, receiver) = oneshot::channel();
        let start_rounds = {
            let mut queue = self.shared.queue();
            queue.waiting.push((key, sender));
            !std::mem::replace(&mut queue.round_running, true)
        };
        if start_rounds {
            // A task of its own: a request that goes away must not strand the others.
            let rounds = run_rounds(RoundsRunning {
                shared: self.shared.clone(),
                finished: false,
            });
            match &self.shared.runtime {
                Some(runtime) => drop(runtime.spawn(rounds)),
                None => drop(tokio::spawn(rounds)),
            }
        }
        receiver
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("the lookup was abandoned; try again")))
    }
}

/// Marks the rounds task as running; if it ends abnormally (a panic, its runtime shutting
/// down) the next caller starts another, and the waiting callers get an error, not silence.
struct RoundsRunning<K, V> {
    shared: Arc<Shared<K, V>>,
    finished: bool,
}

impl<K, V> Drop for RoundsRunning<K, V> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut queue = self.shared.queue();
        queue.round_running = false;
        // Dropping the senders answers their callers.
        queue.waiting.clear();
    }
}

async fn run_rounds<K, V>(mut running: RoundsRunning<K, V>)
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    let shared = running.shared.clone();
    loop {
        let waiting = {
            let mut queue = shared.queue();
            if queue.waiting.is_empty() {
                // Under the lock: a caller queued after this starts the next task.
                queue.round_running = false;
                running.finished = true;
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        let keys: Vec<K> = waiting
            .iter()
            .map(|(key, _)| key)
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let found = tokio::time::timeout(ROUND_TIMEOUT, (shared.lookup)(keys))
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("the database did not answer in time")));
        for (key, sender) in waiting {
            let answer = match &found {
                Ok(values) => Ok(values.get(&key).cloned()),
                Err(e) => Err(e.clone()),
            };
            // A caller that went away needs no answer.
            let _ = sender.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_a_round_and_each_gets_its_own_value() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = rounds.clone();
        let doubled = Arc::new(Coalesced::new(move |keys: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys
                    .into_iter()
                    .filter(|k| *k != 7)
                    .map(|k| (k, k * 2))
                    .collect())
            }
        }));
        let callers: Vec<_> = (0..50u32)
            .map(|i| {
                let doubled = doubled.clone();
                tokio::spawn(async move { (i % 10, doubled.get(i % 10).await) })
            })
            .collect();
        for caller in callers {
            let (key, answer) = caller.await.unwrap();
            let expected = (key != 7).then_some(key * 2);
            assert_eq!(answer.unwrap(), expected);
        }
        // The first caller's round, then one for everyone who queued behind it (maybe a
        // few more, as the spawned callers start), never one per caller.
        assert!(rounds.load(Ordering::SeqCst) < 10, "{rounds:?} rounds");
    }

    #[tokio::test]
    async fn a_caller_queued_during_a_round_waits_for_the_next_one() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (gate_in, counted) = (gate.clone(), rounds.clone());
        let lookup = Arc::new(Coalesced::new(move |keys: Vec<u32>| {
            let round = counted.fetch_add(1, Ordering::SeqCst);
            let gate = gate_in.clone();
            async move {
                let _ = gate.acquire().await.map(|p| p.forget());
                Ok(keys.into_iter().map(|k| (k, round)).collect())
            }
        }));
        let first = tokio::spawn({
            let lookup = lookup.clone();
            async move { lookup.get(1).await }
        });
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Round 0 is running: a caller arriving now may have missed what it read.
        let second = tokio::spawn({
            let lookup = lookup.clone();
            async move { lookup.get(1).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), Some(0));
        assert_eq!(second.await.unwrap().unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_callers_and_the_next_round_runs() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = fail.clone();
        let lookup = Coalesced::new(move |keys: Vec<u32>| {
            let fail = failing.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(ApiError::unavailable("database down"))
                } else {
                    Ok(keys.into_iter().map(|k| (k, k)).collect())
                }
            }
        });
        assert!(lookup.get(3).await.unwrap_err().is_unavailable());
        fail.store(false, Ordering::SeqCst);
        assert_eq!(lookup.get(3).await.unwrap(), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_that_hangs_ends_as_unavailable_and_the_next_round_runs() {
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hanging = hang.clone();
        let lookup = Coalesced::new(move |keys: Vec<u32>| {
            let hang = hanging.swap(false, Ordering::SeqCst);
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(keys.into_iter().map(|k| (k, k)).collect())
            }
        });
        assert!(lookup.get(4).await.unwrap_err().is_unavailable());
        assert_eq!(lookup.get(4).await.unwrap(), Some(4));
    }

    #[tokio::test]
    async fn a_panicking_round_answers_its_callers_and_does_not_stop_later_rounds() {
        let panics = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let panicking = panics.clone();
        let lookup = Coalesced::new(move |keys: Vec<u32>| {
            let panic = panicking.swap(false, Ordering::SeqCst);
            async move {
                assert!(!panic, "a lookup that panics");
                Ok(keys.into_iter().map(|k| (k, k)).collect())
            }
        });
        assert!(lookup.get(5).await.is_err());
        assert_eq!(lookup.get(5).await.unwrap(), Some(5));
    }
}
