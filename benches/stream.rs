//! Many Server-Sent Events subscribers on one `crier serve`: publish-to-last-delivery
//! latency and memory per subscriber.
//!
//!     cargo bench --bench stream                                  # 10,000 subscribers
//!     cargo bench --bench stream -- --subscribers 2000 --notices 10
//!
//! Starts the release `crier serve` on a fresh database, opens the subscribers (plain
//! HTTP/1.1 connections reading `GET /v1/stream`), measures the server's resident memory
//! before and after, then publishes incidents one at a time (every 500 ms) and records, for
//! each, the time from sending the POST until the last subscriber has read it. The
//! baseline in the same run is the POST's own answer time (what a publisher waits for).
//! Needs `ulimit -n` above the subscriber count (in both this process and the server).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::testing::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod serve;

use serve::{incident, percentile, BenchServer};

struct Args {
    subscribers: usize,
    notices: usize,
}

fn args() -> Args {
    let mut args = Args {
        subscribers: 10_000,
        notices: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--subscribers", Some(v)) => args.subscribers = v,
            ("--notices", Some(v)) => args.notices = v,
            _ => {}
        }
    }
    args
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One subscriber: connects, waits for the stream to open, then records when each
/// notice (`id:` line) arrives.
async fn subscribe(
    address: String,
    opened: Arc<tokio::sync::Semaphore>,
    arrivals: Arc<Mutex<Vec<Vec<Instant>>>>,
    index: usize,
) {
    let mut socket = TcpStream::connect(&address).await.expect("connect");
    socket
        .write_all(
            format!(
                "GET /v1/stream HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut is_open = false;
    let mut seen = Vec::new();
    loop {
        let read = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        buffer.extend_from_slice(&chunk[..read]);
        if !is_open && buffer.starts_with(b"HTTP/1.1 ") && !buffer.starts_with(b"HTTP/1.1 200") {
            let status = String::from_utf8_lossy(&buffer[..buffer.len().min(12)]).into_owned();
            // A panic here would end only this task, and main would wait forever.
            eprintln!("subscriber {index}: the stream was refused: {status}");
            std::process::exit(1);
        }
        if !is_open && buffer.windows(11).any(|w| w == b": connected") {
            is_open = true;
            opened.add_permits(1);
        }
        // Count notices by their complete `event:` lines (the opening and heartbeats carry
        // `id:` lines too, but no event); keep the unfinished tail.
        let mut consumed = 0;
        while let Some(at) = find(&buffer[consumed..], b"\nevent: ") {
            let start = consumed + at + 8;
            match find(&buffer[start..], b"\n") {
                Some(end) => {
                    seen.push(now);
                    consumed = start + end;
                }
                None => break,
            }
        }
        buffer.drain(..consumed);
        if let Ok(mut all) = arrivals.lock() {
            if all[index].len() < seen.len() {
                all[index] = seen.clone();
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::main]
async fn main() {
    let args = args();
    let db = TestDatabase::create().await;
    // Every subscriber connects from 127.0.0.1: the per-address cap on open streams (1,000
    // by default) would hold the rest back, and the bench would wait for them forever.
    let server = BenchServer::start(&db.url, &[("CRIER_STREAM_PER_CLIENT_LIMIT", "0")]).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let (publisher, service_id) = server.publisher_and_service().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = resident_kib(server.child.id());
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let arrivals = Arc::new(Mutex::new(vec![Vec::new(); args.subscribers]));
    let started = Instant::now();
    for index in 0..args.subscribers {
        tokio::spawn(subscribe(
            address.clone(),
            opened.clone(),
            arrivals.clone(),
            index,
        ));
        if index % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let all_open = opened
        .acquire_many(args.subscribers as u32)
        .await
        .expect("open");
    all_open.forget();
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_kib(server.child.id());

    let mut published = Vec::new();
    let mut answer_times = Vec::new();
    for n in 0..args.notices {
        let body = incident(n, &service_id);
        let sent = Instant::now();
        server.post("/v1/incidents", &publisher, body).await;
        answer_times.push(sent.elapsed().as_secs_f64() * 1000.0);
        published.push(sent);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let all = arrivals.lock().expect("arrivals").clone();
    let complete = all.iter().filter(|a| a.len() >= args.notices).count();
    let mut last_delivery = Vec::new();
    let mut every_delivery = Vec::new();
    for (n, sent) in published.iter().enumerate() {
        let mut latest = 0.0f64;
        for subscriber in &all {
            if let Some(at) = subscriber.get(n) {
                let ms = at.duration_since(*sent).as_secs_f64() * 1000.0;
                every_delivery.push(ms);
                latest = latest.max(ms);
            }
        }
        last_delivery.push(latest);
    }
    drop(server);

    println!();
    println!(
        "{} subscribers on one process (2 workers), {} notices one every 500 ms; connected in {:.1} s",
        args.subscribers,
        args.notices,
        connect_time.as_secs_f64()
    );
    println!("subscribers that received every notice: {complete}");
    println!("| measurement | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| POST /v1/incidents answered (baseline) | {:.1} ms | {:.1} ms | {:.1} ms |",
        percentile(answer_times.clone(), 50.0),
        percentile(answer_times.clone(), 99.0),
        percentile(answer_times, 100.0)
    );
    println!(
        "| publish to delivery, every subscriber | {:.1} ms | {:.1} ms | {:.1} ms |",
        percentile(every_delivery.clone(), 50.0),
        percentile(every_delivery.clone(), 99.0),
        percentile(every_delivery, 100.0)
    );
    let p99 = percentile(last_delivery.clone(), 99.0);
    println!(
        "| publish to LAST delivery, per notice | {:.1} ms | {:.1} ms | {:.1} ms |",
        percentile(last_delivery.clone(), 50.0),
        p99,
        percentile(last_delivery, 100.0)
    );
    println!(
        "target: p99 publish-to-last-delivery under 1 s: {}",
        if p99 < 1000.0 { "met" } else { "NOT met" }
    );
    println!(
        "server memory: {:.1} MiB before, {:.1} MiB with the subscribers: {:.1} KiB per subscriber",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / args.subscribers as f64
    );
}
