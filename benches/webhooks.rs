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

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use eventstore::testing::TestDatabase;
use futures_util::StreamExt;
use serde_json::{json, Value};

const ADMIN: &str = "bench-admin-secret-0123456789";

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

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (values.len() as f64 - 1.0)).round() as usize;
    values[rank.min(values.len() - 1)]
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
    let mut server = Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
        .env("DATABASE_URL", &db.url)
        .env("CRIER_BOOTSTRAP_ADMIN_KEY", ADMIN)
        .env("CRIER_WRITE_RATE_LIMIT", "0")
        .env("CRIER_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crier serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let base = line
        .trim()
        .strip_prefix("crier listening on ")
        .expect("address")
        .to_owned();
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let post = |path: &str, key: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let created: Value = post(
        "/v1/api-keys",
        ADMIN,
        json!({"name": "bench", "role": "publisher"}),
    )
    .await
    .expect("key")
    .json()
    .await
    .expect("key json");
    let publisher = created["key"].as_str().expect("secret").to_owned();
    let service: Value = post("/v1/services", ADMIN, json!({"name": "Teams"}))
        .await
        .expect("service")
        .json()
        .await
        .expect("service json");
    let service_id = service["id"].as_str().expect("id").to_owned();
    for n in 0..args.endpoints {
        let answer = post(
            "/v1/webhooks",
            ADMIN,
            json!({"url": format!("{receiver_base}/hook/{n}"), "event_types": ["incident.declared"]}),
        )
        .await
        .expect("register");
        assert_eq!(answer.status(), 201);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let published: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    futures_util::stream::iter(0..args.notices)
        .for_each_concurrent(8, |n| {
            let request = post(
                "/v1/incidents",
                &publisher,
                json!({
                    "title": format!("Users cannot sign in ({n})"), "impact": "major",
                    "message": "We are investigating reports of sign-in failures.",
                    "affected_services": [{"service_id": service_id, "status": "major_outage"}],
                    "client_action": {"kind": "restart_client",
                        "message": "If a user is still experiencing impact, they need to restart their clients to recover."},
                }),
            );
            let published = published.clone();
            async move {
                let sent = Instant::now();
                let answer = request.await.expect("publish");
                assert_eq!(answer.status(), 201);
                let declared: Value = answer.json().await.expect("incident");
                let id = declared["id"].as_str().expect("id").to_owned();
                published.lock().expect("published").insert(id, sent);
            }
        })
        .await;
    let published_in = started.elapsed();
    let last = wait_for(&seen, total, Duration::from_secs(300)).await;
    let elapsed = last.map(|last| last.duration_since(started));
    let metrics = http
        .get(format!("{base}/metrics"))
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
        (row.get::<_, Option<f64>>(0), row.get::<_, Option<f64>>(1))
    };
    let _ = server.kill();
    let _ = server.wait();
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
