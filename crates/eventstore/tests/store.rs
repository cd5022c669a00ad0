//! The event store against a real PostgreSQL, one fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use eventstore::testing::{sealed_history, whole_log, TestDatabase, UNDO_V9_SQL};
use eventstore::{
    AppendError, EventStore, ExpectedVersion, LoggedEvent, Metadata, NewEvent, Subscription,
    SubscriptionOptions,
};
use futures_util::FutureExt;
use serde_json::json;
use uuid::Uuid;

fn event(n: u64) -> NewEvent {
    NewEvent::new("thing.happened", json!({ "n": n }), Metadata::by("tester"))
}

async fn admin_client(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_are_read_back_forwards_and_backwards_with_their_metadata() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let mut events: Vec<NewEvent> = (1..=3).map(event).collect();
    events[1].metadata = Metadata {
        actor: "key-1".into(),
        request_id: Some("req-7".into()),
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
    };
    events[2].schema_version = 2;
    let outcome = store
        .append("incident-1", ExpectedVersion::NoStream, &events)
        .await
        .expect("append");
    assert_eq!(
        (
            outcome.first_version,
            outcome.stream_version,
            outcome.already_stored
        ),
        (1, 3, false)
    );

    let forward = store
        .read_stream_forward("incident-1", 2, 10)
        .await
        .expect("read");
    assert_eq!(
        forward.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(forward[0].metadata, events[1].metadata);
    assert_eq!(
        forward[0].data.decode::<serde_json::Value>().unwrap(),
        json!({ "n": 2 })
    );
    assert_eq!(forward[1].schema_version, 2);
    assert_eq!(forward[0].event_id, events[1].event_id);

    let backward = store
        .read_stream_backward("incident-1", u64::MAX, 2)
        .await
        .expect("read");
    assert_eq!(
        backward
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        vec![3, 2]
    );
    assert_eq!(
        store.stream_version("incident-1").await.expect("version"),
        3
    );
    assert_eq!(
        store.stream_version("nothing-here").await.expect("version"),
        0
    );

    let report = store.seal_all(Duration::from_secs(10)).await.expect("seal");
    assert_eq!((report.sealed, report.head), (3, 3));
    let log = whole_log(&store).await;
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(log[0].prev_hash, eventstore::Hash::GENESIS);
    assert_eq!(log[1].prev_hash, log[0].hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expected_version_appends_nothing_and_tells_the_current_version() {
    let db = TestDatabase::create().await;
    let store = db.store();
    store
        .append("s", ExpectedVersion::NoStream, &[event(1), event(2)])
        .await
        .expect("first append");

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
        ExpectedVersion::Exact(0),
    ] {
        match store.append("s", expected, &[event(9)]).await {
            Err(AppendError::WrongExpectedVersion {
                current, stream_id, ..
            }) => {
                assert_eq!((current, stream_id.as_str()), (2, "s"));
            }
            other => panic!("expected a conflict for {expected:?}, got {other:?}"),
        }
    }
    match store
        .append("other", ExpectedVersion::StreamExists, &[event(1)])
        .await
    {
        Err(AppendError::WrongExpectedVersion { current: 0, .. }) => {}
        other => panic!("expected a conflict on a missing stream, got {other:?}"),
    }
    assert_eq!(store.stream_version("s").await.expect("version"), 2);
    assert_eq!(store.stream_version("other").await.expect("version"), 0);

    let outcome = store
        .append("s", ExpectedVersion::Exact(2), &[event(3)])
        .await
        .expect("append at the right version");
    assert_eq!(outcome.stream_version, 3);
    let outcome = store
        .append("s", ExpectedVersion::StreamExists, &[event(4)])
        .await
        .expect("append to an existing stream");
    assert_eq!(outcome.stream_version, 4);
}

/// A process that knows version N exists appends at N without probing for it: the unique
/// index must still refuse a stream that another process moved on, and a version the
/// process does not know is still probed, so no append leaves a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_at_versions_known_to_exist_still_refuse_a_stream_that_moved_on() {
    let db = TestDatabase::create().await;
    // Two processes: each knows only what it appended or read itself.
    let (this, other) = (db.store(), db.store());
    let conflict = |result: Result<eventstore::AppendOutcome, AppendError>| match result {
        Err(AppendError::WrongExpectedVersion { current, .. }) => current,
        other => panic!("expected a conflict, got {other:?}"),
    };
    this.append(
        "s",
        ExpectedVersion::NoStream,
        &[event(1), event(2), event(3)],
    )
    .await
    .expect("first append");
    other
        .append("s", ExpectedVersion::Exact(3), &[event(4)])
        .await
        .expect("the other process appends version 4");

    // Versions 3 and 2 are known here; the stream is at 4.
    let single = this
        .append("s", ExpectedVersion::Exact(3), &[event(9)])
        .await;
    assert_eq!(conflict(single), 4);
    let batch = this
        .append("s", ExpectedVersion::Exact(2), &[event(9), event(10)])
        .await;
    assert_eq!(conflict(batch), 4);
    // Beyond anything known: probed, so no gap.
    let beyond = this
        .append("s", ExpectedVersion::Exact(6), &[event(9)])
        .await;
    assert_eq!(conflict(beyond), 4);

    // The conflict taught this process version 4; a retry of a known-path append is
    // recognised.
    let events = [event(5), event(6)];
    let outcome = this
        .append("s", ExpectedVersion::Exact(4), &events)
        .await
        .expect("append at the version learnt from the conflict");
    assert_eq!((outcome.first_version, outcome.stream_version), (5, 6));
    let retry = this
        .append("s", ExpectedVersion::Exact(4), &events)
        .await
        .expect("retry");
    assert!(retry.already_stored);
    assert_eq!((retry.first_version, retry.stream_version), (5, 6));
    let stale = other
        .append("s", ExpectedVersion::Exact(4), &[event(9)])
        .await;
    assert_eq!(conflict(stale), 6);

    let stream = other.read_stream_forward("s", 1, 100).await.expect("read");
    let versions_and_numbers: Vec<(u64, u64)> = stream
        .iter()
        .map(|e| {
            (
                e.stream_version,
                e.data.decode::<serde_json::Value>().unwrap()["n"]
                    .as_u64()
                    .unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        versions_and_numbers,
        [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
        "contiguous versions, nothing from the refused appends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_is_stored_once_and_says_so() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let batch = vec![event(1), event(2)];
    let first = store
        .append("s", ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    assert!(!first.already_stored);
    store
        .append("s", ExpectedVersion::Any, &[event(3)])
        .await
        .expect("another append");

    // The retry carries the expected version of the first attempt: it must not conflict.
    let retry = store
        .append("s", ExpectedVersion::NoStream, &batch)
        .await
        .expect("retry");
    assert!(retry.already_stored);
    assert_eq!((retry.first_version, retry.stream_version), (1, 3));
    assert_eq!(store.stream_version("s").await.expect("version"), 3);

    // The same event id with other content, or in another stream, is refused.
    let mut changed = batch[0].clone();
    changed.data = json!({ "n": 100 });
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, &[changed]).await,
        Err(AppendError::EventIdReused { event_id }) if event_id == batch[0].event_id
    ));
    assert!(matches!(
        store
            .append("elsewhere", ExpectedVersion::Any, &[batch[1].clone()])
            .await,
        Err(AppendError::EventIdReused { .. })
    ));
    // A batch mixing a stored event with a new one is not a retry either.
    assert!(matches!(
        store
            .append("s", ExpectedVersion::Any, &[batch[0].clone(), event(4)])
            .await,
        Err(AppendError::EventIdReused { .. })
    ));
    assert_eq!(store.stream_version("s").await.expect("version"), 3);
    assert_eq!(store.stream_version("elsewhere").await.expect("version"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_retries_store_the_events_once() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let batch = vec![event(1), event(2), event(3)];
    let attempts = (0..16).map(|_| {
        let store = store.clone();
        let batch = batch.clone();
        tokio::spawn(async move { store.append("s", ExpectedVersion::NoStream, &batch).await })
    });
    let mut fresh = 0;
    for attempt in attempts {
        let outcome = attempt
            .await
            .expect("task")
            .expect("every attempt succeeds");
        assert_eq!((outcome.first_version, outcome.stream_version), (1, 3));
        fresh += usize::from(!outcome.already_stored);
    }
    assert_eq!(fresh, 1, "exactly one attempt stored the events");
    assert_eq!(
        store
            .read_stream_forward("s", 1, 100)
            .await
            .expect("read")
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_writers_racing_on_one_stream_get_exactly_one_winner_per_version() {
    let db = TestDatabase::create().await;
    let store = db.store();
    const WRITERS: usize = 32;
    const VERSIONS: u64 = 10;
    for version in 0..VERSIONS {
        let racers = (0..WRITERS).map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let e = NewEvent::new("raced", json!({ "writer": writer }), Metadata::by("t"));
                store
                    .append("contested", ExpectedVersion::Exact(version), &[e])
                    .await
            })
        });
        let mut winners = 0;
        for racer in racers {
            match racer.await.expect("task") {
                Ok(outcome) => {
                    winners += 1;
                    assert_eq!(outcome.stream_version, version + 1);
                }
                Err(AppendError::WrongExpectedVersion { current, .. }) => {
                    assert_eq!(current, version + 1, "a loser is told the winner's version");
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners, 1, "version {} had {winners} winners", version + 1);
    }

    // Writers that accept any version all get in, each at its own version.
    let writers = (0..WRITERS).map(|writer| {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..5u64 {
                let e = NewEvent::new(
                    "any",
                    json!({ "writer": writer, "n": n }),
                    Metadata::by("t"),
                );
                store
                    .append("contested", ExpectedVersion::Any, &[e])
                    .await
                    .expect("append with any version");
            }
        })
    });
    for writer in writers {
        writer.await.expect("task");
    }
    let stream = store
        .read_stream_forward("contested", 1, 10_000)
        .await
        .expect("read");
    let versions: Vec<u64> = stream.iter().map(|e| e.stream_version).collect();
    let expected: Vec<u64> = (1..=VERSIONS + WRITERS as u64 * 5).collect();
    assert_eq!(versions, expected, "versions are dense and unique");
}

/// Collects `count` events from a subscription.
async fn collect(mut subscription: Subscription, count: usize) -> Vec<LoggedEvent> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let batch = tokio::time::timeout(Duration::from_secs(60), subscription.next_batch())
            .await
            .expect("subscriber starved")
            .expect("subscriber read");
        seen.extend(batch);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_event_of_concurrent_writers_once_in_one_agreed_order() {
    let db = TestDatabase::create().await;
    // Two handles on one database stand for two crier processes, each with its own sealer.
    let store_a = db.store();
    let store_b = db.store();
    let stop = eventstore::CancellationToken::new();
    let background_a = store_a.spawn_background(stop.clone());
    let background_b = store_b.spawn_background(stop.clone());

    const WRITERS: usize = 32;
    const EACH: usize = 40;
    const TOTAL: usize = WRITERS * EACH;
    let follower_a = tokio::spawn(collect(
        Subscription::from_position(&store_a, 0, SubscriptionOptions { batch_size: 37 }),
        TOTAL,
    ));
    let follower_b = tokio::spawn(collect(
        Subscription::from_position(&store_b, 0, SubscriptionOptions::default()),
        TOTAL,
    ));

    let writers = (0..WRITERS).map(|writer| {
        let store = if writer % 2 == 0 {
            store_a.clone()
        } else {
            store_b.clone()
        };
        tokio::spawn(async move {
            let stream = format!("stream-{writer}");
            let mut ids = Vec::new();
            for n in 0..EACH {
                let e = NewEvent::new("w", json!({ "writer": writer, "n": n }), Metadata::by("t"));
                ids.push(e.event_id);
                // Some single events, some pairs in one append.
                store
                    .append(&stream, ExpectedVersion::Exact(n as u64), &[e])
                    .await
                    .expect("append");
            }
            ids
        })
    });
    let mut written = HashSet::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }

    let seen_a = follower_a.await.expect("follower a");
    let seen_b = follower_b.await.expect("follower b");
    stop.cancel();
    background_a.join().await;
    background_b.join().await;

    let ids_a: Vec<Uuid> = seen_a.iter().map(|e| e.event.event_id).collect();
    let ids_b: Vec<Uuid> = seen_b.iter().map(|e| e.event.event_id).collect();
    assert_eq!(ids_a, ids_b, "every reader sees one order");
    assert_eq!(
        ids_a.iter().copied().collect::<HashSet<_>>(),
        written,
        "every event seen"
    );
    assert_eq!(ids_a.len(), TOTAL, "no event seen twice");
    let positions: Vec<u64> = seen_a.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=TOTAL as u64).collect::<Vec<_>>());
    // Each stream's events appear in stream order.
    let mut last_version: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &seen_a {
        let previous = last_version.insert(&e.event.stream_id, e.event.stream_version);
        assert_eq!(previous.unwrap_or(0) + 1, e.event.stream_version);
    }
    let report = store_a.verify().await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, TOTAL as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_later_by_an_older_transaction_is_never_placed_before_a_seen_position() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let mut client = store.pool().get().await.expect("client");

    // An older transaction appends and stays open...
    let mut older = client.transaction().await.expect("begin");
    store
        .append_in_transaction(&mut older, "older", ExpectedVersion::NoStream, &[event(1)])
        .await
        .expect("append in transaction");
    // ...while a younger one appends and commits.
    store
        .append("younger", ExpectedVersion::NoStream, &[event(2)])
        .await
        .expect("append");

    let report = store.seal_pending().await.expect("seal");
    assert_eq!(
        report.sealed, 0,
        "nothing may be sealed while an older writer is open"
    );
    assert!(report.waiting_for_older_transactions);
    assert!(store.read_log(0, 10).await.expect("read").is_empty());

    older.commit().await.expect("commit");
    let report = store.seal_all(Duration::from_secs(10)).await.expect("seal");
    assert_eq!(report.sealed, 2);
    let log = whole_log(&store).await;
    let streams: Vec<&str> = log.iter().map(|e| e.event.stream_id.as_str()).collect();
    assert_eq!(streams, vec!["older", "younger"], "ordered by transaction");
}

/// Waits until this process knows the log reaches `position`; how long that took.
async fn time_to_seal(store: &EventStore, position: u64) -> Duration {
    let started = std::time::Instant::now();
    let mut head = store.watch_log_head();
    tokio::time::timeout(Duration::from_secs(20), head.wait_for(|h| *h >= position))
        .await
        .expect("sealed in time")
        .expect("sealer alive");
    started.elapsed()
}

/// Under steady appends the sealer runs at most one seal per `seal_interval`, yet an append
/// after a quiet moment (idle polls included) is sealed after `seal_delay` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seal_interval_gathers_steady_appends_without_delaying_one_after_a_quiet_moment() {
    let db = TestDatabase::create().await;
    let mut config = db.config();
    config.seal_interval = Duration::from_secs(3);
    // No poll during the test (a poll seals what it finds at once): only the seal at start,
    // which links nothing and so imposes no wait.
    config.poll_interval = Duration::from_secs(60);
    let store = EventStore::connect(config).expect("store");
    let stop = eventstore::CancellationToken::new();
    let background = store.spawn_background(stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    store
        .append("s", ExpectedVersion::NoStream, &[event(1)])
        .await
        .expect("append");
    let quiet = time_to_seal(&store, 1).await;
    assert!(
        quiet < Duration::from_secs(2),
        "a lone append waited {quiet:?}"
    );

    // Right behind it: gathered until the interval since that seal has passed.
    store
        .append("s", ExpectedVersion::Exact(1), &[event(2)])
        .await
        .expect("append");
    let steady = time_to_seal(&store, 2).await;
    assert!(
        steady > Duration::from_secs(1),
        "an append right after a seal was sealed after {steady:?}, within the interval"
    );

    stop.cancel();
    background.join().await;
    let versions: Vec<u64> = whole_log(&store)
        .await
        .iter()
        .map(|e| e.event.stream_version)
        .collect();
    assert_eq!(versions, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_polling_during_concurrent_writes_never_finds_an_event_behind_what_it_saw() {
    follow_the_log_while_sixteen_writers_append(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reading_ahead_during_concurrent_writes_sees_what_one_read_at_a_time_sees() {
    follow_the_log_while_sixteen_writers_append(true).await;
}

/// Follows the log, one read at a time or with reads ahead in small batches (so that reads
/// ahead race the sealer at the head), while sixteen writers append; then checks that what
/// was seen along the way is the whole log as read afterwards.
async fn follow_the_log_while_sixteen_writers_append(reading_ahead: bool) {
    let db = TestDatabase::create().await;
    let store = db.store();
    let mut reader = store.log_reader(0, 7);
    let stop = eventstore::CancellationToken::new();
    let background = store.spawn_background(stop.clone());
    const WRITERS: usize = 16;
    const EACH: usize = 30;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let batch: Vec<NewEvent> = (0..(n % 3 + 1) as u64).map(event).collect();
                    store
                        .append(&format!("w{writer}"), ExpectedVersion::Any, &batch)
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    // Remember everything seen, by repeatedly reading from the last seen position.
    let mut seen: Vec<LoggedEvent> = Vec::new();
    let expected_total: usize = WRITERS * (0..EACH).map(|n| n % 3 + 1).sum::<usize>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected_total && tokio::time::Instant::now() < deadline {
        if reading_ahead {
            seen.extend(reader.next_batch().await.expect("read"));
        } else {
            let after = seen.last().map_or(0, |e| e.position);
            seen.extend(store.read_log(after, 100).await.expect("read"));
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    stop.cancel();
    background.join().await;
    // Afterwards, the full log must equal what was seen along the way: nothing slipped in.
    let full = whole_log(&store).await;
    assert_eq!(full.len(), expected_total);
    assert_eq!(seen, full);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_to_update_delete_or_truncate_history_even_for_its_owner() {
    let db = TestDatabase::create().await;
    let store = db.store();
    store
        .append("s", ExpectedVersion::Any, &[event(1)])
        .await
        .expect("append");
    store.seal_all(Duration::from_secs(10)).await.expect("seal");
    // The test connects as the superuser that owns the tables.
    let client = admin_client(&db).await;
    for statement in [
        "UPDATE events SET data = '{\"n\": 2}'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
        "UPDATE log_seals SET hashes = hashes",
        "DELETE FROM log_seals",
        "TRUNCATE log_seals",
        // The log as kept before one row per seal (V9): frozen and still protected (empty
        // here, so that only its statement trigger has anything to refuse).
        "TRUNCATE event_log",
    ] {
        let err = client
            .batch_execute(statement)
            .await
            .expect_err(&format!("{statement} must be refused"));
        let message = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains("append-only"), "{statement}: {err:?}");
    }
    let row = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 1);
    let row = client
        .query_one("SELECT data FROM events", &[])
        .await
        .expect("data");
    assert_eq!(row.get::<_, serde_json::Value>(0), json!({ "n": 1 }));
}

/// A forgery of the log written against a table `links` that holds it one row per link
/// (`log_links`' columns), after which the log is rewritten from `links`, as one seal.
fn relinked(forgery: &str) -> String {
    format!(
        "CREATE TEMP TABLE links AS SELECT * FROM log_links(0, 1000000); \
         {forgery}; \
         DELETE FROM log_seals; \
         INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
         SELECT min(position), array_agg(transaction_id ORDER BY position), \
                array_agg(seq ORDER BY position), (array_agg(prev_hash ORDER BY position))[1], \
                array_agg(hash ORDER BY position) \
           FROM links"
    )
}

/// Positions up to the largest bigint are valid `after`s (the API takes them from clients):
/// the range's end saturates there rather than overflowing in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_log_after_a_position_near_the_largest_answers_nothing() {
    let db = TestDatabase::create().await;
    let store = db.store();
    sealed_history(&store, 3).await;
    let largest = i64::MAX as u64;
    for after in [largest - 5_000, largest - 1, largest, u64::MAX] {
        let read = store.read_log(after, 5_000).await.expect("read");
        assert!(read.is_empty(), "after {after}: {read:?}");
        let mut reader = store.log_reader(after, 5_000);
        assert!(reader.next_batch().await.expect("read").is_empty());
    }
    assert_eq!(store.read_log(0, 5_000).await.expect("read").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_answers_what_one_read_at_a_time_answers_and_follows_new_seals() {
    let db = TestDatabase::create().await;
    let store = db.store();
    sealed_history(&store, 1_234).await;
    let serial = whole_log(&store).await;

    for after in [0, 1, 600, 1_199, 1_234, 5_000] {
        let mut reader = store.log_reader(after, 100);
        let mut read = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let batch = reader.next_batch().await.expect("read");
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            read.extend(batch);
        }
        let skipped = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(serial.len());
        assert_eq!(read, serial[skipped..], "reading after {after}");
        assert!(
            sizes.iter().rev().skip(1).all(|&size| size == 100),
            "only the last batch is short: {sizes:?}"
        );
        assert_eq!(reader.position(), after.max(1_234));
    }

    // A call dropped while its read is in flight (a timeout, a `select!`) loses nothing:
    // each of these calls is polled once, while its read cannot have answered, and dropped.
    let mut reader = store.log_reader(0, 100);
    let mut read = Vec::new();
    for _ in 0..3 {
        if let Some(batch) = reader.next_batch().now_or_never() {
            read.extend(batch.expect("read"));
        }
    }
    loop {
        let batch = reader.next_batch().await.expect("read");
        if batch.is_empty() {
            break;
        }
        read.extend(batch);
    }
    assert_eq!(read, serial);

    // At the head, a reader answers nothing until more is sealed, then goes on from there.
    let mut reader = store.log_reader(0, 500);
    while !reader.next_batch().await.expect("read").is_empty() {}
    assert!(reader.next_batch().await.expect("read").is_empty());
    for n in 1..=3 {
        store
            .append("later", ExpectedVersion::Any, &[event(n)])
            .await
            .expect("append");
    }
    store.seal_all(Duration::from_secs(10)).await.expect("seal");
    let more = reader.next_batch().await.expect("read");
    assert_eq!(
        more.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1_235, 1_236, 1_237]
    );
    assert_eq!(reader.position(), 1_237);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accepts_an_untouched_history() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let empty = store.verify().await.expect("verify");
    assert!(empty.ok && empty.checked == 0 && empty.head.is_none());
    sealed_history(&store, 25).await;
    let report = store.verify().await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 25);
    let (head_position, head_hash) = store.log_head().await.expect("head").expect("some");
    let head = report.head.expect("head");
    assert_eq!(
        (head.position, head.hash),
        (head_position, head_hash.to_hex())
    );
    assert_eq!(report.unsealed, 0);
}

async fn assert_forgery_found(statement: &str, bad_position: u64) {
    let db = TestDatabase::create().await;
    let store = db.store();
    sealed_history(&store, 12).await;
    db.forge(statement).await;
    let report = store.verify().await.expect("verify");
    assert!(!report.ok, "{statement}: not detected: {report:?}");
    assert_eq!(
        report.first_bad_position,
        Some(bad_position),
        "{statement}: {report:?}"
    );
    assert_eq!(report.checked, bad_position - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_position_of_forged_data() {
    assert_forgery_found(
        "UPDATE events SET data = '{\"n\": 700}' WHERE seq = (SELECT seq FROM log_links(6, 1))",
        7,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_position_of_forged_metadata_even_an_added_key() {
    assert_forgery_found(
        "UPDATE events SET metadata = metadata || '{\"note\": \"x\"}' WHERE seq = (SELECT seq FROM log_links(3, 1))",
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_position_of_a_forged_time_type_or_version() {
    assert_forgery_found(
        "UPDATE events SET recorded_at = recorded_at + interval '1 microsecond' WHERE seq = (SELECT seq FROM log_links(8, 1))",
        9,
    )
    .await;
    assert_forgery_found(
        "UPDATE events SET event_type = 'other' WHERE seq = (SELECT seq FROM log_links(1, 1))",
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_position_of_a_deleted_or_reordered_row() {
    // A link taken out of its seal moves every later event one position down.
    assert_forgery_found(&relinked("DELETE FROM links WHERE position = 5"), 5).await;
    // A seal whose arrays are not all as long as its positions.
    assert_forgery_found(
        "UPDATE log_seals SET hashes = hashes[:9 - first_position + 1] \
          WHERE 10 BETWEEN first_position AND last_position",
        10,
    )
    .await;
    assert_forgery_found(
        "UPDATE log_seals SET transaction_ids = transaction_ids[:7 - first_position + 1] \
          WHERE 8 BETWEEN first_position AND last_position",
        8,
    )
    .await;
    // A seal that starts past the end of the one before leaves a hole, however far.
    for first in [14, 100_000] {
        assert_forgery_found(
            &format!(
                "INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
                 VALUES ({first}, ARRAY['1'::xid8], ARRAY[-1::bigint], sha256(''), ARRAY[sha256('')])"
            ),
            13,
        )
        .await;
    }
    // A seal whose arrays cannot be read as a list (two-dimensional), after good ones, and a
    // seal that starts before position 1: named, not an error.
    assert_forgery_found(
        "INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
         VALUES (13, ARRAY['1'::xid8], ARRAY[-1::bigint], sha256(''), \
                 ARRAY[[sha256('')], [sha256('')]])",
        13,
    )
    .await;
    assert_forgery_found(
        "INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
         VALUES (-5, ARRAY['1'::xid8], ARRAY[-1::bigint], sha256(''), ARRAY[sha256('')])",
        1,
    )
    .await;
    // Two seals that link one position.
    assert_forgery_found(
        &format!(
            "{}; INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes) \
             VALUES (12, ARRAY['1'::xid8], ARRAY[-1::bigint], sha256(''), ARRAY[sha256('')])",
            relinked("SELECT 1")
        ),
        12,
    )
    .await;
    // A transaction id past the seal's last position: no position covers it, but the
    // sealer would resume from it.
    assert_forgery_found(
        "UPDATE log_seals SET transaction_ids = transaction_ids || '99999999'::xid8 \
          WHERE first_position = (SELECT max(first_position) FROM log_seals)",
        13,
    )
    .await;
    // A deleted event leaves its log row pointing at nothing.
    assert_forgery_found(
        "DELETE FROM events WHERE seq = (SELECT seq FROM log_links(5, 1))",
        6,
    )
    .await;
    // Two events swapped in the global order.
    assert_forgery_found(
        &relinked(
            "CREATE TEMP TABLE swap AS SELECT \
                (SELECT seq FROM links WHERE position = 3) AS a, \
                (SELECT seq FROM links WHERE position = 8) AS b; \
             UPDATE links SET seq = (SELECT b FROM swap) WHERE position = 3; \
             UPDATE links SET seq = (SELECT a FROM swap) WHERE position = 8",
        ),
        3,
    )
    .await;
}

/// A second event row under a linked `seq`, which only a dropped primary key allows: whichever
/// of the two the database returns first, verification does not pass the position. (The
/// genuine row is rewritten after the forged one, so that a scan of the table meets it last.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_second_event_row_forged_under_a_linked_seq() {
    let db = TestDatabase::create().await;
    let store = db.store();
    sealed_history(&store, 12).await;
    db.forge(
        "ALTER TABLE events DROP CONSTRAINT events_pkey; \
         INSERT INTO events (seq, transaction_id, stream_id, stream_version, event_id, \
                             event_type, schema_version, data, metadata, recorded_at, \
                             content_hash) OVERRIDING SYSTEM VALUE \
         SELECT seq, transaction_id, 'forged', stream_version, gen_random_uuid(), event_type, \
                schema_version, '{\"n\": 400}', metadata, recorded_at, content_hash \
           FROM events WHERE seq = (SELECT seq FROM log_links(3, 1)); \
         UPDATE events SET data = data \
          WHERE seq = (SELECT seq FROM log_links(3, 1)) AND stream_id <> 'forged'",
    )
    .await;
    let report = store.verify().await.expect("verify");
    assert!(!report.ok, "not detected: {report:?}");
    assert!(
        matches!(report.first_bad_position, Some(4 | 5)),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_killed_mid_batch_resumes_from_its_checkpoint_without_gap_or_repeat() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let client = admin_client(&db).await;
    client
        .batch_execute("CREATE TABLE seen (position bigint NOT NULL, event_id uuid NOT NULL)")
        .await
        .expect("create effects table");
    sealed_history(&store, 300).await;

    // The subscriber's effect and its checkpoint commit in one transaction.
    async fn run(store: EventStore) {
        let mut subscription =
            Subscription::resume(&store, "counter", SubscriptionOptions { batch_size: 7 })
                .await
                .expect("resume");
        loop {
            let batch = subscription.next_batch().await.expect("batch");
            let mut client = store.pool().get().await.expect("client");
            let tx = client.transaction().await.expect("begin");
            for e in &batch {
                tx.execute(
                    "INSERT INTO seen (position, event_id) VALUES ($1, $2)",
                    &[&(e.position as i64), &e.event.event_id],
                )
                .await
                .expect("effect");
                tokio::task::yield_now().await;
            }
            eventstore::save_checkpoint(&tx, "counter", subscription.position())
                .await
                .expect("checkpoint");
            tx.commit().await.expect("commit");
        }
    }

    // Kill it at arbitrary moments, then let it finish.
    for delay_ms in [3u64, 11, 5, 17, 2, 23] {
        let task = tokio::spawn(run(store.clone()));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        task.abort();
        let _ = task.await;
    }
    let task = tokio::spawn(run(store.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = client
            .query_one("SELECT count(*) FROM seen", &[])
            .await
            .expect("count");
        if row.get::<_, i64>(0) >= 300 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let rows = client
        .query("SELECT position FROM seen ORDER BY position", &[])
        .await
        .expect("seen");
    let positions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        positions,
        (1..=300).collect::<Vec<i64>>(),
        "each event exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_gives_a_clear_unavailable_error() {
    let mut config = eventstore::StoreConfig::new("postgres://postgres@127.0.0.1:1/crier");
    config.connect_timeout = Duration::from_secs(2);
    let store = EventStore::connect(config).expect("config is valid");
    let err = store
        .append("s", ExpectedVersion::Any, &[event(1)])
        .await
        .expect_err("no database there");
    assert!(
        matches!(&err, AppendError::Store(e) if e.is_unavailable()),
        "{err:?}"
    );
    assert!(store.ready().await.expect_err("not ready").is_unavailable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_round_trips_through_jsonb_still_verifies_and_nul_characters_are_refused() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let awkward = json!({
        "floats": [0.1, 1.5, -0.0, 1e300, 2.5e-8, 100.0],
        "ints": [0, -1, 9_007_199_254_740_991u64, -9_007_199_254_740_991i64],
        "text": "é 漢字 🙂 \" \\ \n \u{1f}",
        "nested": { "b": [], "a": {}, "": null, "ü": true },
    });
    let e = NewEvent::new("awkward", awkward.clone(), Metadata::by("t"));
    store
        .append("s", ExpectedVersion::Any, &[e])
        .await
        .expect("append");
    store.seal_all(Duration::from_secs(10)).await.expect("seal");
    let report = store.verify().await.expect("verify");
    assert!(report.ok, "{report:?}");

    let nul = NewEvent::new("nul", json!({ "text": "a\u{0}b" }), Metadata::by("t"));
    match store.append("s", ExpectedVersion::Any, &[nul]).await {
        Err(AppendError::Invalid(message)) => assert!(!message.is_empty()),
        other => panic!("a NUL character must be refused as invalid input, got {other:?}"),
    }
    assert_eq!(store.stream_version("s").await.expect("version"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_beyond_what_a_double_holds_exactly_are_refused() {
    let db = TestDatabase::create().await;
    let store = db.store();
    for big in [
        json!(9_007_199_254_740_992u64),
        json!({ "a": [-9_007_199_254_740_993i64] }),
    ] {
        let e = NewEvent::new("big", big.clone(), Metadata::by("t"));
        assert!(
            matches!(
                store.append("s", ExpectedVersion::Any, &[e]).await,
                Err(AppendError::Invalid(_))
            ),
            "{big} must be refused"
        );
    }
    let edge = NewEvent::new(
        "edge",
        json!([9_007_199_254_740_991u64, -9_007_199_254_740_991i64]),
        Metadata::by("t"),
    );
    store
        .append("s", ExpectedVersion::Any, &[edge])
        .await
        .expect("2^53 - 1 is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_forged_transaction_id_that_would_make_the_sealer_skip_events() {
    assert_forgery_found(
        &relinked(
            "UPDATE links SET transaction_id = (transaction_id::text::bigint + 1000)::text::xid8 \
              WHERE position = 12",
        ),
        12,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_an_event_slipped_in_behind_the_chain_head() {
    // A row written straight into `events` with an old transaction id sorts before every
    // linked event: the sealer will never link it, and verify must say so.
    assert_forgery_found(
        "INSERT INTO events (transaction_id, stream_id, stream_version, event_id, event_type, \
             schema_version, data, metadata, content_hash) \
         VALUES ('3'::xid8, 'intruder', 1, gen_random_uuid(), 'x', 1, '{}', '{\"actor\": \"x\"}', '\\x00')",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_commit_synchronously_even_when_the_database_default_is_asynchronous() {
    let db = TestDatabase::create().await;
    admin_client(&db)
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET synchronous_commit = off",
            db.name
        ))
        .await
        .expect("alter database");
    let store = db.store();
    let client = store.pool().get().await.expect("client");
    let row = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show");
    assert_eq!(row.get::<_, String>(0), "on");
    drop(client);

    let mut client = store.pool().get().await.expect("client");
    let mut tx = client.transaction().await.expect("begin");
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .expect("caller's choice");
    store
        .append_in_transaction(&mut tx, "s", ExpectedVersion::Any, &[event(1)])
        .await
        .expect("append");
    let row = tx
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show");
    assert_eq!(
        row.get::<_, String>(0),
        "on",
        "the append overrides an asynchronous caller"
    );
    tx.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_never_moves_backwards() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let client = store.pool().get().await.expect("client");
    eventstore::save_checkpoint(&client, "c", 10)
        .await
        .expect("save");
    eventstore::save_checkpoint(&client, "c", 7)
        .await
        .expect("save older");
    assert_eq!(
        eventstore::load_checkpoint(&client, "c")
            .await
            .expect("load"),
        Some(10)
    );
    eventstore::save_checkpoint(&client, "c", 12)
        .await
        .expect("save newer");
    assert_eq!(
        eventstore::load_checkpoint(&client, "c")
            .await
            .expect("load"),
        Some(12)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_a_transaction_that_already_wrote_is_refused_so_stream_order_holds() {
    // A transaction that took its id before reading the stream could be sealed ahead of
    // the version it builds on.
    let db = TestDatabase::create().await;
    let store = db.store();
    let mut client = store.pool().get().await.expect("client");
    let mut tx = client.transaction().await.expect("begin");
    tx.batch_execute("CREATE TEMPORARY TABLE scratch (n int); INSERT INTO scratch VALUES (1)")
        .await
        .expect("write");
    let refused = store
        .append_in_transaction(&mut tx, "s", ExpectedVersion::Any, &[event(1)])
        .await;
    assert!(
        matches!(refused, Err(AppendError::Invalid(_))),
        "{refused:?}"
    );
    tx.rollback().await.expect("rollback");

    // Reads first, then the append, then other writes: accepted.
    let mut tx = client.transaction().await.expect("begin");
    tx.query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("read");
    store
        .append_in_transaction(&mut tx, "s", ExpectedVersion::NoStream, &[event(1)])
        .await
        .expect("append");
    tx.batch_execute("CREATE TEMPORARY TABLE scratch (n int)")
        .await
        .expect("write after");
    tx.commit().await.expect("commit");
}

/// Sends BEGIN, the pipelined append, a write of the caller's and COMMIT in one pipeline
/// (every statement prepared first), as the publisher does.
async fn append_in_one_pipeline(
    store: &EventStore,
    expected: u64,
    events: &[NewEvent],
    marker: i32,
) -> (Result<eventstore::AppendOutcome, AppendError>, bool) {
    let client = store.pool().get().await.expect("client");
    let append = store
        .prepare_pipelined_append(&client, "s", expected, events)
        .await
        .expect("prepare");
    let side = client
        .prepare_cached("INSERT INTO side (n) VALUES ($1)")
        .await
        .expect("prepare side");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&marker];
    let (begun, appended, wrote, committed) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        append.send(&client),
        client.execute(&side, &params),
        client.batch_execute("COMMIT"),
    );
    begun.expect("begin");
    committed.expect("commit (a rollback when aborted)");
    assert_eq!(
        appended.is_ok(),
        wrote.is_ok(),
        "the caller's write shares the append's fate"
    );
    (appended, wrote.is_ok())
}

/// Stream `s` with `events` events, and a `side` table for the caller's own writes.
async fn stream_and_side_table(
    db: &TestDatabase,
    events: u64,
) -> (EventStore, tokio_postgres::Client) {
    let store = db.store();
    let admin = admin_client(db).await;
    admin
        .batch_execute("CREATE TABLE side (n int)")
        .await
        .expect("side table");
    let events: Vec<NewEvent> = (1..=events).map(event).collect();
    store
        .append("s", ExpectedVersion::NoStream, &events)
        .await
        .expect("append");
    (store, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_append_commits_with_the_callers_writes_and_a_stale_one_aborts_them() {
    let db = TestDatabase::create().await;
    let (store, admin) = stream_and_side_table(&db, 2).await;

    // At the expected version: the events and the caller's row commit together.
    let (appended, _) = append_in_one_pipeline(&store, 2, &[event(3), event(4)], 1).await;
    let outcome = appended.expect("appended");
    assert_eq!((outcome.first_version, outcome.stream_version), (3, 4));
    let (appended, _) = append_in_one_pipeline(&store, 4, &[event(5)], 2).await;
    assert_eq!(appended.expect("appended").stream_version, 5);

    // Behind the stream (one event and several), and ahead of it (which would leave a
    // gap): refused, and nothing of the transaction is kept.
    for (expected, count) in [(3, 1), (4, 3), (9, 1), (9, 2)] {
        let events: Vec<NewEvent> = (0..count).map(|n| event(100 + n)).collect();
        let (refused, _) = append_in_one_pipeline(&store, expected, &events, 99).await;
        assert!(
            matches!(refused, Err(AppendError::StreamMoved { expected: e, .. }) if e == expected),
            "{refused:?}"
        );
    }
    let kept: Vec<i32> = admin
        .query("SELECT n FROM side ORDER BY n", &[])
        .await
        .expect("side rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(kept, vec![1, 2]);
    let versions: Vec<u64> = store
        .read_stream_forward("s", 1, 100)
        .await
        .expect("read")
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);

    // Event ids are not recognised as a retry: the caller chooses fresh ones.
    let stored = store.read_stream_forward("s", 5, 1).await.expect("read");
    let mut again = event(5);
    again.event_id = stored[0].event_id;
    let (refused, _) = append_in_one_pipeline(&store, 5, &[again], 3).await;
    assert!(
        matches!(refused, Err(AppendError::Invalid(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_racing_for_one_version_leave_exactly_one_winner() {
    let db = TestDatabase::create().await;
    let (store, admin) = stream_and_side_table(&db, 1).await;
    let racers = (0..32).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { append_in_one_pipeline(&store, 1, &[event(2)], n).await })
    });
    let mut winners = Vec::new();
    for racer in racers {
        let (appended, wrote) = racer.await.expect("racer");
        match appended {
            Ok(outcome) => winners.push((outcome.stream_version, wrote)),
            Err(AppendError::StreamMoved { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners, vec![(2, true)]);
    let side: i64 = admin
        .query_one("SELECT count(*) FROM side", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(side, 1, "only the winner's own write is kept");
    assert_eq!(store.stream_version("s").await.expect("version"), 2);
}

/// Puts a database back as it was before V9: the log one `event_log` row per event.
async fn rewind_to_before_v9(db: &TestDatabase, forgery: &str) {
    db.forge(&format!("{UNDO_V9_SQL} {forgery}")).await;
}

/// A history of several seals of uneven sizes, more than 1000 positions.
async fn history_of_several_seals(store: &EventStore) -> u64 {
    let mut appended = 0;
    for round in 0..30u64 {
        let events: Vec<NewEvent> = (0..(round * 7 % 90 + 1)).map(event).collect();
        appended += events.len() as u64;
        store
            .append(&format!("s{}", round % 4), ExpectedVersion::Any, &events)
            .await
            .expect("append");
        if round % 4 == 0 {
            store.seal_all(Duration::from_secs(10)).await.expect("seal");
        }
    }
    store.seal_all(Duration::from_secs(10)).await.expect("seal");
    appended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_v9_moves_every_link_into_seals_unchanged() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let head = history_of_several_seals(&store).await;
    assert!(head > 1000, "{head}");
    let log = whole_log(&store).await;
    let stream = store
        .read_stream_sealed("s1", 0, 10_000)
        .await
        .expect("read");
    let as_of = store
        .read_stream_until_position("s2", 700)
        .await
        .expect("read");
    assert!(!stream.is_empty() && !as_of.is_empty());
    assert!(
        as_of.len()
            < store
                .read_stream_forward("s2", 1, 10_000)
                .await
                .expect("read")
                .len()
    );
    let verified = store.verify().await.expect("verify");
    assert!(verified.ok, "{verified:?}");
    drop(store);

    rewind_to_before_v9(&db, "").await;
    eventstore::migrate(&db.url).await.expect("migrate");
    let store = db.store();
    assert_eq!(whole_log(&store).await, log);
    assert_eq!(
        store
            .read_stream_sealed("s1", 0, 10_000)
            .await
            .expect("read"),
        stream
    );
    assert_eq!(
        store
            .read_stream_until_position("s2", 700)
            .await
            .expect("read"),
        as_of
    );
    assert_eq!(store.verify().await.expect("verify"), verified);

    // Sealing goes on from the copied head.
    store
        .append("after", ExpectedVersion::Any, &[event(1)])
        .await
        .expect("append");
    let report = store.seal_all(Duration::from_secs(10)).await.expect("seal");
    assert_eq!(report.head, head + 1);
    let report = store.verify().await.expect("verify");
    assert!(report.ok && report.checked == head + 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_v9_copies_forged_links_as_they_are_and_verify_still_names_them() {
    for (forgery, bad) in [
        (
            "UPDATE event_log SET hash = prev_hash WHERE position = 1003",
            1003,
        ),
        // A seal keeps only its first prev_hash: a wrong one starts a seal of its own.
        (
            "UPDATE event_log SET prev_hash = hash WHERE position = 1100",
            1100,
        ),
        ("DELETE FROM event_log WHERE position = 1150", 1150),
    ] {
        let db = TestDatabase::create().await;
        let store = db.store();
        history_of_several_seals(&store).await;
        drop(store);
        rewind_to_before_v9(&db, forgery).await;
        eventstore::migrate(&db.url).await.expect("migrate");
        let report = db.store().verify().await.expect("verify");
        assert_eq!(
            report.first_bad_position,
            Some(bad),
            "{forgery}: {report:?}"
        );
        assert_eq!(report.checked, bad - 1, "{forgery}");
    }
}
