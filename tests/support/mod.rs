//! Running the real `crier` binary in tests.
#![allow(dead_code)] // Each test binary uses a part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

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
