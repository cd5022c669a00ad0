//! Event store throughput against raw PostgreSQL doing the same work, in one run.
//!
//!     cargo bench --bench eventstore                 # 5 rounds of 4 s per side
//!     cargo bench --bench eventstore -- --seconds 10 --rounds 7
//!     cargo bench --bench eventstore -- --only a     # (a) alone, for quicker experiments
//!     cargo bench --bench eventstore -- --only c     # a log written by one (b) round, then (c)
//!
//! (a) single-event appends from 8 concurrent writers: `EventStore::append` (expected
//!     version checked, idempotency checked, sealer running) against a plain autocommit
//!     INSERT into a table with the same columns and indexes;
//! (b) appends of 100-event batches from 8 writers, against one 100-row INSERT;
//! (c) reading the whole log in order (each event decoded) with `EventStore::log_reader`, which keeps
//!     reads ahead in flight, against a keyset SELECT of the raw table reading ahead the same
//!     way, in paired rounds (printed beside it: each side one read at a time).
//!
//! CRIER_BENCH_HISTORY_KEY=on authenticates every appended event with a history key, for the
//! cost of authentication against the same run without a key.
//!
//! Needs PostgreSQL at CRIER_TEST_DATABASE_URL (default the local one); makes and drops
//! its own database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{median, read_whole_log, read_whole_log_one_read_at_a_time};

use eventstore::testing::TestDatabase;
use eventstore::{EventStore, ExpectedVersion, Metadata, NewEvent};
use serde_json::{json, Value};
use uuid::Uuid;

const WRITERS: usize = 8;
const BATCH: usize = 100;

/// The same columns, defaults and indexes as the store's `events`, without its triggers.
const RAW_TABLE: &str =
    "CREATE TABLE raw_events (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)";

const RAW_INSERT_ONE: &str = "INSERT INTO raw_events \
    (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const RAW_INSERT_MANY: &str = "INSERT INTO raw_events \
    (stream_id, stream_version, event_id, event_type, schema_version, data, metadata, content_hash) \
    SELECT $1, $2 + i.ord, i.event_id, i.event_type, i.schema_version, i.data, i.metadata, $8 \
      FROM unnest($3::uuid[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[]) \
           WITH ORDINALITY AS i(event_id, event_type, schema_version, data, metadata, ord) \
     ORDER BY i.ord";

/// Raw rows store 32 bytes where the store keeps its content hash, without computing one.
const RAW_CONTENT_HASH: [u8; 32] = [7; 32];

/// A realistic incident update: a few hundred bytes of JSON.
fn payload(writer: usize, n: u64) -> Value {
    json!({
        "incident_id": format!("inc-{writer}"),
        "update_id": Uuid::new_v4(),
        "status": "identified",
        "message": "We've identified the cause of the sign-in failures. If a user is still experiencing impact, they need to restart their clients to recover.",
        "client_action": { "kind": "restart_client", "message": "Restart to recover" },
        "n": n,
    })
}

fn metadata() -> Metadata {
    Metadata {
        actor: "bench-key".into(),
        request_id: Some(Uuid::new_v4().to_string()),
        correlation_id: Some(Uuid::new_v4()),
        causation_id: None,
    }
}

struct Args {
    seconds: u64,
    rounds: usize,
    /// `--only a` or `--only b`: measure that one (no log read), for quicker experiments;
    /// `--only c`: write the log with one unmeasured round of (b), then measure (c).
    only: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 4,
        rounds: 5,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => args.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(4),
            "--rounds" => args.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            "--only" => args.only = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

async fn raw_connection(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// The machine's busy CPU time so far (every core, every process: this bench, PostgreSQL and
/// anything else), in clock ticks, from /proc/stat; `None` off Linux.
fn busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user, nice, system, idle, iowait, irq, softirq: busy is all but idle and iowait.
    Some(fields.iter().take(7).sum::<u64>() - fields.get(3)? - fields.get(4)?)
}

/// What one side of a round did: events per second, and the machine's CPU time per event in
/// microseconds (less sensitive than throughput to a neighbour taking the disk for a while).
#[derive(Clone, Copy)]
struct Rate {
    per_second: f64,
    cpu_us_per_event: Option<f64>,
}

/// Runs `WRITERS` copies of `work(writer, n)` for `seconds`.
async fn run_for<F, Fut>(seconds: u64, events_per_call: u64, work: F) -> Rate
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let busy_at_start = busy_ticks();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (stop, done, work) = (stop.clone(), done.clone(), work.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    work(writer, n).await;
                    n += 1;
                    done.fetch_add(events_per_call, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    let events = done.load(Ordering::Relaxed) as f64;
    // USER_HZ is 100 on every Linux this runs on.
    let cpu_us_per_event = busy_at_start
        .zip(busy_ticks())
        .map(|(start, end)| (end - start) as f64 * 10_000.0 / events.max(1.0));
    Rate {
        per_second: events / start.elapsed().as_secs_f64(),
        cpu_us_per_event,
    }
}

/// One connection per writer with `sql` prepared on it, as the store's pool has.
async fn prepared_writers(
    url: &str,
    sql: &str,
) -> Vec<Arc<(tokio_postgres::Client, tokio_postgres::Statement)>> {
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let client = raw_connection(url).await;
        let statement = client.prepare(sql).await.expect("prepare");
        writers.push(Arc::new((client, statement)));
    }
    writers
}

async fn raw_single(url: &str, round: usize, seconds: u64) -> Rate {
    let clients = prepared_writers(url, RAW_INSERT_ONE).await;
    let clients = Arc::new(clients);
    run_for(seconds, 1, move |writer, n| {
        let client = clients[writer].clone();
        async move {
            let stream = format!("raw-{round}-{writer}");
            let version = i64::try_from(n + 1).unwrap_or(i64::MAX);
            let meta = serde_json::to_value(metadata()).expect("metadata");
            let (client, statement) = &*client;
            client
                .execute(
                    statement,
                    &[
                        &stream,
                        &version,
                        &Uuid::new_v4(),
                        &"incident.updated",
                        &1i32,
                        &payload(writer, n),
                        &meta,
                        &RAW_CONTENT_HASH.as_slice(),
                    ],
                )
                .await
                .expect("raw insert");
        }
    })
    .await
}

async fn raw_batches(url: &str, round: usize, seconds: u64) -> Rate {
    let clients = prepared_writers(url, RAW_INSERT_MANY).await;
    let clients = Arc::new(clients);
    run_for(seconds, BATCH as u64, move |writer, n| {
        let client = clients[writer].clone();
        async move {
            let stream = format!("rawb-{round}-{writer}");
            let base = i64::try_from(n * BATCH as u64).unwrap_or(i64::MAX);
            let ids: Vec<Uuid> = (0..BATCH).map(|_| Uuid::new_v4()).collect();
            let types = vec!["incident.updated"; BATCH];
            let versions = vec![1i32; BATCH];
            let data: Vec<Value> = (0..BATCH as u64)
                .map(|i| payload(writer, n * 1000 + i))
                .collect();
            let meta: Vec<Value> = (0..BATCH)
                .map(|_| serde_json::to_value(metadata()).expect("metadata"))
                .collect();
            let (client, statement) = &*client;
            client
                .execute(
                    statement,
                    &[
                        &stream,
                        &base,
                        &ids,
                        &types,
                        &versions,
                        &data,
                        &meta,
                        &RAW_CONTENT_HASH.as_slice(),
                    ],
                )
                .await
                .expect("raw batch insert");
        }
    })
    .await
}

async fn store_single(store: &EventStore, round: usize, seconds: u64) -> Rate {
    let store = store.clone();
    run_for(seconds, 1, move |writer, n| {
        let store = store.clone();
        async move {
            let event = NewEvent::new("incident.updated", payload(writer, n), metadata());
            store
                .append(
                    &format!("store-{round}-{writer}"),
                    ExpectedVersion::Exact(n),
                    &[event],
                )
                .await
                .expect("append");
        }
    })
    .await
}

async fn store_batches(store: &EventStore, round: usize, seconds: u64) -> Rate {
    let store = store.clone();
    run_for(seconds, BATCH as u64, move |writer, n| {
        let store = store.clone();
        async move {
            let events: Vec<NewEvent> = (0..BATCH as u64)
                .map(|i| {
                    NewEvent::new(
                        "incident.updated",
                        payload(writer, n * 1000 + i),
                        metadata(),
                    )
                })
                .collect();
            store
                .append(
                    &format!("storeb-{round}-{writer}"),
                    ExpectedVersion::Exact(n * BATCH as u64),
                    &events,
                )
                .await
                .expect("append batch");
        }
    })
    .await
}

const RAW_READ_SQL: &str = "SELECT seq, stream_id, stream_version, event_id, event_type, schema_version, data, metadata, recorded_at, content_hash \
       FROM raw_events WHERE seq > $1 ORDER BY seq LIMIT 5000";

/// A raw row decoded as the store decodes an event (`RecordedEvent::from_row`: the data as
/// checked JSON text, the metadata into `Metadata`), and held like one: a batch lives until
/// the reader's consumer has it and frees it, often on another thread.
#[allow(dead_code)] // made and freed for the work of it; never read
struct RawEvent {
    seq: i64,
    stream_id: String,
    stream_version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    data: Box<serde_json::value::RawValue>,
    metadata: Metadata,
    recorded_at: chrono::DateTime<chrono::Utc>,
    content_hash: [u8; 32],
}

/// Decodes what the store decodes, so both sides do the same work.
fn decode_raw(rows: &[tokio_postgres::Row]) -> Vec<RawEvent> {
    rows.iter()
        .map(|row| {
            let data: tokio_postgres::types::Json<&serde_json::value::RawValue> = row.get("data");
            let metadata: tokio_postgres::types::Json<Metadata> = row.get("metadata");
            RawEvent {
                seq: row.get("seq"),
                stream_id: row.get("stream_id"),
                stream_version: row.get("stream_version"),
                event_id: row.get("event_id"),
                event_type: row.get("event_type"),
                schema_version: row.get("schema_version"),
                data: data.0.to_owned(),
                metadata: metadata.0,
                recorded_at: row.get("recorded_at"),
                content_hash: row
                    .get::<_, &[u8]>("content_hash")
                    .try_into()
                    .expect("32 bytes"),
            }
        })
        .collect()
}

/// Reads `raw_events` whole with a keyset `SELECT`, one read at a time.
async fn read_whole_raw(url: &str) -> (u64, f64) {
    let client = raw_connection(url).await;
    let statement = client.prepare(RAW_READ_SQL).await.expect("prepare");
    let start = Instant::now();
    let mut after = 0i64;
    let mut count = 0u64;
    loop {
        let rows = client.query(&statement, &[&after]).await.expect("read raw");
        let events = decode_raw(&rows);
        let Some(last) = events.last() else { break };
        after = last.seq;
        count += events.len() as u64;
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

/// Reads `raw_events` whole as the log reader reads the log: three reads of the next
/// batches in flight, each on its own connection and task. Its `seq`s are dense (one
/// identity, no aborted inserts), as positions are.
async fn read_whole_raw_ahead(url: &str) -> (u64, f64) {
    const IN_FLIGHT: i64 = 3;
    const BATCH: i64 = 5000;
    let mut readers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let client = raw_connection(url).await;
        let statement = client.prepare(RAW_READ_SQL).await.expect("prepare");
        readers.push(Arc::new((client, statement)));
    }
    let read = |reader: Arc<(tokio_postgres::Client, tokio_postgres::Statement)>, after: i64| {
        tokio::spawn(async move {
            let rows = reader
                .0
                .query(&reader.1, &[&after])
                .await
                .expect("read raw");
            decode_raw(&rows)
        })
    };
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut next = 0;
    let mut count = 0u64;
    loop {
        while pending.len() < IN_FLIGHT as usize {
            pending.push_back(read(
                readers[(next % IN_FLIGHT) as usize].clone(),
                next * BATCH,
            ));
            next += 1;
        }
        let Some(read_rows) = pending.pop_front() else {
            break;
        };
        // Handed over and freed here, as the log reader's batches are by its consumer.
        let events = read_rows.await.expect("raw reader");
        count += events.len() as u64;
        if events.len() < BATCH as usize {
            break;
        }
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

/// Starts each side's round right after a checkpoint, so that neither pays for one the
/// other side's writes brought on (a checkpoint every few seconds at these rates, with
/// PostgreSQL's default `max_wal_size`; the full-page images after it fall on whoever writes
/// next). Needs a role allowed to CHECKPOINT; without one, rounds run as they fall.
async fn checkpoint(admin: &tokio_postgres::Client) {
    if let Err(e) = admin.batch_execute("CHECKPOINT").await {
        eprintln!("no CHECKPOINT between rounds: {e}");
    }
}

/// Runs one round's two sides, each right after a checkpoint: raw first in even rounds, the
/// store first in odd ones.
async fn in_turn(
    round: usize,
    admin: &tokio_postgres::Client,
    raw: impl std::future::Future<Output = Rate>,
    store: impl std::future::Future<Output = Rate>,
) -> (Rate, Rate) {
    if round % 2 == 0 {
        checkpoint(admin).await;
        let raw = raw.await;
        checkpoint(admin).await;
        (raw, store.await)
    } else {
        checkpoint(admin).await;
        let store = store.await;
        checkpoint(admin).await;
        (raw.await, store)
    }
}

/// One part's ((a) or (b)) results, round by round.
#[derive(Default)]
struct Part {
    raw: Vec<f64>,
    store: Vec<f64>,
    /// Each round's store throughput over the raw throughput measured next to it.
    ratios: Vec<f64>,
    /// Raw's CPU per event over the store's, where the machine tells.
    cpu_ratios: Vec<f64>,
}

impl Part {
    fn record(&mut self, round: usize, name: &str, raw: Rate, store: Rate) {
        let cpu = match (raw.cpu_us_per_event, store.cpu_us_per_event) {
            (Some(raw), Some(store)) => {
                self.cpu_ratios.push(raw / store);
                format!(", CPU per event {raw:.1} µs and {store:.1} µs")
            }
            _ => String::new(),
        };
        println!(
            "  round {round} ({name}) raw {:.0}/s, store {:.0}/s (ratio {:.2}){cpu}",
            raw.per_second,
            store.per_second,
            store.per_second / raw.per_second
        );
        self.raw.push(raw.per_second);
        self.store.push(store.per_second);
        self.ratios.push(store.per_second / raw.per_second);
    }

    /// The median throughputs, raw and store.
    fn medians(&self) -> (f64, f64) {
        (median(self.raw.clone()), median(self.store.clone()))
    }

    /// The median of the rounds' ratios: each pairs two measurements taken seconds apart, so
    /// that a machine that slows down or speeds up between rounds moves both sides alike.
    fn ratio(&self) -> f64 {
        median(self.ratios.clone())
    }

    /// The median of raw's CPU per event over the store's: the throughput ratio the store
    /// would reach if CPU were all that bounded both.
    fn cpu_ratio(&self) -> String {
        if self.cpu_ratios.is_empty() {
            "-".into()
        } else {
            format!("{:.2}", median(self.cpu_ratios.clone()))
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let db = TestDatabase::create().await;
    let mut config = db.config();
    config.pool_size = WRITERS + 2;
    // CRIER_BENCH_HISTORY_KEY=on authenticates every event the store appends (HMAC-SHA256
    // with a history key), as `crier serve` does with CRIER_HISTORY_KEY_FILE.
    if std::env::var("CRIER_BENCH_HISTORY_KEY").is_ok_and(|v| v == "on") {
        let key = eventstore::HistoryKey::generate().expect("a history key");
        config.history_keys = Some(eventstore::HistoryKeys::new(vec![key]).expect("keys"));
        println!("events are authenticated with a history key");
    }
    // CRIER_BENCH_SEAL_DELAY_MS: the sealer's gathering delay (default: the store's).
    if let Some(ms) = std::env::var("CRIER_BENCH_SEAL_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.seal_delay = Duration::from_millis(ms);
    }
    // CRIER_BENCH_SEAL_INTERVAL_MS: the least time between seals under steady appends.
    if let Some(ms) = std::env::var("CRIER_BENCH_SEAL_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.seal_interval = Duration::from_millis(ms);
    }

    let store = EventStore::connect(config).expect("store");
    raw_connection(&db.url)
        .await
        .batch_execute(RAW_TABLE)
        .await
        .expect("raw table");
    let admin = raw_connection(&db.url).await;
    let stop = eventstore::CancellationToken::new();
    // CRIER_BENCH_SEALER=off measures appends alone; the backlog is then sealed at the end.
    let sealer_on = std::env::var("CRIER_BENCH_SEALER").map_or(true, |v| v != "off");
    let background = sealer_on.then(|| store.spawn_background(stop.clone()));

    println!(
        "event store benchmark: {WRITERS} writers, {} rounds of {} s per side (raw first in even rounds, the store first in odd ones)",
        args.rounds, args.seconds
    );
    let (mut a, mut b) = (Part::default(), Part::default());
    let measure = |part: &str| args.only.as_deref().is_none_or(|only| only == part);
    // Odd rounds run the store first, so that neither side always follows the other (the
    // tables grow, and PostgreSQL's background work trails whichever side wrote last).
    for round in (0..args.rounds).filter(|_| measure("a")) {
        let (raw, store) = in_turn(
            round,
            &admin,
            raw_single(&db.url, round, args.seconds),
            store_single(&store, round, args.seconds),
        )
        .await;
        a.record(round, "a", raw, store);
    }
    // `--only c` writes its log with one round of (b), left out of the medians it prints.
    let b_rounds = if measure("c") && args.only.is_some() {
        1
    } else {
        args.rounds
    };
    for round in (0..b_rounds).filter(|_| measure("b") || measure("c")) {
        let (raw, store) = in_turn(
            round,
            &admin,
            raw_batches(&db.url, round, args.seconds),
            store_batches(&store, round, args.seconds),
        )
        .await;
        b.record(round, "b", raw, store);
    }

    if args.only.is_some() && !measure("c") {
        let part = if measure("a") { &a } else { &b };
        let (raw, store) = part.medians();
        println!(
            "median: raw {raw:.0}/s, store {store:.0}/s; ratio {:.2} (the rounds' median; of the medians {:.2}); CPU per event, raw/store: {}",
            part.ratio(),
            store / raw,
            part.cpu_ratio()
        );
        return;
    }

    // Everything appended must be sealed before the log can be read whole.
    let seal_start = Instant::now();
    let sealed = store
        .seal_all(Duration::from_secs(120))
        .await
        .expect("seal");
    let drain = seal_start.elapsed();
    stop.cancel();
    if let Some(background) = background {
        background.join().await;
    }

    // Each side is read once unmeasured first, so that both are measured from the same
    // caches (the store's tables were written before the raw one in some rounds, after it
    // in others, and whichever is read first would pay for the other's pages). Then paired
    // rounds, taking turns going first, as the appends do: a single read of each drifted
    // 0.49–0.67 between runs.
    read_whole_log(&store).await;
    read_whole_raw(&db.url).await;
    let mut reads = Part::default();
    let (mut logged, mut raw_rows) = (0, 0);
    for round in 0..args.rounds {
        let store_side = async {
            let (events, rate) = read_whole_log(&store).await;
            logged = events;
            Rate {
                per_second: rate,
                cpu_us_per_event: None,
            }
        };
        let raw_side = async {
            let (rows, rate) = read_whole_raw_ahead(&db.url).await;
            raw_rows = rows;
            Rate {
                per_second: rate,
                cpu_us_per_event: None,
            }
        };
        let (raw, store) = in_turn(round, &admin, raw_side, store_side).await;
        reads.record(round, "c", raw, store);
    }
    let (_, store_read_serially) = read_whole_log_one_read_at_a_time(&store).await;
    let (raw_rows_serially, raw_read) = read_whole_raw(&db.url).await;
    assert_eq!(
        raw_rows_serially, raw_rows,
        "raw reading ahead read every row"
    );
    let (raw_read_ahead, store_read) = reads.medians();
    if args.only.is_some() {
        println!(
            "(c) median: raw reading ahead {raw_read_ahead:.0}/s, the log reader {store_read:.0}/s; ratio {:.2} (the rounds' median); one read at a time: raw {raw_read:.0}/s, the store {store_read_serially:.0}/s",
            reads.ratio()
        );
        return;
    }
    let ((raw_a, store_a), (raw_b, store_b)) = (a.medians(), b.medians());

    println!();
    println!("| measurement | raw PostgreSQL | crier event store | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| (a) single-event appends, {WRITERS} writers (events/s, median) | {raw_a:.0} | {store_a:.0} | {:.2} |",
        a.ratio()
    );
    println!(
        "| (b) {BATCH}-event appends, {WRITERS} writers (events/s, median) | {raw_b:.0} | {store_b:.0} | {:.2} |",
        b.ratio()
    );
    println!(
        "| (c) read the whole log in order (events/s; {logged} events, {raw_rows} raw rows) | {raw_read:.0} | {store_read:.0} | {:.2} |",
        store_read / raw_read
    );
    println!(
        "| (c) the same, one `read_log` at a time instead of the log reader's reads ahead | {raw_read:.0} | {store_read_serially:.0} | {:.2} |",
        store_read_serially / raw_read
    );
    println!(
        "| (c) the log reader against raw reading ahead the same way (three reads in flight; median) | {raw_read_ahead:.0} | {store_read:.0} | {:.2} |",
        reads.ratio()
    );
    println!(
        "ratio: the median of the rounds' ratios (each round's store over its raw); \
         the ratio of the two medians instead: (a) {:.2}, (b) {:.2}",
        store_a / raw_a,
        store_b / raw_b
    );
    println!(
        "CPU per event (the whole machine's), raw over store, median: (a) {}, (b) {}",
        a.cpu_ratio(),
        b.cpu_ratio()
    );
    println!();
    println!(
        "sealer backlog at the end of the appends: {} events, sealed in {:.2} s",
        sealed.sealed,
        drain.as_secs_f64()
    );
}
