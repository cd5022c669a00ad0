//! The HTTP server: the actix-web app on actix-http's HTTP/1 dispatcher, except for event
//! streams, which a lean dispatcher of this module serves.
//!
//! # Why streams have a dispatcher of their own
//!
//! actix-http gives every connection a read buffer and a write buffer of 8 KiB each, for
//! the connection's life. A subscriber to `GET /v1/stream` holds its connection for hours
//! and uses neither after its first bytes: they were two thirds of the 12.4 KiB a
//! subscriber cost, and one process must hold 100,000 subscribers. Served here, with the
//! answer's head dropped once written and the stream's future boxed apart from its task, a
//! subscriber costs 3.3 KiB (3.5 on glibc's allocator; `cargo bench --bench stream --
//! --subscribers 18000`;
//! docs/PERFORMANCE.md says where the rest goes).
//!
//! So a new connection's first bytes are peeked at (not read) once they arrive. When they
//! hold a whole request head for `GET` or `HEAD /v1/stream` with no body, the head is read
//! off the socket and served here: the request goes through the same app, middleware,
//! extractors and handler as any other, and only its answer is written differently: the
//! head once, then each chunk of the body straight from the body's own bytes (shared by
//! every subscriber of a notice) with one vectored write, no buffer kept. The connection
//! then closes (`connection: close`): a stream ends only when its subscriber goes.
//!
//! Everything else, a head that arrives in pieces or too large to peek at included, goes to
//! actix-http untouched, so no request is refused or parsed differently for taking the
//! other road.
//!
//! # Invariants
//! - A request served here is one actix-http would have parsed the same way: `GET`/`HEAD`,
//!   HTTP/1.0 or 1.1, no body, no `Upgrade`/`Expect`, every header valid, one `Host` (and
//!   one where HTTP/1.1 needs it); what actix-http would refuse is left to it to refuse.
//! - The answer carries the same status and headers (`content-length`, `transfer-encoding`,
//!   `connection` and `date` written here, as actix-http's encoder does).
//! - A stream whose client is gone ends at the next write that fails (a heartbeat at the
//!   latest), as on actix-http.
//! - Every branch of a connection's future that awaits is boxed: the connection's task
//!   holds that future's size twice for as long as a stream lasts (an unboxed 408 branch
//!   once cost every subscriber 1.7 KiB).

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use actix_http::body::{BodySize, MessageBody};
use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_server::Server;
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, Service, ServiceFactory,
    ServiceFactoryExt,
};
use actix_web::body::BoxBody;
use actix_web::dev::AppConfig;
use actix_web::http::header::{self, HeaderName, HeaderValue, HttpDate};
use actix_web::http::{Method, StatusCode, Uri, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The path whose requests the lean dispatcher serves.
const STREAM_PATH: &str = "/v1/stream";
/// How much of a connection's first bytes are looked at. Larger heads go to actix-http.
const PEEK_BYTES: usize = 2048;
/// Most headers a request served here may have (actix-http takes up to 96).
const MAX_HEADERS: usize = 32;
/// How long a connection may take to send its first bytes, as actix-http allows a request
/// head (its `client_request_timeout`). A connection that sends nothing in that time gets
/// the bare 408 actix-http would answer.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(5);

/// How the server runs: its listeners and worker threads.
pub struct ServerSettings {
    pub listeners: Vec<TcpListener>,
    pub workers: usize,
    /// How long a stopping server waits for open answers before it drops them.
    pub shutdown_timeout_secs: u64,
}

/// The server of `app`: one instance of it per worker thread and listener for actix-http,
/// and one for the streams. The settings actix-http gets are actix-web's `HttpServer`
/// defaults (keep-alive 5 s, a request head within 5 s, 1 s to close).
pub fn server<F, I, S, B>(app: F, settings: ServerSettings) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig, InitError = ()> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut builder = Server::build()
        .workers(settings.workers)
        .shutdown_timeout(settings.shutdown_timeout_secs);
    for listener in settings.listeners {
        let address = listener.local_addr()?;
        let shutdown = builder.graceful_shutdown_signal();
        let app = app.clone();
        builder = builder.listen(format!("crier-{address}"), listener, move || {
            // actix-web makes this config in its `HttpServer` only; the constructor it gives
            // other crates (actix-test) is the hidden one. The lock file pins the version.
            let config = move || AppConfig::__priv_test_new(false, address.to_string(), address);
            let shutdown = shutdown.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(KeepAlive::default())
                .client_request_timeout(FIRST_BYTES_TIMEOUT)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(address)
                .finish(map_config(
                    app().into_factory().map_err(|e| e.into().error_response()),
                    move |_| config(),
                ))
                .tcp();
            let streams = map_config(app().into_factory(), move |_| config());
            fn_factory(move || {
                let http = http.new_service(());
                let streams = streams.new_service(());
                async move {
                    let http = Rc::new(http.await?);
                    let streams = Rc::new(streams.await?);
                    Ok::<_, ()>(fn_service(move |connection: TcpStream| {
                        let http = http.clone();
                        let streams = streams.clone();
                        async move {
                            match Box::pin(arrival(&connection)).await {
                                Arrival::Silent => {
                                    // Boxed, as every branch that awaits here: the
                                    // task holds this future's size twice, and a
                                    // stream holds its task for hours.
                                    Box::pin(request_timed_out(connection)).await;
                                    Ok(())
                                }
                                Arrival::Stream(request, head_len) => {
                                    Box::pin(serve_stream(
                                        connection, request, head_len, &*streams,
                                    ))
                                    .await;
                                    Ok(())
                                }
                                Arrival::Other => Box::pin(http.call(connection))
                                    .await
                                    .map(drop)
                                    .map_err(drop),
                            }
                        }
                    }))
                }
            })
        })?;
    }
    Ok(builder.run())
}

/// What a new connection's first bytes are.
enum Arrival {
    /// A stream's request and the length of its head.
    Stream(Request, usize),
    /// Anything else: actix-http's to read.
    Other,
    /// Nothing within the time a request head may take.
    Silent,
}

async fn arrival(connection: &TcpStream) -> Arrival {
    let mut first = vec![0; PEEK_BYTES];
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, connection.peek(&mut first)).await {
        Err(_) => Arrival::Silent,
        Ok(Err(_)) => Arrival::Other,
        Ok(Ok(peeked)) => match parse_stream_request(&first[..peeked], connection.peer_addr().ok())
        {
            Some((request, head_len)) => Arrival::Stream(request, head_len),
            None => Arrival::Other,
        },
    }
}

/// What actix-http answers a connection that sent nothing in time: a bare 408, then the
/// end. (Handing it over would give it a second five seconds.)
async fn request_timed_out(mut connection: TcpStream) {
    let answer = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\ndate: {}\r\n\r\n",
        HttpDate::from(SystemTime::now())
    );
    if connection.write_all(answer.as_bytes()).await.is_ok() {
        close(connection).await;
    }
}

/// Closes a connection once its answer is written: the write side first, then whatever the
/// client still sends is read and dropped for up to a second (as actix-http's
/// `client_disconnect_timeout`), so that unread bytes do not make the close a reset that
/// could discard the answer on the client's side.
async fn close(mut connection: TcpStream) {
    if connection.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut discarded = [0; 512];
        while let Ok(1..) = connection.read(&mut discarded).await {}
    })
    .await;
}

/// A request for the stream, parsed from a connection's first bytes, and the length of its
/// head; `None` for anything actix-http should see instead.
fn parse_stream_request(bytes: &[u8], peer: Option<SocketAddr>) -> Option<(Request, usize)> {
    // Most connections are not streams: a look at the request line's start spares their
    // heads a parse here, before actix-http's own.
    let target = bytes
        .strip_prefix(b"GET ")
        .or_else(|| bytes.strip_prefix(b"HEAD "))?;
    if !target.starts_with(STREAM_PATH.as_bytes()) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let target = parsed.path?;
    if target.split_once('?').map_or(target, |(path, _)| path) != STREAM_PATH {
        return None;
    }
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let mut request = Request::new();
    let head = request.head_mut();
    head.method = method;
    head.uri = Uri::try_from(target).ok()?;
    head.version = version;
    head.peer_addr = peer;
    // What actix-http refuses (a second Host or Content-Length, HTTP/1.1 without Host) is
    // left to it, to be refused the same way.
    let (mut hosts, mut lengths) = (0, 0);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        let taken = match name {
            header::HOST => {
                hosts += 1;
                hosts == 1
            }
            header::CONTENT_LENGTH => {
                lengths += 1;
                lengths == 1 && value.as_bytes() == b"0"
            }
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => false,
            _ => true,
        };
        if !taken {
            return None;
        }
        head.headers.append(name, value);
    }
    if version == Version::HTTP_11 && hosts == 0 {
        return None;
    }
    Some((request, head_len))
}

/// Serves one stream request: reads its head off the connection, runs it through the app
/// and writes the answer, then closes.
async fn serve_stream<S, B>(mut connection: TcpStream, request: Request, head_len: usize, app: &S)
where
    S: Service<Request>,
    S::Error: Into<actix_web::Error>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    // The head was only peeked at: it is in the socket's buffer already.
    let mut head = vec![0; head_len];
    if connection.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    // Each message is written whole, once: nothing to gain from holding it back.
    let _ = connection.set_nodelay(true);
    let head_only = request.method() == Method::HEAD;
    let close_delimited = request.version() == Version::HTTP_10;
    let response: Response<BoxBody> = match Box::pin(app.call(request)).await {
        Ok(response) => response.into().map_into_boxed_body(),
        Err(error) => error.into().error_response().into(),
    };
    if write_answer(&mut connection, response, head_only, close_delimited)
        .await
        .is_ok()
    {
        // Boxed: a stream's future would keep room for it while it streams.
        Box::pin(close(connection)).await;
    }
}

async fn write_answer(
    connection: &mut TcpStream,
    response: Response<BoxBody>,
    head_only: bool,
    close_delimited: bool,
) -> io::Result<()> {
    let (head, body) = response.into_parts();
    let status = head.status();
    // As actix-http's encoder: these answers have no body and say no length.
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let size = if bodiless_status {
        BodySize::None
    } else {
        body.size()
    };
    let chunked = size == BodySize::Stream && !close_delimited;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.head().reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in head.headers().iter() {
        match *name {
            header::CONNECTION | header::CONTENT_LENGTH | header::TRANSFER_ENCODING => continue,
            header::DATE => dated = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        out.extend_from_slice(
            format!("date: {}\r\n", HttpDate::from(SystemTime::now())).as_bytes(),
        );
    }
    match size {
        BodySize::Sized(length) => {
            out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes())
        }
        BodySize::Stream if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodySize::Stream | BodySize::None => {}
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    // Its header map has room for a dozen headers of several values each (3.2 KiB): a stream
    // must not keep it for its life.
    drop(head);
    connection.write_all(&out).await?;
    drop(out);
    if head_only || size == BodySize::None {
        return Ok(());
    }
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        // A body that fails ends the answer short, as actix-http ends it.
        let Ok(chunk) = chunk else {
            return Ok(());
        };
        if chunk.is_empty() {
            continue;
        }
        if chunked {
            let mut prefix = [0; CHUNK_PREFIX_BYTES];
            let prefix = chunk_prefix(chunk.len(), &mut prefix);
            write_all_vectored(
                connection,
                &mut [
                    IoSlice::new(prefix),
                    IoSlice::new(&chunk),
                    IoSlice::new(b"\r\n"),
                ],
            )
            .await?;
        } else {
            connection.write_all(&chunk).await?;
        }
    }
    if chunked {
        connection.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// The longest chunk-size line: 16 hex digits and CRLF.
const CHUNK_PREFIX_BYTES: usize = 18;

/// A chunk's size line (`1a2\r\n`), written into `buffer` (no allocation: one is written
/// per subscriber and notice).
fn chunk_prefix(length: usize, buffer: &mut [u8; CHUNK_PREFIX_BYTES]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = CHUNK_PREFIX_BYTES - 2;
    buffer[start..].copy_from_slice(b"\r\n");
    let mut rest = length;
    loop {
        start -= 1;
        buffer[start] = HEX[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    &buffer[start..]
}

async fn write_all_vectored(
    connection: &mut TcpStream,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let written = connection.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Option<(Request, usize)> {
        parse_stream_request(bytes, Some(([127, 0, 0, 1], 4000).into()))
    }

    #[test]
    fn a_whole_stream_request_head_is_taken_with_its_length() {
        let head = b"GET /v1/stream?service_id=x&lang=cy HTTP/1.1\r\nHost: crier\r\nLast-Event-ID: 7\r\n\r\n";
        let (request, length) = parse(head).expect("a stream request");
        assert_eq!(length, head.len());
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.path(), "/v1/stream");
        assert_eq!(request.uri().query(), Some("service_id=x&lang=cy"));
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(
            request
                .head()
                .headers
                .get("last-event-id")
                .map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
        assert_eq!(request.peer_addr(), Some(([127, 0, 0, 1], 4000).into()));
        let with_more = [&head[..], b"GET / HTTP/1.1\r\n"].concat();
        assert_eq!(
            parse(&with_more).map(|(_, length)| length),
            Some(head.len())
        );
        let (head_request, _) = parse(b"HEAD /v1/stream HTTP/1.0\r\n\r\n").expect("HEAD");
        assert_eq!(head_request.method(), Method::HEAD);
        assert_eq!(head_request.version(), Version::HTTP_10);
        assert!(
            parse(b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").is_some()
        );
    }

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        let mut buffer = [0; CHUNK_PREFIX_BYTES];
        for length in [0, 1, 15, 16, 255, 1_234, 1 << 20, usize::MAX] {
            let expected = format!("{length:x}\r\n");
            assert_eq!(chunk_prefix(length, &mut buffer), expected.as_bytes());
        }
    }

    #[test]
    fn anything_else_is_left_to_actix() {
        for head in [
            &b"GET /v1/stream HTTP/1.1\r\nHost: crier\r\n"[..],
            b"GET /v1/streams HTTP/1.1\r\nHost: a\r\n\r\n",
            // What actix-http refuses with a 400, it refuses itself.
            b"GET /v1/stream HTTP/1.1\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n",
            b"GET /v1/stream/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /api/v2/summary.json HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /v1/stream HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(parse(head).is_none(), "{:?}", String::from_utf8_lossy(head));
        }
        let many = format!(
            "GET /v1/stream HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse(many.as_bytes()).is_none(), "more headers than kept");
    }
}
