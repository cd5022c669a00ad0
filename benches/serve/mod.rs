//! A release `crier serve` for the benchmarks that drive it over HTTP, and their
//! percentiles.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// The bootstrap admin key of every benchmark server.
pub const ADMIN: &str = "bench-Admin-Secret-0123456789-QxWzKv";

/// `crier serve` (2 HTTP workers, no write rate limit) on a database, killed when dropped.
pub struct BenchServer {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl BenchServer {
    /// Starts it with `env` added and waits until it is ready.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> BenchServer {
        // Another build of crier may be measured in its place (A/B runs in turns).
        let binary = std::env::var("CRIER_BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_crier").to_owned());
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
            .env("DATABASE_URL", database_url)
            .env("CRIER_BOOTSTRAP_ADMIN_KEY", ADMIN)
            .env("CRIER_WRITE_RATE_LIMIT", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start crier serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let base = line
            .trim()
            .strip_prefix("crier listening on ")
            .expect("address")
            .to_owned();
        let http = reqwest::Client::new();
        for _ in 0..100 {
            let ready = http.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        BenchServer { child, base, http }
    }

    /// A JSON POST with a key; the answer must be a success.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Value {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json().await.expect("json answer")
    }

    /// A publisher key and a service to declare incidents on.
    pub async fn publisher_and_service(&self) -> (String, String) {
        let key = self
            .post(
                "/v1/api-keys",
                ADMIN,
                json!({"name": "bench", "role": "publisher"}),
            )
            .await;
        let service = self
            .post("/v1/services", ADMIN, json!({"name": "Teams"}))
            .await;
        (
            key["key"].as_str().expect("secret").to_owned(),
            service["id"].as_str().expect("id").to_owned(),
        )
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `p`th percentile (0 to 100) of `values`, NaN for none.
pub fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (values.len() as f64 - 1.0)).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// An incident declaration of the benchmarks, on `service_id`.
pub fn incident(n: usize, service_id: &str) -> Value {
    json!({
        "title": format!("Users cannot sign in ({n})"), "impact": "major",
        "message": "We are investigating reports of sign-in failures.",
        "affected_services": [{"service_id": service_id, "status": "major_outage"}],
        "client_action": {"kind": "restart_client",
            "message": "If a user is still experiencing impact, they need to restart their clients to recover."},
    })
}
