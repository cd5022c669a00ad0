//! Running the real `crier` binary in tests.
#![allow(dead_code)] // Each test binary uses a part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use eventstore::testing::TestDatabase;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub fn crier(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crier"));
    command
        .env("DATABASE_URL", database_url)
        .env("CRIER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    command
}

pub async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run crier"))
        .await
        .expect("join")
}

/// A running `crier serve` on a free port, killed if the test ends early.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(database_url: &str) -> Server {
        Server::start_with(crier(database_url))
    }

    pub fn start_with(mut command: Command) -> Server {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start crier serve");
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first_line)
            .expect("read the listening line");
        let address = first_line
            .trim()
            .strip_prefix("crier listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first_line:?}"))
            .to_owned();
        Server {
            child,
            base: address,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("crier serve did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/healthz` answers 200: the process is alive, whatever the database does.
pub async fn assert_alive(client: &reqwest::Client, server: &Server) {
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        health.status(),
        200,
        "liveness does not depend on the database"
    );
}

pub async fn wait_for_status(client: &reqwest::Client, url: &str, want: u16) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().as_u16() == want {
                return response;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The REST API as a client drives it.

pub const ADMIN_SECRET: &str = "crier-test-bootstrap-admin-secret";
pub const RESTART: &str =
    "If a user is still experiencing impact, they need to restart their clients to recover.";

/// A server with a bootstrap admin key, ready to serve.
pub struct Api {
    pub server: Server,
    pub http: reqwest::Client,
}

/// An answer: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{:#?}", self.body);
        self.body
    }

    /// Asserts an RFC 9457 problem with this status.
    #[track_caller]
    pub fn problem(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{:#?}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{status}: {:#?}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        self.body
    }
}

pub fn serve(db_url: &str, extra_env: &[(&str, &str)]) -> Server {
    let mut command: Command = crier(db_url);
    command.env("CRIER_BOOTSTRAP_ADMIN_KEY", ADMIN_SECRET);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    Server::start_with(command)
}

impl Api {
    pub async fn start(db: &TestDatabase) -> Api {
        Api::start_with(db, &[("CRIER_WRITE_RATE_LIMIT", "0")]).await
    }

    pub async fn start_with(db: &TestDatabase, env: &[(&str, &str)]) -> Api {
        Api::on(serve(&db.url, env)).await
    }

    pub async fn on(server: Server) -> Api {
        // Idle connections are dropped before the server's 5 s keep-alive can close one
        // under a request that reuses it.
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .expect("HTTP client");
        wait_for_status(&http, &server.url("/readyz"), 200).await;
        Api { server, http }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.server.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Answer {
        self.send(Method::GET, path, key, &[], None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(key), &[], Some(&body))
            .await
    }

    /// Creates a key and returns its secret.
    pub async fn key(&self, role: &str, tenant: Option<&str>) -> String {
        let created = self
            .post(
                "/v1/api-keys",
                ADMIN_SECRET,
                json!({"name": format!("{role} {tenant:?}"), "role": role, "tenant": tenant}),
            )
            .await
            .expect(201);
        created["key"].as_str().expect("secret").to_owned()
    }

    pub async fn service(&self, name: &str) -> String {
        let created = self
            .post(
                "/v1/services",
                ADMIN_SECRET,
                json!({"name": name, "group": "Microsoft 365"}),
            )
            .await
            .expect(201);
        created["id"].as_str().expect("id").to_owned()
    }

    pub async fn declare(&self, key: &str, body: Value) -> Value {
        self.post("/v1/incidents", key, body).await.expect(201)
    }
}
