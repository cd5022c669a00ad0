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
//! subscriber costs 3.3 KiB, the relay's record of it included (`cargo bench --bench
//! stream -- --subscribers 18000`; docs/PERFORMANCE.md says where the rest goes).
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
//! # Notices written by the relay
//!
//! A stream's route puts [`DirectWrites`] on its answer; the connection is put in it, and
//! the stream's notices are then written to the socket by its thread's relay whenever the
//! stream has nothing else to send, without waking the connection's task
//! (`notices::direct`). A message the socket takes only part of leaves its rest here,
//! written before the body's next chunk.
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
//! - The socket is written by one side at a time, each message whole: the answer's writer
//!   polls the body only with nothing left unwritten, and the relay writes only while the
//!   body waits with the stream handed to it.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::task::Poll;
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
use actix_web::web::Bytes;
use notices::{LiveSocket, LiveWrite};
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

/// Put on a stream's answer by its route: the lean dispatcher puts the connection in it,
/// so that the stream's notices can be written to it by its thread's relay. Answers served
/// by actix-http leave it empty.
#[derive(Clone, Default)]
pub struct DirectWrites(Rc<Cell<Option<Rc<dyn LiveSocket>>>>);

impl DirectWrites {
    /// The connection, if the answer is written by the lean dispatcher.
    pub fn take(&self) -> Option<Rc<dyn LiveSocket>> {
        self.0.take()
    }
}

/// A stream's connection, shared by the answer's writer and the thread's relay.
struct StreamConnection {
    socket: TcpStream,
    /// Whether the body is sent in chunks (HTTP/1.1) or until the close (HTTP/1.0).
    chunked: bool,
    /// What a direct write left unwritten: written before anything else.
    unwritten: RefCell<Vec<u8>>,
}

impl StreamConnection {
    fn has_unwritten(&self) -> bool {
        self.unwritten
            .try_borrow()
            .is_ok_and(|rest| !rest.is_empty())
    }
}

impl LiveSocket for StreamConnection {
    fn write_now(&self, message: &Bytes) -> LiveWrite {
        // Not reached (only `write_answer` borrows it, between writes of its own), but a
        // message that cannot be kept in order must end the stream rather than be lost.
        let Ok(mut unwritten) = self.unwritten.try_borrow_mut() else {
            return LiveWrite::Failed;
        };
        let mut prefix = [0; CHUNK_PREFIX_BYTES];
        let parts = framed(self.chunked, message, &mut prefix);
        // Never reached (the relay writes only with nothing left unwritten), but bytes
        // must not overtake bytes.
        let written = if unwritten.is_empty() {
            let slices = parts.map(IoSlice::new);
            match self.socket.try_write_vectored(&slices) {
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => return LiveWrite::Failed,
            }
        } else {
            0
        };
        let total: usize = parts.iter().map(|part| part.len()).sum();
        if written == total {
            return LiveWrite::Whole;
        }
        let mut skip = written;
        for part in parts {
            let taken = skip.min(part.len());
            unwritten.extend_from_slice(&part[taken..]);
            skip -= taken;
        }
        LiveWrite::Partly
    }
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
    let connection = Rc::new(StreamConnection {
        socket: connection,
        chunked: !close_delimited,
        unwritten: RefCell::new(Vec::new()),
    });
    if !head_only {
        if let Some(slot) = response.extensions().get::<DirectWrites>() {
            slot.0.set(Some(connection.clone()));
        }
    }
    let written = write_answer(&connection, response, head_only, close_delimited).await;
    // The body, and with it every other holder of the connection, is gone.
    if let (Ok(()), Ok(connection)) = (written, Rc::try_unwrap(connection)) {
        // Boxed: a stream's future would keep room for it while it streams.
        Box::pin(close(connection.socket)).await;
    }
}

/// What the answer's writer does next.
enum Next<T> {
    /// Writes what a direct write left.
    Unwritten,
    /// Writes the body's next chunk (or ends).
    Chunk(Option<T>),
}

async fn write_answer(
    connection: &StreamConnection,
    response: Response<BoxBody>,
    head_only: bool,
    close_delimited: bool,
) -> io::Result<()> {
    let socket = &connection.socket;
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
    write_all(socket, &mut [IoSlice::new(&out)]).await?;
    drop(out);
    if head_only || size == BodySize::None {
        return Ok(());
    }
    let mut body = std::pin::pin!(body);
    loop {
        // What a direct write left goes first, and the body is polled only with nothing
        // left: the relay is handed the stream from inside that poll.
        let next = std::future::poll_fn(|cx| {
            if connection.has_unwritten() {
                return Poll::Ready(Next::Unwritten);
            }
            body.as_mut().poll_next(cx).map(Next::Chunk)
        })
        .await;
        let chunk = match next {
            Next::Unwritten => {
                let rest = connection.unwritten.take();
                write_all(socket, &mut [IoSlice::new(&rest)]).await?;
                continue;
            }
            Next::Chunk(None) => break,
            // A body that fails ends the answer short, as actix-http ends it.
            Next::Chunk(Some(Err(_))) => return Ok(()),
            Next::Chunk(Some(Ok(chunk))) => chunk,
        };
        if chunk.is_empty() {
            continue;
        }
        let mut prefix = [0; CHUNK_PREFIX_BYTES];
        write_all(
            socket,
            &mut framed(chunked, &chunk, &mut prefix).map(IoSlice::new),
        )
        .await?;
    }
    if chunked {
        write_all(socket, &mut [IoSlice::new(b"0\r\n\r\n")]).await?;
    }
    Ok(())
}

/// A message as the body carries it: as a chunk of its own (size line, message, CRLF), or
/// as it is when the close delimits the body. `prefix` holds the size line.
fn framed<'a>(
    chunked: bool,
    message: &'a [u8],
    prefix: &'a mut [u8; CHUNK_PREFIX_BYTES],
) -> [&'a [u8]; 3] {
    if chunked {
        [chunk_prefix(message.len(), prefix), message, b"\r\n"]
    } else {
        [b"", message, b""]
    }
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

/// Writes all of `slices` to a socket shared with the relay (whose writes go through
/// `&TcpStream` too).
async fn write_all(socket: &TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        // Not `writable()`: its future holds a waiter of its own, kept in every stream's
        // state; the socket's own writer slot will do, this task being its only writer
        // that waits.
        std::future::poll_fn(|cx| socket.poll_write_ready(cx)).await?;
        match socket.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
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

    #[tokio::test]
    async fn what_a_direct_write_leaves_unwritten_is_written_after_it_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut client, (socket, _)) = (client.unwrap(), accepted.unwrap());
        let connection = StreamConnection {
            socket,
            chunked: true,
            unwritten: RefCell::new(Vec::new()),
        };
        connection.socket.writable().await.unwrap();
        // Written until the socket, unread, takes only part of one.
        let message = Bytes::from(vec![b'x'; 65_536]);
        let mut whole = 0;
        loop {
            match connection.write_now(&message) {
                LiveWrite::Whole => whole += 1,
                LiveWrite::Partly => break,
                LiveWrite::Failed => panic!("the socket is open"),
            }
            assert!(whole < 10_000, "the socket never filled");
        }
        assert!(connection.has_unwritten());
        // Nothing overtakes what is left.
        let next = Bytes::from_static(b"next");
        assert_eq!(connection.write_now(&next), LiveWrite::Partly);
        let reading = tokio::spawn(async move {
            let mut read = Vec::new();
            client.read_to_end(&mut read).await.unwrap();
            read
        });
        let rest = connection.unwritten.take();
        write_all(&connection.socket, &mut [IoSlice::new(&rest)])
            .await
            .unwrap();
        drop(connection);
        let read = reading.await.unwrap();
        let mut expected = Vec::new();
        for _ in 0..=whole {
            expected.extend_from_slice(b"10000\r\n");
            expected.extend_from_slice(&message);
            expected.extend_from_slice(b"\r\n");
        }
        expected.extend_from_slice(b"4\r\nnext\r\n");
        assert_eq!(read.len(), expected.len());
        assert!(read == expected, "the bytes arrive whole and in order");
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
