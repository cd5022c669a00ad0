//! Hostile input against the real binary: oversized heads, deep or broken JSON, huge
//! queries, slowloris-style requests and a client hoarding event streams each get a clear
//! 4xx, and other clients are served all the while.

use std::time::Duration;

use eventstore::testing::TestDatabase;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn address(api: &Api) -> String {
    api.server
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Sends `request` as raw bytes and reads the answer until the server closes or `wait`
/// passes: its status and its body parsed as JSON (`Null` when it is not).
async fn raw(address: &str, request: &[u8], wait: Duration) -> (u16, Value, String) {
    let mut connection = TcpStream::connect(address).await.expect("connect");
    connection.write_all(request).await.expect("send");
    read_answer(&mut connection, wait).await
}

async fn read_answer(connection: &mut TcpStream, wait: Duration) -> (u16, Value, String) {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 8192];
        loop {
            match connection.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if complete(&received) {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::Null),
        head.to_ascii_lowercase(),
    )
}

/// A whole answer with a `content-length` body has arrived.
fn complete(received: &[u8]) -> bool {
    let text = String::from_utf8_lossy(received);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: crier\r\nAuthorization: Bearer {ADMIN_SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[track_caller]
fn assert_problem(answer: &(u16, Value, String), status: u16) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert!(
        answer.2.contains("content-type: application/problem+json"),
        "{answer:?}"
    );
    assert_eq!(answer.1["status"], json!(status), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_huge_queries_and_deep_or_broken_json_get_a_clear_4xx() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let address = address(&api);
    let wait = Duration::from_secs(10);

    // A 20 KB header and a 30 KB query: over the 16 KiB default for the head.
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: crier\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let refused = raw(&address, big_header.as_bytes(), wait).await;
    assert_problem(&refused, 431);
    assert!(refused.1["detail"].as_str().unwrap_or("").contains("16384"));
    let huge_query = format!(
        "GET /v1/incidents?region={} HTTP/1.1\r\nHost: crier\r\nConnection: close\r\n\r\n",
        "a".repeat(30_000)
    );
    assert_problem(&raw(&address, huge_query.as_bytes(), wait).await, 431);
    // A target over 64 KiB is more than the http crate takes: a bare 400.
    let huger_query = huge_query.replace(&"a".repeat(30_000), &"a".repeat(70_000));
    assert_eq!(raw(&address, huger_query.as_bytes(), wait).await.0, 400);
    // Past actix's own 128 KiB cap the connection is refused bare (400 or 431, depending
    // on how the head arrived) and closed.
    let beyond = format!(
        "GET /healthz HTTP/1.1\r\nHost: crier\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let refused = raw(&address, beyond.as_bytes(), wait).await;
    assert!(matches!(refused.0, 400 | 431), "{refused:?}");

    // JSON nested 20,000 deep (within the 64 KiB body limit), and invalid UTF-8.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let refused = raw(&address, &post("/v1/services", deep.as_bytes()), wait).await;
    assert_problem(&refused, 400);
    let broken = b"{\"name\": \"Teams \xff\xfe\"}";
    assert_problem(
        &raw(&address, &post("/v1/services", broken), wait).await,
        400,
    );
    let large = format!("{{\"name\": \"{}\"}}", "a".repeat(100_000));
    assert_problem(
        &raw(&address, &post("/v1/services", large.as_bytes()), wait).await,
        413,
    );

    // Nothing of it was written, and the server serves on.
    let services = api.get("/v1/services", None).await.expect(200);
    assert_eq!(services["items"], json!([]));
    api.service("Teams").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_requests_time_out_and_hold_back_no_other_client() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[("CRIER_WRITE_RATE_LIMIT", "0"), ("CRIER_BODY_TIMEOUT", "2")],
    )
    .await;
    let address = address(&api);

    // 100 connections that stop half-way through their head, 100 half-way through their
    // body.
    let mut slow_heads = Vec::new();
    let mut slow_bodies = Vec::new();
    // And 20 that send nothing at all.
    let opened = std::time::Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&address).await.expect("connect"));
    }
    for _ in 0..100 {
        let mut connection = TcpStream::connect(&address).await.expect("connect");
        connection
            .write_all(b"GET /v1/services HTTP/1.1\r\nHost: cri")
            .await
            .expect("send");
        slow_heads.push(connection);
        let mut connection = TcpStream::connect(&address).await.expect("connect");
        let request = post("/v1/services", b"{\"name\": \"Teams\"}");
        connection
            .write_all(&request[..request.len() - 5])
            .await
            .expect("send");
        slow_bodies.push(connection);
    }

    // Everyone else is served meanwhile.
    for n in 0..20 {
        api.get("/v1/services", None).await.expect(200);
        api.post(
            "/v1/services",
            ADMIN_SECRET,
            json!({"name": format!("Service {n}")}),
        )
        .await
        .expect(201);
    }

    // The slow ones are answered and closed: 408 problem+json for a late body (after
    // CRIER_BODY_TIMEOUT), actix's bare 408 for a late head (after 5 s).
    for connection in &mut slow_bodies {
        let answer = read_answer(connection, Duration::from_secs(30)).await;
        assert_problem(&answer, 408);
        assert!(answer.2.contains("connection: close"), "{answer:?}");
    }
    for connection in &mut slow_heads {
        let answer = read_answer(connection, Duration::from_secs(30)).await;
        assert_eq!(answer.0, 408, "{answer:?}");
    }
    // The same bare 408 for silence, after the same 5 s (not 5 s of waiting for first
    // bytes and 5 more for a head).
    for connection in &mut silent {
        let answer = read_answer(connection, Duration::from_secs(30)).await;
        assert_eq!(answer.0, 408, "{answer:?}");
        assert!(answer.2.contains("connection: close"), "{answer:?}");
    }
    assert!(
        opened.elapsed() < Duration::from_secs(9),
        "silent connections were held {:?}",
        opened.elapsed()
    );
    let services = api.get("/v1/services?limit=500", None).await.expect(200);
    assert_eq!(
        services["items"].as_array().map(Vec::len),
        Some(20),
        "no half-sent body was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_its_most_streams_gets_429_and_others_are_served() {
    let db = TestDatabase::create().await;
    // The default limit, 1,000 streams per address; a heartbeat every second finds closed
    // ones quickly.
    let api = Api::start_with(
        &db,
        &[
            ("CRIER_WRITE_RATE_LIMIT", "0"),
            ("CRIER_STREAM_HEARTBEAT", "1"),
        ],
    )
    .await;
    let address = address(&api);
    let open = b"GET /v1/stream HTTP/1.1\r\nHost: crier\r\n\r\n";
    let mut streams = Vec::new();
    for _ in 0..1_000 {
        let mut connection = TcpStream::connect(&address).await.expect("connect");
        connection.write_all(open).await.expect("send");
        let mut first = [0u8; 12];
        connection.read_exact(&mut first).await.expect("answer");
        assert_eq!(&first, b"HTTP/1.1 200");
        streams.push(connection);
    }
    let refused = raw(&address, open, Duration::from_secs(10)).await;
    assert_problem(&refused, 429);
    assert!(refused.2.contains("retry-after: "), "{refused:?}");

    // Other requests from the same address are served.
    api.service("Teams").await;
    api.get("/api/v2/summary.json", None).await.expect(200);

    // A closed stream gives its place back.
    drop(streams.pop());
    let mut reopened = false;
    for _ in 0..50 {
        let mut connection = TcpStream::connect(&address).await.expect("connect");
        connection.write_all(open).await.expect("send");
        let mut first = [0u8; 12];
        connection.read_exact(&mut first).await.expect("answer");
        if &first == b"HTTP/1.1 200" {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reopened, "the closed stream's place was never given back");
}

/// Behind a load balancer every client has the balancer's address: only from a trusted
/// proxy is the forwarded address believed, and then each client is counted on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_client_addresses_count_from_trusted_proxies_only() {
    let db = TestDatabase::create().await;
    let failures = |api: &Api, client: &'static str| {
        let request = api
            .http
            .get(api.server.url("/v1/api-keys"))
            .bearer_auth("crier_not-a-key")
            .header("x-forwarded-for", client);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // The test's requests come from 127.0.0.1: a trusted proxy here.
    let behind = Api::start_with(
        &db,
        &[
            ("CRIER_AUTH_FAILURE_LIMIT", "3"),
            ("CRIER_TRUSTED_PROXIES", "127.0.0.1, ::1"),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(failures(&behind, "203.0.113.1").await, 401);
    }
    assert_eq!(
        failures(&behind, "203.0.113.1").await,
        429,
        "that client is locked out"
    );
    assert_eq!(
        failures(&behind, "203.0.113.2").await,
        401,
        "another client behind the same proxy is not"
    );
    drop(behind);
    // Not trusted: the header is the client's own claim, ignored; every request counts
    // against the peer, whatever it says.
    let direct = Api::start_with(&db, &[("CRIER_AUTH_FAILURE_LIMIT", "3")]).await;
    for _ in 0..3 {
        assert_eq!(failures(&direct, "203.0.113.1").await, 401);
    }
    assert_eq!(
        failures(&direct, "203.0.113.2").await,
        429,
        "a forged X-Forwarded-For does not buy a new budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_total_of_streams_a_process_answers_503_with_retry_after() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[("CRIER_STREAM_LIMIT", "3"), ("CRIER_STREAM_HEARTBEAT", "1")],
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let stream = api
            .http
            .get(api.server.url("/v1/stream"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let refused = api.get("/v1/stream", None).await;
    assert_eq!(refused.status, 503, "{:#?}", refused.body);
    assert!(refused.header("retry-after").is_some());
    drop(open);
    // A closed stream's place comes back (by its next heartbeat, when the server notices).
    let mut reopened = None;
    for _ in 0..100 {
        let stream = api
            .http
            .get(api.server.url("/v1/stream"))
            .send()
            .await
            .unwrap();
        if stream.status() == 200 {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reopened.is_some(),
        "the places of closed streams never came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_kept_to_a_token_or_an_address_of_their_own() {
    let db = TestDatabase::create().await;
    let with_token = Api::start_with(&db, &[("CRIER_METRICS_TOKEN", "scrape-me-7Qx2")]).await;
    let anonymous = with_token.get("/metrics", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(with_token.get("/metrics", Some("wrong")).await.status, 401);
    let scraped = with_token
        .http
        .get(with_token.server.url("/metrics"))
        .bearer_auth("scrape-me-7Qx2")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("crier_http_requests_total"));
    drop(with_token);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_address = format!("127.0.0.1:{port}");
    let apart = Api::start_with(&db, &[("CRIER_METRICS_LISTEN", &metrics_address)]).await;
    assert_eq!(
        apart.get("/metrics", None).await.status,
        404,
        "not on the public address"
    );
    let http = reqwest::Client::new();
    let scraped = http
        .get(format!("http://{metrics_address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let api_there = http
        .get(format!("http://{metrics_address}/v1/incidents"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        api_there.status(),
        404,
        "the metrics address serves nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_may_not_be_framed_or_load_from_elsewhere() {
    let db = TestDatabase::create().await;
    let api = Api::start(&db).await;
    let page = api.http.get(api.server.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-frame-options"), "DENY");
    let policy = header("content-security-policy");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(header("x-content-type-options"), "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_for_listed_origins_and_public_reads_and_refused_otherwise() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(
        &db,
        &[("CRIER_CORS_ORIGINS", "https://ops.contoso.example")],
    )
    .await;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let request = api
            .http
            .request(reqwest::Method::OPTIONS, api.server.url("/v1/incidents"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers);
        async move { request.send().await.unwrap() }
    };
    // It once answered 405: no browser could write.
    let listed = preflight(
        "https://ops.contoso.example",
        "POST",
        "authorization, content-type, idempotency-key",
    )
    .await;
    assert_eq!(listed.status(), 204);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header(&listed, "access-control-allow-origin"),
        "https://ops.contoso.example"
    );
    assert!(header(&listed, "access-control-allow-headers").contains("Authorization"));
    assert!(header(&listed, "access-control-allow-methods").contains("POST"));
    let public = preflight("https://intranet.nhs.example", "GET", "if-none-match").await;
    assert_eq!(public.status(), 204);
    assert_eq!(header(&public, "access-control-allow-origin"), "*");
    let keyed_elsewhere = preflight("https://intranet.nhs.example", "POST", "authorization").await;
    assert_eq!(keyed_elsewhere.status(), 403);
    // Answers: public reads for everyone, keyed ones for the listed origin only.
    let read = api
        .http
        .get(api.server.url("/api/v2/summary.json"))
        .header("origin", "https://intranet.nhs.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&read, "access-control-allow-origin"), "*");
    assert!(header(&read, "access-control-expose-headers").contains("ETag"));
    let keyed = api
        .http
        .get(api.server.url("/v1/api-keys"))
        .bearer_auth(ADMIN_SECRET)
        .header("origin", "https://intranet.nhs.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&keyed, "access-control-allow-origin"), "");
    let keyed = api
        .http
        .get(api.server.url("/v1/api-keys"))
        .bearer_auth(ADMIN_SECRET)
        .header("origin", "https://ops.contoso.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&keyed, "access-control-allow-origin"),
        "https://ops.contoso.example"
    );
    assert!(header(&keyed, "vary").contains("Origin"));
}

/// Reads from `connection` until `needle` has arrived or `wait` passes; all that arrived.
async fn read_until(connection: &mut TcpStream, needle: &str, wait: Duration) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 8192];
        while !String::from_utf8_lossy(&received).contains(needle) {
            match connection.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Streams have a dispatcher of their own (a peek at the first bytes sends them there):
/// refusals, `HEAD`, HTTP/1.0 and a head sent in pieces are all answered as actix answers
/// them, with the same headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_requests_of_every_shape_are_answered_whole() {
    let db = TestDatabase::create().await;
    let api = Api::start_with(&db, &[("CRIER_WRITE_RATE_LIMIT", "0")]).await;
    let address = address(&api);
    let wait = Duration::from_secs(10);

    // A refusal: a whole problem+json with its length, the middleware's headers, and the end.
    let refused = raw(
        &address,
        b"GET /v1/stream HTTP/1.1\r\nHost: crier\r\nLast-Event-ID: soon\r\nX-Request-Id: lean-1\r\n\r\n",
        wait,
    )
    .await;
    assert_problem(&refused, 400);
    assert!(
        refused.1["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Last-Event-ID"),
        "{refused:?}"
    );
    for header in [
        "x-request-id: lean-1",
        "x-content-type-options: nosniff",
        "connection: close",
        "date: ",
        "content-length: ",
    ] {
        assert!(refused.2.contains(header), "{header} missing: {refused:?}");
    }

    // HEAD: the stream's head and nothing else, then the connection closes.
    let mut connection = TcpStream::connect(&address).await.expect("connect");
    connection
        .write_all(b"HEAD /v1/stream HTTP/1.1\r\nHost: crier\r\n\r\n")
        .await
        .expect("send");
    let mut head = String::new();
    tokio::time::timeout(wait, connection.read_to_string(&mut head))
        .await
        .expect("HEAD is answered and closed")
        .expect("read");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(
        head.ends_with("\r\n\r\n"),
        "no body after the head: {head:?}"
    );

    // HTTP/1.0 knows no chunks: the messages come bare, and the connection's end ends them.
    let mut old = TcpStream::connect(&address).await.expect("connect");
    old.write_all(b"GET /v1/stream HTTP/1.0\r\nHost: crier\r\n\r\n")
        .await
        .expect("send");
    let opened = read_until(&mut old, "\r\n\r\n", wait).await;
    assert!(opened.starts_with("HTTP/1.1 200 OK\r\n"), "{opened}");
    assert!(
        !opened.to_ascii_lowercase().contains("transfer-encoding"),
        "{opened}"
    );

    // A head sent in two pieces is actix's to parse: served all the same, chunked.
    let mut pieces = TcpStream::connect(&address).await.expect("connect");
    pieces.write_all(b"GET /v1/stream HT").await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    pieces
        .write_all(b"TP/1.1\r\nHost: crier\r\n\r\n")
        .await
        .expect("send");
    let chunked = read_until(&mut pieces, "\r\n\r\n", wait).await;
    assert!(chunked.starts_with("HTTP/1.1 200 OK\r\n"), "{chunked}");
    assert!(chunked.contains("transfer-encoding: chunked"), "{chunked}");

    // And a notice reaches both.
    let publisher = api.key("publisher", None).await;
    let teams = api.service("Teams").await;
    let incident = json!({
        "title": "Calls drop", "impact": "major", "message": "Investigating.",
        "affected_services": [{"service_id": teams, "status": "major_outage"}],
    });
    api.declare(&publisher, incident).await;
    for connection in [&mut old, &mut pieces] {
        let notice = read_until(connection, "Calls drop", wait).await;
        assert!(notice.contains("event: incident.declared\n"), "{notice}");
    }
}
