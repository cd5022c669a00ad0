//! Many Server-Sent Events subscribers on one `crier serve`: publish-to-last-delivery
//! latency, the server's memory per subscriber, and what the load client itself cost.
//!
//!     cargo bench --bench stream                                  # 100,000, or what fits
//!     cargo bench --bench stream -- --subscribers 18000 --notices 20
//!     cargo bench --bench stream -- --subscribers 2000 --heartbeat 2
//!
//! Starts the release `crier serve` on a fresh database, opens the subscribers (plain
//! HTTP/1.1 connections reading `GET /v1/stream`), measures the server's resident memory
//! before and after, then publishes incidents one at a time (every 500 ms) and records, for
//! each, the time from sending the POST until the last subscriber has read it. The
//! baseline in the same run is the POST's own answer time (what a publisher waits for).
//!
//! Connections: each process (this one, and the server it starts) needs a file per
//! subscriber, so the count asked for is lowered to what the open-file limit allows (with
//! 1,000 to spare), and the table says so. The connections come from many loopback source
//! addresses (127.0.x.y, 500 each), so that neither the ephemeral port range nor the
//! server's per-address stream cap binds: the server is measured as it would be by a crowd.
//!
//! Heartbeats: the server is started with `--heartbeat` seconds between comments (15 by
//! default, as in production); the notices are published over several heartbeats, so their
//! latency includes whatever the heartbeats of every subscriber cost.
//!
//! The client's own CPU (user and system, from `/proc/self/stat`) and the server's are
//! printed beside the figures, so a saturated client shows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use memchr::memmem::Finder;

use eventstore::testing::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

mod serve;

use serve::{incident, percentile, BenchServer};

struct Args {
    subscribers: usize,
    notices: usize,
    heartbeat: u64,
}

fn args() -> Args {
    let mut args = Args {
        subscribers: 100_000,
        notices: 20,
        heartbeat: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--subscribers", Some(v)) => args.subscribers = v,
            ("--notices", Some(v)) => args.notices = v,
            ("--heartbeat", Some(v)) => args.heartbeat = v as u64,
            _ => {}
        }
    }
    args
}

/// Files every process keeps besides the subscribers' sockets (pools, logs, listeners).
const FILES_TO_SPARE: u64 = 1_000;
/// Connections per loopback source address: well inside one address's port range.
const PER_SOURCE_ADDRESS: usize = 500;

/// Raises this process's soft open-file limit to the hard one (the server inherits it)
/// and returns how many subscribers fit.
fn subscribers_that_fit(wanted: usize) -> (usize, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = files.saturating_sub(FILES_TO_SPARE) as usize;
    (wanted.min(fit), files)
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

/// CPU seconds (user + system) a process has used so far. `/proc/<pid>/stat` counts in
/// USER_HZ, which Linux fixes at 100 for every program.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `index`th subscriber's loopback source address: 127.0.1.1 onwards, 500 each.
fn source_address(index: usize) -> SocketAddr {
    let n = index / PER_SOURCE_ADDRESS;
    let ip = Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
    SocketAddr::V4(SocketAddrV4::new(ip, 0))
}

/// One subscriber: connects from its own source address, waits for the stream to open,
/// then records when each notice (a complete `event:` line) arrives.
async fn subscribe(
    server: SocketAddr,
    index: usize,
    opened: Arc<tokio::sync::Semaphore>,
    arrivals: Arc<Mutex<Vec<Vec<Instant>>>>,
) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(source_address(index))
        .expect("bind a source address");
    let mut socket = socket.connect(server).await.expect("connect");
    socket
        .write_all(
            format!(
                "GET /v1/stream HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    // Small buffers: a hundred thousand of these share the machine with the server. Large
    // enough for a chunk and the kept tail, so that no notice makes the client allocate.
    let mut buffer = Vec::with_capacity(2048 + 128);
    let mut chunk = [0u8; 2048];
    let mut is_open = false;
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
        if !is_open && CONNECTED.find(&buffer).is_some() {
            is_open = true;
            opened.add_permits(1);
        }
        // Count notices by their complete `event:` lines (the opening and heartbeats carry
        // `id:` lines too, but no event). Keep only what could still start or finish one, so
        // that no byte is searched twice.
        let mut searched = 0;
        let mut notices = 0;
        let mut keep_from = None;
        while let Some(at) = EVENT_LINE.find(&buffer[searched..]) {
            let start = searched + at + EVENT_LINE.needle().len();
            match memchr::memchr(b'\n', &buffer[start..]) {
                Some(end) => {
                    notices += 1;
                    searched = start + end;
                }
                None => {
                    keep_from = Some(searched + at);
                    break;
                }
            }
        }
        if notices > 0 {
            let mut all = arrivals.lock().expect("arrivals");
            all[index].extend(std::iter::repeat_n(now, notices));
        }
        let consumed = match keep_from {
            Some(event_line) => event_line,
            None if is_open => {
                searched.max(buffer.len().saturating_sub(EVENT_LINE.needle().len() - 1))
            }
            None => 0,
        };
        buffer.drain(..consumed);
    }
}

/// The start of a notice's `event:` line. The client reads every subscriber's every chunk,
/// on the same two cores as the server: a byte-by-byte search cost it about 30 ms of CPU per
/// notice at 18,000 subscribers (`perf`), time the server's deliveries then waited for.
static EVENT_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\nevent: "));
static CONNECTED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b": connected"));

#[tokio::main]
async fn main() {
    let args = args();
    let (subscribers, files) = subscribers_that_fit(args.subscribers);
    if subscribers < args.subscribers {
        println!(
            "the open-file limit is {files}: measuring {subscribers} subscribers instead of {} \
             (raise it with `ulimit -n` or LimitNOFILE=, as docs/OPERATIONS.md says)",
            args.subscribers
        );
    }
    let db = TestDatabase::create().await;
    let heartbeat = args.heartbeat.to_string();
    let server =
        BenchServer::start(&db.url, &[("CRIER_STREAM_HEARTBEAT", heartbeat.as_str())]).await;
    let address: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let (publisher, service_id) = server.publisher_and_service().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server_pid = server.child.id().to_string();
    let before = resident_kib(server.child.id());
    let (client_cpu_at_start, server_cpu_at_start) =
        (cpu_seconds("self"), cpu_seconds(&server_pid));
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    // Room for every notice up front: the client allocates nothing while it measures.
    let arrivals = Arc::new(Mutex::new(
        (0..subscribers)
            .map(|_| Vec::with_capacity(args.notices))
            .collect::<Vec<Vec<Instant>>>(),
    ));
    let started = Instant::now();
    for index in 0..subscribers {
        tokio::spawn(subscribe(address, index, opened.clone(), arrivals.clone()));
        // Connect in waves, as a crowd reconnecting after an outage would not all at once.
        if index % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let all_open = opened.acquire_many(subscribers as u32).await.expect("open");
    all_open.forget();
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = resident_kib(server.child.id());
    let (client_cpu_connected, server_cpu_connected) =
        (cpu_seconds("self"), cpu_seconds(&server_pid));

    let publishing = Instant::now();
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
    let publishing = publishing.elapsed();
    let (client_cpu_end, server_cpu_end) = (cpu_seconds("self"), cpu_seconds(&server_pid));

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
        "{subscribers} subscribers on one process (2 workers), from {} loopback addresses; \
         {} notices one every 500 ms; heartbeats every {} s; connected in {:.1} s",
        subscribers.div_ceil(PER_SOURCE_ADDRESS),
        args.notices,
        args.heartbeat,
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
    println!(
        "each notice's last delivery, in order (ms): {}",
        last_delivery
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let p99 = percentile(last_delivery.clone(), 99.0);
    println!(
        "| publish to LAST delivery, per notice | {:.1} ms | {:.1} ms | {:.1} ms |",
        percentile(last_delivery.clone(), 50.0),
        p99,
        percentile(last_delivery, 100.0)
    );
    // Each notice is written to every subscriber, so the time to the last grows with their
    // number: 180 ms at 18,000 is under 1 s at 100,000. Below 18,000 it is not judged.
    let verdict = if subscribers < 18_000 {
        "not judged below 18,000 subscribers"
    } else if p99 * 100_000.0 / subscribers as f64 <= 1000.0 {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "target: p99 publish-to-last-delivery ≤ 180 ms at 18,000 (under 1 s at 100,000): {verdict}"
    );
    println!(
        "server memory: {:.1} MiB before, {:.1} MiB with the subscribers: {:.1} KiB per subscriber",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / subscribers as f64
    );
    println!(
        "CPU seconds while connecting: client {:.1}, server {:.1}; while publishing ({:.1} s): \
         client {:.1}, server {:.1}",
        client_cpu_connected - client_cpu_at_start,
        server_cpu_connected - server_cpu_at_start,
        publishing.as_secs_f64(),
        client_cpu_end - client_cpu_connected,
        server_cpu_end - server_cpu_connected
    );
}
