//! Email fan-out: one notice to many confirmed subscribers, from one `crier serve` to a
//! local SMTP sink.
//!
//!     cargo bench --bench email                                  # 100,000 subscribers
//!     cargo bench --bench email -- --subscribers 20000 --connections 4
//!     cargo bench --bench email -- --subscribers 20000 --kill-at 0.5     # kill -9 mid-way
//!     cargo bench --bench email -- --subscribers 20000 --outage 60       # SMTP down 60 s
//!     cargo bench --bench email -- --subscribers 20000 --notices 4       # 4 notices at once
//!
//! The sink (in this process, tokio) speaks just enough SMTP to accept every message and
//! counts them per recipient. The baseline, measured in the same run before and after
//! Crier: the same number of messages of the same shape (multipart text and HTML) sent to
//! the same sink by Crier's own SMTP client (`delivery::email::smtp`, lettre's protocol
//! client on sockets without Nagle's delay) over the same number of connections, with no
//! database and nothing rendered: what a sender could reach. Then a release `crier serve`
//! on a fresh database: the subscribers are subscribed and confirmed through the publisher
//! (their confirmation emails are sent and counted apart), one incident is declared, and
//! the clock runs from the declaration until the sink has accepted the last notice email.
//! Reported: both rates and their ratio, every subscriber's count of notice emails, and
//! the server's peak resident memory (VmHWM).
//!
//! `--kill-at F` kills the server with SIGKILL once a fraction F of the notice emails are
//! in, starts it again, and reports the emails sent twice (those in flight at the kill).
//! `--outage S` makes the sink refuse every connection and command for S seconds half-way.
//! `--notices K` declares K incidents one after another (each a notice to every subscriber)
//! and the clock runs until every subscriber has K notice emails.
//!
//! The sink offers `PIPELINING` (RFC 2920) as Postfix and Exim do, and answers what came in
//! one write with one write; `--pipelining off` makes it a server that does not offer it.
//! `--reply-delay-ms D` holds each of its writes D ms, as a relay that far away would (one
//! round trip each).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed benchmark

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delivery::email::smtp::{SmtpPool, SmtpServer};
use delivery::email::testing::{envelope_address, read_content};
use eventstore::testing::TestDatabase;
use futures_util::StreamExt;
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

mod serve;

use serve::{incident, percentile, BenchServer};

struct Args {
    subscribers: usize,
    connections: usize,
    kill_at: Option<f64>,
    outage: Option<u64>,
    notices: usize,
    pipelining: bool,
    reply_delay: Duration,
}

fn args() -> Args {
    let mut args = Args {
        subscribers: 100_000,
        connections: 4,
        kill_at: None,
        outage: None,
        notices: 1,
        pipelining: true,
        reply_delay: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next();
        match (arg.as_str(), value) {
            ("--subscribers", Some(v)) => args.subscribers = v.parse().expect("a number"),
            ("--connections", Some(v)) => args.connections = v.parse().expect("a number"),
            ("--kill-at", Some(v)) => args.kill_at = Some(v.parse().expect("a fraction")),
            ("--outage", Some(v)) => args.outage = Some(v.parse().expect("seconds")),
            ("--notices", Some(v)) => args.notices = v.parse::<usize>().expect("a number").max(1),
            ("--pipelining", Some(v)) => args.pipelining = v != "off",
            ("--reply-delay-ms", Some(v)) => {
                args.reply_delay = Duration::from_millis(v.parse().expect("milliseconds"))
            }
            _ => {}
        }
    }
    args
}

/// What the sink accepted.
#[derive(Default)]
struct Sink {
    /// Notice emails per recipient.
    notices: Mutex<HashMap<String, u32>>,
    notice_count: AtomicU64,
    confirmations: AtomicU64,
    baseline: AtomicU64,
    /// When each notice email was accepted.
    arrivals: Mutex<Vec<Instant>>,
    /// Refusing everything (the server "down").
    down: AtomicBool,
    /// Offers PIPELINING.
    pipelining: bool,
    /// How long each of its writes is held.
    reply_delay: Duration,
}

impl Sink {
    fn accept(&self, subject: &str, recipients: &[String]) {
        if subject.starts_with("Baseline") {
            self.baseline.fetch_add(1, Ordering::Relaxed);
        } else if subject.starts_with("Confirm your subscription") {
            self.confirmations.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut notices = self.notices.lock().unwrap();
            for recipient in recipients {
                *notices.entry(recipient.clone()).or_default() += 1;
            }
            self.notice_count.fetch_add(1, Ordering::Relaxed);
            self.arrivals.lock().unwrap().push(Instant::now());
        }
    }
}

/// Writes the replies gathered, held `delay` first.
async fn reply(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    replies: &mut Vec<u8>,
    delay: Duration,
) -> std::io::Result<()> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    write.write_all(replies).await?;
    replies.clear();
    Ok(())
}

async fn conversation(stream: TcpStream, sink: Arc<Sink>) -> std::io::Result<()> {
    if sink.down.load(Ordering::Relaxed) {
        return Ok(()); // closed at once, as a dead server's port would be
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    // Replies wait here until nothing more is waiting to be read: a pipelined group is
    // answered in one write, as a real server answers it.
    let mut replies: Vec<u8> = Vec::new();
    let delay = sink.reply_delay;
    replies.extend_from_slice(b"220 sink.bench ESMTP\r\n");
    reply(&mut write, &mut replies, delay).await?;
    let mut recipients: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if sink.down.load(Ordering::Relaxed) {
            write
                .write_all(b"421 4.3.2 service not available\r\n")
                .await?;
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" if sink.pipelining => b"250-sink.bench\r\n250 PIPELINING\r\n",
            "EHLO" | "HELO" => b"250 sink.bench\r\n",
            "MAIL" | "RSET" => {
                recipients.clear();
                b"250 2.1.0 OK\r\n"
            }
            "RCPT" => {
                recipients.push(envelope_address(&line));
                b"250 2.1.5 OK\r\n"
            }
            "DATA" => {
                replies.extend_from_slice(b"354 go ahead\r\n");
                reply(&mut write, &mut replies, delay).await?;
                let mut subject = String::new();
                let mut headers = true;
                let whole = read_content(&mut lines, |line| {
                    if headers {
                        if line == "\r\n" {
                            headers = false;
                        } else if line.len() > 9 && line[..9].eq_ignore_ascii_case("subject: ") {
                            subject = line[9..].trim_end().to_owned();
                        }
                    }
                })
                .await?;
                if !whole {
                    return Ok(());
                }
                sink.accept(&subject, &recipients);
                recipients.clear();
                b"250 2.0.0 accepted\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                replies.extend_from_slice(b"221 bye\r\n");
                reply(&mut write, &mut replies, delay).await?;
                return Ok(());
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        replies.extend_from_slice(answer);
        if lines.buffer().is_empty() {
            reply(&mut write, &mut replies, delay).await?;
        }
    }
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `count` messages like a notice email, straight from Crier's SMTP client over
/// `connections`, with no database.
async fn baseline(url: &str, count: usize, connections: usize) -> f64 {
    let pool = SmtpPool::new(SmtpServer::from_url(url, Duration::from_secs(5)).expect("url"));
    let from: Mailbox = "Status <status@bench.example>".parse().unwrap();
    let text = "What to do: If a user is still experiencing impact, they need to restart their \
                clients to recover.\n\nUsers cannot sign in\nStatus: Investigating\n"
        .repeat(4);
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><body><p>{}</p></body></html>",
        text
    );
    let started = Instant::now();
    futures_util::stream::iter(0..count)
        .for_each_concurrent(connections, |n| {
            let message = Message::builder()
                .from(from.clone())
                .to(format!("user{n}@bench.example").parse().unwrap())
                .subject("Baseline: Users cannot sign in")
                .multipart(MultiPart::alternative_plain_html(
                    text.clone(),
                    html.clone(),
                ))
                .unwrap();
            let pool = &pool;
            async move {
                pool.send(&message).await.expect("baseline send");
            }
        })
        .await;
    count as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds (user and system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// CPU seconds used by every PostgreSQL process.
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("postgres"))
        })
        .map(cpu_seconds)
        .sum()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() {
    let args = args();
    let n = args.subscribers;
    let sink = Arc::new(Sink {
        pipelining: args.pipelining,
        reply_delay: args.reply_delay,
        ..Sink::default()
    });
    println!(
        "the sink: PIPELINING {}, each write held {} ms",
        if args.pipelining {
            "offered"
        } else {
            "not offered"
        },
        args.reply_delay.as_millis()
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let accepting = sink.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(conversation(stream, accepting.clone()));
        }
    });

    let baseline_before = baseline(&url, n, args.connections).await;

    let db = TestDatabase::create().await;
    let connections = args.connections.to_string();
    let env = [
        ("CRIER_SMTP_URL", url.as_str()),
        ("CRIER_EMAIL_FROM", "Status <status@bench.example>"),
        ("CRIER_SMTP_CONNECTIONS", connections.as_str()),
        ("CRIER_SMTP_TIMEOUT", "5"),
        ("CRIER_EMAIL_RETRY_BASE_MS", "1000"),
    ];
    let mut server = BenchServer::start(&db.url, &env).await;
    let (publisher, service_id) = server.publisher_and_service().await;
    let seeding = Instant::now();
    let addresses: Vec<String> = (0..n).map(|i| format!("user{i}@bench.example")).collect();
    delivery::email::testing::confirmed_subscribers(&db.store(), addresses, 32)
        .await
        .expect("seed the subscribers");
    wait_until(
        "every confirmation email",
        Duration::from_secs(3600),
        || sink.confirmations.load(Ordering::Relaxed) >= n as u64,
    )
    .await;
    let seeded_in = seeding.elapsed();
    let rss_before = peak_rss_kib(server.child.id());
    let (crier_cpu_before, postgres_cpu_before) =
        (cpu_seconds(server.child.id()), postgres_cpu_seconds());

    let notices_each = args.notices;
    let emails = (n * notices_each) as u64;
    let started = Instant::now();
    for k in 0..notices_each {
        server
            .post("/v1/incidents", &publisher, incident(k, &service_id))
            .await;
    }
    let mut peak_rss = rss_before;
    if let Some(fraction) = args.kill_at {
        let at = (emails as f64 * fraction) as u64;
        wait_until("the kill point", Duration::from_secs(3600), || {
            sink.notice_count.load(Ordering::Relaxed) >= at
        })
        .await;
        peak_rss = peak_rss.max(peak_rss_kib(server.child.id()));
        let before_kill = sink.notice_count.load(Ordering::Relaxed);
        server.child.kill().expect("kill -9");
        server.child.wait().expect("reap");
        println!("killed (SIGKILL) with {before_kill} of {emails} notice emails in");
        server = BenchServer::start(&db.url, &env).await;
    }
    if let Some(seconds) = args.outage {
        wait_until("half-way", Duration::from_secs(3600), || {
            sink.notice_count.load(Ordering::Relaxed) >= emails / 2
        })
        .await;
        sink.down.store(true, Ordering::Relaxed);
        println!("SMTP sink down for {seconds} s");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        sink.down.store(false, Ordering::Relaxed);
    }
    wait_until("every notice email", Duration::from_secs(3600), || {
        let notices = sink.notices.lock().unwrap();
        notices.len() >= n && notices.values().all(|c| *c as usize >= notices_each)
    })
    .await;
    let latencies: Vec<f64> = (sink.arrivals.lock().unwrap().iter())
        .map(|at| at.duration_since(started).as_secs_f64())
        .collect();
    let elapsed = Duration::from_secs_f64(percentile(latencies.clone(), 100.0));
    peak_rss = peak_rss.max(peak_rss_kib(server.child.id()));
    let crier_cpu = cpu_seconds(server.child.id()) - crier_cpu_before;
    let postgres_cpu = postgres_cpu_seconds() - postgres_cpu_before;
    // Late duplicates have a moment to arrive before they are counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_after = baseline(&url, n, args.connections).await;
    drop(server);

    let notices = sink.notices.lock().unwrap();
    let once = notices
        .values()
        .filter(|c| **c as usize == notices_each)
        .count();
    let twice: usize = notices
        .values()
        .map(|c| (*c as usize).saturating_sub(notices_each))
        .sum();
    let crier_rate = emails as f64 / elapsed.as_secs_f64();
    let baseline_rate = (baseline_before + baseline_after) / 2.0;
    println!(
        "subscribers {n}, notices {notices_each}, SMTP connections {}",
        args.connections
    );
    println!("seeding (subscribe, confirm, confirmation emails): {seeded_in:.1?}");
    println!(
        "baseline, the SMTP client straight to the sink: {baseline_before:.0}/s before, {baseline_after:.0}/s after"
    );
    println!(
        "crier: declaration to last notice email {elapsed:.2?}, {crier_rate:.0}/s, ratio {:.2}",
        crier_rate / baseline_rate
    );
    println!(
        "publish to acceptance: first {:.2} s, p50 {:.2} s, p99 {:.2} s",
        percentile(latencies.clone(), 0.0),
        percentile(latencies.clone(), 50.0),
        percentile(latencies, 99.0)
    );
    if args.kill_at.is_none() {
        // (A killed server's CPU, and its database sessions', leave with them.)
        println!(
            "CPU during the fan-out: crier {crier_cpu:.1} s, PostgreSQL {postgres_cpu:.1} s \
             (of {:.1} s on 2 cores)",
            elapsed.as_secs_f64() * 2.0
        );
    }
    println!(
        "recipients: {} of {n} received, {once} exactly once, {twice} emails sent twice",
        notices.len()
    );
    println!(
        "server peak RSS (VmHWM): {} MiB before the notice, {} MiB at the end",
        rss_before.unwrap_or(0) / 1024,
        peak_rss.unwrap_or(0) / 1024
    );
}
