//! Webhook deliveries per second from one `crier serve` to a local receiver.
//!
//!     cargo bench --bench webhooks                          # 20 endpoints × 300 notices
//!     cargo bench --bench webhooks -- --endpoints 5 --notices 100
//!
//! The receiver (in this process: actix-web, 2 workers) answers 204 to every POST and
//! notes when it arrived. First the baseline, in the same run: the same receiver taking the
//! same number of signed POSTs straight from a reqwest client with 64 in flight (what a
//! dispatcher with no database could reach). Then the release `crier serve` on a fresh
//! database, with `--endpoints` webhooks to the receiver: `--notices` incidents are
//! declared (8 at a time), and the clock runs from the first declaration until the
//! receiver has every delivery. Also reported: publish-to-delivery latency per delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use eventstore::testing::TestDatabase;
use futures_util::StreamExt;
use serde_json::{json, Value};

mod serve;

use serve::{incident, percentile, BenchServer, ADMIN};

struct Args {
    endpoints: usize,
    notices: usize,
}

fn args() -> Args {
    let mut args = Args {
        endpoints: 20,
        notices: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--endpoints", Some(v)) => args.endpoints = v,
            ("--notices", Some(v)) => args.notices = v,
            _ => {}
        }
    }
    args
}

/// What the receiver saw: per request, when and what (subject of the CloudEvent).
#[derive(Default)]
struct Seen {
    arrivals: Vec<(Instant, String)>,
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    seen: web::Data<Mutex<Seen>>,
) -> HttpResponse {
    let at = Instant::now();
    let subject = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["subject"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if request.headers().contains_key("webhook-signature") {
        if let Ok(mut seen) = seen.lock() {
            seen.arrivals.push((at, subject));
        }
    }
    HttpResponse::NoContent().finish()
}

async fn wait_for(seen: &Mutex<Seen>, count: usize, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(seen) = seen.lock() {
            if seen.arrivals.len() >= count {
                return seen.arrivals.iter().map(|(at, _)| *at).max();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::main]
async fn main() {
    let args = args();
    let total = args.endpoints * args.notices;
    let seen = web::Data::new(Mutex::new(Seen::default()));
    let receiver_state = seen.clone();
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(receiver_state.clone())
            .default_service(web::to(receive))
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .expect("bind the receiver");
    let receiver_address = receiver.addrs()[0];
    let receiver_handle = receiver.run();
    let stop_receiver = receiver_handle.handle();
    tokio::spawn(receiver_handle);
    let receiver_base = format!("http://{receiver_address}");

    // Baseline: the same POSTs, straight from a client.
    let body = json!({"specversion": "1.0", "type": "incident.declared", "subject": "baseline",
                      "data": {"title": "Users cannot sign in", "status": "investigating"}})
    .to_string();
    let direct = reqwest::Client::new();
    let started = Instant::now();
    futures_util::stream::iter(0..total)
        .for_each_concurrent(64, |n| {
            let request = direct
                .post(format!("{receiver_base}/baseline/{}", n % args.endpoints))
                .header("content-type", "application/json")
                .header("webhook-id", n.to_string())
                .header("webhook-timestamp", "1764000000")
                .header("webhook-signature", "v1,bench")
                .body(body.clone());
            async move {
                let _ = request.send().await;
            }
        })
        .await;
    let baseline_per_second = total as f64 / started.elapsed().as_secs_f64();
    if let Ok(mut seen) = seen.lock() {
        seen.arrivals.clear();
    }

    let db = TestDatabase::create().await;
    let server = BenchServer::start(&db.url, &[("CRIER_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let (publisher, service_id) = server.publisher_and_service().await;
    for n in 0..args.endpoints {
        server
            .post(
                "/v1/webhooks",
                ADMIN,
                json!({"url": format!("{receiver_base}/hook/{n}"), "event_types": ["incident.declared"]}),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let published: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    futures_util::stream::iter(0..args.notices)
        .for_each_concurrent(8, |n| {
            let published = published.clone();
            let server = &server;
            let publisher = &publisher;
            let service_id = &service_id;
            async move {
                let sent = Instant::now();
                let declared = server
                    .post("/v1/incidents", publisher, incident(n, service_id))
                    .await;
                let id = declared["id"].as_str().expect("id").to_owned();
                published.lock().expect("published").insert(id, sent);
            }
        })
        .await;
    let published_in = started.elapsed();
    let last = wait_for(&seen, total, Duration::from_secs(300)).await;
    let elapsed = last.map(|last| last.duration_since(started));
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let attempts: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("crier_webhook_attempts_total"))
        .collect();
    let spans = {
        let store = db.store();
        let client = store.pool().get().await.expect("connect");
        let row = client
            .query_one(
                "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8, \
                        extract(epoch FROM max(finished_at) - min(created_at))::float8 \
                   FROM webhook_deliveries",
                &[],
            )
            .await
            .expect("spans");
        let stages = client
            .query_one(
                "WITH s AS ( \
                   SELECT extract(epoch FROM d.created_at - e.recorded_at) * 1000 AS written, \
                          extract(epoch FROM a.started_at - d.created_at) * 1000 AS sent, \
                          extract(epoch FROM d.finished_at - a.started_at) * 1000 AS recorded \
                     FROM webhook_deliveries d \
                     JOIN events e ON e.event_id = d.message_id \
                     JOIN webhook_attempts a ON a.webhook_id = d.webhook_id \
                                            AND a.position = d.position AND a.attempt = 1) \
                 SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY written), \
                        percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY sent), \
                        percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY recorded) \
                   FROM s",
                &[],
            )
            .await
            .expect("stages");
        let stage = |n: usize| {
            stages
                .get::<_, Option<Vec<f64>>>(n)
                .unwrap_or_default()
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "stages, p50 / p99 ms: event to delivery written {}; written to first attempt {}; \
             attempt to recorded {}",
            stage(0),
            stage(1),
            stage(2)
        );
        // Where a run's time went, 50 ms at a time (from the first notice's recording):
        // notices recorded, deliveries written (their transaction's start), attempts
        // started, deliveries finished.
        if std::env::var_os("CRIER_BENCH_TIMELINE").is_some() {
            let rows = client
                .query(
                    "WITH t0 AS (SELECT min(recorded_at) AS t FROM events \
                                  WHERE event_type = 'incident.declared'), \
                          b AS (SELECT 'e' AS k, recorded_at AS at FROM events \
                                 WHERE event_type = 'incident.declared' \
                                UNION ALL SELECT 'c', created_at FROM webhook_deliveries \
                                UNION ALL SELECT 's', started_at FROM webhook_attempts \
                                UNION ALL SELECT 'f', finished_at FROM webhook_deliveries) \
                     SELECT floor(extract(epoch FROM b.at - t0.t) * 20)::int AS bucket, \
                            count(*) FILTER (WHERE k = 'e'), count(*) FILTER (WHERE k = 'c'), \
                            count(*) FILTER (WHERE k = 's'), count(*) FILTER (WHERE k = 'f') \
                       FROM b, t0 WHERE b.at IS NOT NULL GROUP BY 1 ORDER BY 1",
                    &[],
                )
                .await
                .expect("timeline");
            println!("50 ms bucket: notices, deliveries written, attempts started, finished");
            for r in rows {
                println!(
                    "{:>4} {:>5} {:>5} {:>5} {:>5}",
                    r.get::<_, i32>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, i64>(3),
                    r.get::<_, i64>(4)
                );
            }
        }
        (row.get::<_, Option<f64>>(0), row.get::<_, Option<f64>>(1))
    };
    drop(server);
    stop_receiver.stop(true).await;

    let published = published.lock().expect("published").clone();
    let latencies: Vec<f64> = seen
        .lock()
        .expect("seen")
        .arrivals
        .iter()
        .filter_map(|(at, subject)| {
            published
                .get(subject)
                .map(|sent| at.duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect();
    println!();
    println!(
        "{} endpoints × {} notices = {total} deliveries; notices published in {:.2} s",
        args.endpoints,
        args.notices,
        published_in.as_secs_f64()
    );
    println!("attempts by outcome: {attempts:?}");
    println!(
        "deliveries written over {:.2} s (fan-out), all finished {:.2} s after the first was written",
        spans.0.unwrap_or(f64::NAN),
        spans.1.unwrap_or(f64::NAN)
    );
    match elapsed {
        Some(elapsed) => {
            let per_second = total as f64 / elapsed.as_secs_f64();
            println!("| measurement | value |");
            println!("|---|---:|");
            println!("| crier deliveries/s (first publish to last delivery) | {per_second:.0} |");
            println!(
                "| baseline: direct POSTs/s to the same receiver | {baseline_per_second:.0} |"
            );
            println!("| ratio | {:.2} |", per_second / baseline_per_second);
            println!(
                "| publish-to-delivery p50 / p99 | {:.0} ms / {:.0} ms |",
                percentile(latencies.clone(), 50.0),
                percentile(latencies, 99.0)
            );
        }
        None => println!("not every delivery arrived within 300 s"),
    }
}
