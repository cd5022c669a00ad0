//! Running the real `crier` binary in tests.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

    pub fn start_with(command: Command) -> Server {
        Server::start_listening(command, "127.0.0.1:0")
    }

    /// A server on this address (port 0: a free one).
    pub fn start_listening(command: Command, listen: &str) -> Server {
        Server::start_logging(command, listen, Stdio::null())
    }

    /// A server on a free port whose log (its stderr) goes to the file at `log`.
    pub fn start_logging_to(command: Command, log: &Path) -> Server {
        let log = std::fs::File::create(log).expect("create the log file");
        Server::start_logging(command, "127.0.0.1:0", Stdio::from(log))
    }

    fn start_logging(mut command: Command, listen: &str, log: Stdio) -> Server {
        let mut child = command
            .args(["serve", "--listen", listen, "--workers", "2"])
            .stdout(Stdio::piped())
            .stderr(log)
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

pub const ADMIN_SECRET: &str = "crier-test-Bootstrap-Admin-7Hq2Xw9Lm4";
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

    /// The body of a plain `GET` (no key, no headers), as text.
    pub async fn text(&self, path: &str) -> String {
        let response = self.http.get(self.server.url(path)).send().await;
        response.expect("send").text().await.expect("body")
    }

    /// A counter of the server's `/metrics`, `series` its name and labels (0 if it has not
    /// counted yet).
    pub async fn metric(&self, series: &str) -> f64 {
        self.text("/metrics")
            .await
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |count| count.trim().parse().expect("a number"))
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

/// tools/webhook_receiver.py, running, with the lines it printed so far.
pub struct Receiver {
    child: Child,
    pub url: String,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub fn start(args: &[&str]) -> Receiver {
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tools/webhook_receiver.py"
            ))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receiver");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("listening line");
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).expect("receiver line");
                collected.lock().unwrap().push(value);
            }
        });
        Receiver { child, url, lines }
    }

    pub async fn set_secret(&self, secret: &str) {
        let answer = reqwest::Client::new()
            .post(format!("{}__secret", self.url))
            .body(secret.to_owned())
            .send()
            .await
            .expect("secret");
        assert_eq!(answer.status(), 204);
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the lines received, and returns them.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.lines();
            if done(&lines) {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never happened; received {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids the receiver answered with a 2xx, each once, in the order first delivered.
pub fn delivered_ids(lines: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for line in lines {
        let id = line["id"].as_str().unwrap_or_default().to_owned();
        if line["answered"].as_u64().is_some_and(|s| s < 300) && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// One message of an event stream.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    pub event: String,
    pub data: Value,
}

/// A minimal Server-Sent Events client (the text/event-stream format of the HTML
/// standard: lines, `field: value`, a blank line ends a message, `:` starts a comment).
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    messages: VecDeque<Message>,
    pub comments: Vec<String>,
    ended: bool,
}

impl SseClient {
    pub async fn open(
        base: &str,
        query: &str,
        key: Option<&str>,
        last_event_id: Option<u64>,
    ) -> SseClient {
        SseClient::try_open(base, query, key, last_event_id)
            .await
            .expect("the stream opens")
    }

    /// The stream, or `None` if the server cannot be reached or does not answer 200.
    pub async fn try_open(
        base: &str,
        query: &str,
        key: Option<&str>,
        last_event_id: Option<u64>,
    ) -> Option<SseClient> {
        let mut request = reqwest::Client::new().get(format!("{base}/v1/stream{query}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Some(SseClient {
            response,
            buffer: String::new(),
            messages: VecDeque::new(),
            comments: Vec::new(),
            ended: false,
        })
    }

    fn parse(&mut self) {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, None, None);
            for line in block.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    self.comments.push(comment.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("id: ") {
                    id = value.parse().ok();
                } else if let Some(value) = line.strip_prefix("event: ") {
                    event = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(value).expect("data is JSON"));
                }
            }
            if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                self.messages.push_back(Message { id, event, data });
            }
        }
    }

    /// The next message, waiting up to `wait`; `None` on timeout or end of stream.
    pub async fn next(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(message) = self.messages.pop_front() {
                return Some(message);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => {
                    self.buffer.push_str(&String::from_utf8_lossy(&chunk));
                    self.parse();
                }
                Ok(_) => self.ended = true,
            }
        }
    }

    /// Every message until `count` have come (or the wait runs out).
    pub async fn take(&mut self, count: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next(Duration::from_secs(10)).await {
                Some(message) => out.push(message),
                None => break,
            }
        }
        out
    }

    /// The next incident notice, passing over service notices (a service created just
    /// before the client connected may be sealed, and so notified, just after).
    pub async fn next_incident(&mut self, wait: Duration) -> Option<Message> {
        loop {
            let message = self.next(wait).await?;
            if message.event.starts_with("incident.") {
                return Some(message);
            }
        }
    }

    /// `count` incident notices (fewer if the wait runs out).
    pub async fn incidents(&mut self, count: usize) -> Vec<Message> {
        self.incidents_counted(count, &AtomicUsize::new(0)).await
    }

    /// The same, storing in `so_far` how many have come as each comes: a publisher can
    /// pace itself by what this reader has read.
    pub async fn incidents_counted(&mut self, count: usize, so_far: &AtomicUsize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next_incident(Duration::from_secs(10)).await {
                Some(message) => out.push(message),
                None => break,
            }
            so_far.store(out.len(), Ordering::Release);
        }
        out
    }
}

/// The browser checks' tools (tools/browser: playwright-core and axe-core, pinned by its
/// package-lock.json), installed once with `npm ci` into tools/browser/node_modules: in a
/// scratch directory first, moved into place whole, so that tests starting together never
/// see half an install. Chromium itself is Debian's (`apt-get install chromium`, which
/// .ci/run does when it is missing).
pub fn browser_tools() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/browser");
    let modules = tools.join("node_modules");
    if modules.join(".installed").exists() {
        return tools;
    }
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("npm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(tools.join(file), scratch.join(file)).unwrap();
    }
    let installed = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&scratch)
        .status()
        .expect("npm runs");
    assert!(
        installed.success(),
        "npm ci could not install tools/browser"
    );
    std::fs::write(scratch.join("node_modules/.installed"), "").unwrap();
    // Another test may have moved its install first: then this one is not needed.
    let _ = std::fs::rename(scratch.join("node_modules"), &modules);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(modules.join(".installed").exists());
    tools
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Python with aiosmtpd (from PyPI), made once in the target directory; made aside and
/// renamed into place, so that tests starting together never use a half-made one.
pub fn smtp_python() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("smtp-venv");
    let python = venv.join("bin/python");
    if venv.join("installed").exists() {
        return python;
    }
    let making = target.join(format!("smtp-venv-{}", uuid::Uuid::new_v4().simple()));
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&making)
        .status()
        .expect("python3 makes a virtual environment");
    assert!(made.success());
    let installed = Command::new(making.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "aiosmtpd==1.4.6"])
        .status()
        .expect("pip runs");
    assert!(installed.success(), "pip could not install aiosmtpd");
    std::fs::write(making.join("installed"), "").unwrap();
    if std::fs::rename(&making, &venv).is_err() {
        // Another test made it first.
        let _ = std::fs::remove_dir_all(&making);
    }
    python
}

/// tools/smtp_sink.py: a real SMTP server (aiosmtpd) on a free loopback port, writing each
/// message it accepts, parsed by Python's `email` package, to a directory of its own.
pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    /// `starttls` or `implicit`, with the certificate and key it serves.
    tls: Option<(&'static str, PathBuf, PathBuf)>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(None)
    }

    /// A sink speaking TLS (`mode` `starttls` or `implicit`) with this certificate and key.
    pub fn start_tls(mode: &'static str, cert: PathBuf, key: PathBuf) -> SmtpSink {
        SmtpSink::start_with(Some((mode, cert, key)))
    }

    fn start_with(tls: Option<(&'static str, PathBuf, PathBuf)>) -> SmtpSink {
        let dir =
            std::env::temp_dir().join(format!("crier-smtp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sink = SmtpSink {
            child: None,
            port: 0,
            dir,
            tls,
        };
        sink.restart();
        sink
    }

    /// Starts it again (on the same port once it had one).
    pub fn restart(&mut self) {
        let mut command = Command::new(smtp_python());
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/smtp_sink.py"))
            .arg(&self.dir)
            .env("SMTP_SINK_PORT", self.port.to_string());
        if let Some((mode, cert, key)) = &self.tls {
            command
                .env("SMTP_SINK_TLS", mode)
                .env("SMTP_SINK_CERT", cert)
                .env("SMTP_SINK_KEY", key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("the port line");
        self.port = first.trim().parse().expect("a port");
        self.child = Some(child);
    }

    /// Stops it: connections are refused until it is started again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How it misbehaves from now on (see tools/smtp_sink.py).
    pub fn control(&self, rules: Value) {
        std::fs::write(self.dir.join("control.json"), rules.to_string()).unwrap();
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name().is_some_and(|n| n != "control.json")
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The messages to `address`, in order.
    pub fn messages_to(&self, address: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == address)
            })
            .collect()
    }

    /// Waits until `address` has received `count` messages, and returns them.
    pub async fn wait_for(&self, address: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let messages = self.messages_to(address);
            if messages.len() >= count {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{address} received {} of {count} messages: {messages:#?}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
