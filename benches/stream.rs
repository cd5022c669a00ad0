//! Many Server-Sent Events subscribers on one `crier serve`: publish-to-last-delivery
//! latency, the server's memory per subscriber, and what the load client itself cost.
//!
//!     cargo bench --bench stream                                  # 100,000, or what fits
//!     cargo bench --bench stream -- --subscribers 18000 --notices 20
//!     cargo bench --bench stream -- --subscribers 2000 --heartbeat 2
//!
//! Starts the release `crier serve` on a fresh database, opens the subscribers (plain
//! HTTP/1.1 connections reading `GET /v1/stream`), measures the server's resident memory
//! before and after, then publishes incidents one at a time (every 500 ms) and records, for
//! each, the time from sending the POST until the last subscriber has read it. Two baselines
//! come from the same run: the POST's own answer time (what a publisher waits for), and the
//! floor.
//!
//! The floor: after crier is stopped, this program starts itself again as a bare writer
//! (`--floor-writer`, a process of its own, as the server is) and the same client connects
//! as many subscribers to it. The writer answers each with a stream's head, then sends each
//! notice, as many bytes as crier's averaged on the wire, in an HTTP chunk with an `event:`
//! line, to every connection, one blocking `writev` each as crier writes it, from two
//! threads (crier's HTTP workers), and nothing else: no task, no ring, no filter, no timer.
//! Its notices are paced as crier's are (every 500 ms, not waiting for the writes). Its
//! publish-to-last delivery is the least this machine's loopback, scheduler and client allow
//! one notice to take, whatever the server; the table gives it, how many subscribers it
//! reached, and the ratio of the two p99s.
//!
//! Connections: each process (this one, and the server it starts) needs a file per
//! subscriber, so the count asked for is lowered to what the open-file limit allows (with
//! 1,000 to spare), and the table says so. The connections come from many loopback source
//! addresses (127.0.x.y, 500 each), so that neither the ephemeral port range nor the
//! server's per-address stream cap binds: the server is measured as it would be by a crowd.
//!
//! Heartbeats: the server is started with `--heartbeat` seconds of silence before a comment
//! (15 by default, as in production); with a hundred notices (`run-all`) the publishing lasts
//! several periods, so their latency includes whatever the heartbeats of every subscriber
//! cost (timers that re-arm while notices flow).
//!
//! Reading: once connected, each subscriber is read by one of two threads of the client's own
//! on `epoll`, which let deliveries gather for a millisecond after each wake-up (see
//! [`GATHER`]); each notice is stamped when it is read.
//!
//! The client's own CPU (user and system, from `/proc/self/stat`) and the server's are
//! printed beside the figures, so a saturated client shows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failed test

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, LazyLock};
use std::time::{Duration, Instant};

use memchr::memmem::Finder;

use eventstore::testing::TestDatabase;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

mod serve;

use serve::{incident, percentile, BenchServer};

struct Args {
    subscribers: usize,
    notices: usize,
    heartbeat: u64,
}

fn args() -> Args {
    let mut args = Args {
        subscribers: 100_000,
        notices: 20,
        heartbeat: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--subscribers", Some(v)) => args.subscribers = v,
            ("--notices", Some(v)) => args.notices = v,
            ("--heartbeat", Some(v)) => args.heartbeat = v as u64,
            _ => {}
        }
    }
    args
}

/// Files every process keeps besides the subscribers' sockets (pools, logs, listeners).
const FILES_TO_SPARE: u64 = 1_000;
/// Connections per loopback source address: well inside one address's port range.
const PER_SOURCE_ADDRESS: usize = 500;

/// Raises this process's soft open-file limit to the hard one (the server inherits it)
/// and returns how many subscribers fit.
fn subscribers_that_fit(wanted: usize) -> (usize, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = files.saturating_sub(FILES_TO_SPARE) as usize;
    (wanted.min(fit), files)
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far. `/proc/<pid>/stat` counts in
/// USER_HZ, which Linux fixes at 100 for every program.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `index`th subscriber's loopback source address: 127.0.1.1 onwards, 500 each.
fn source_address(index: usize) -> SocketAddr {
    let n = index / PER_SOURCE_ADDRESS;
    let ip = Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8);
    SocketAddr::V4(SocketAddrV4::new(ip, 0))
}

/// The start of a notice's `event:` line. The client reads every subscriber's every chunk,
/// on the same two cores as the server: a byte-by-byte search was most of its user time in
/// `perf`, time the server's deliveries then waited for.
static EVENT_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\nevent: "));
static CONNECTED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b": connected"));

/// How long a reader thread lets deliveries gather after it wakes before it reads them,
/// as a network card's interrupt coalescing does. Without it the readers slept in
/// `epoll_wait` between deliveries, and every delivery's `writev` in the server woke one of
/// them from inside the server's own system call: `perf` put 11 % of the server's samples
/// there (a wake-up crossing CPUs is dear in a virtual machine), a cost of loopback that a
/// crowd on other machines never puts on the server. A delivery is stamped when it is
/// read, so this at most adds to the latencies measured.
const GATHER: Duration = Duration::from_millis(1);
/// Threads reading the subscribers' connections (the machine's cores, as tokio's default).
const READERS: usize = 2;
/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// Opens one subscriber: connects from its own source address and sends the request. Its
/// reader thread reads the rest.
async fn connect(server: SocketAddr, index: usize) -> std::net::TcpStream {
    let opened = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(source_address(index))?;
        let mut socket = socket.connect(server).await?;
        let request = format!(
            "GET /v1/stream HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        socket.into_std()
    };
    match opened.await {
        Ok(socket) => socket,
        Err(e) => {
            // A panic here would end only this task, and main would wait forever.
            eprintln!("subscriber {index}: could not connect: {e}");
            std::process::exit(1);
        }
    }
}

/// A subscriber's connection, as its reader thread holds it.
struct Connection {
    socket: mio::net::TcpStream,
    /// What was read and may still start or finish an `event:` line.
    buffer: Vec<u8>,
    is_open: bool,
    /// When each notice was read.
    arrivals: Vec<Instant>,
    /// Bytes read since the stream opened: what the notices cost on the wire, which the
    /// floor's writer then sends.
    bytes_after_open: usize,
}

impl Connection {
    fn new(socket: std::net::TcpStream, notices: usize) -> Connection {
        Connection {
            socket: mio::net::TcpStream::from_std(socket),
            // Large enough for a chunk and the kept tail, and room for every notice: no
            // notice makes the client allocate.
            buffer: Vec::with_capacity(2048 + 128),
            is_open: false,
            arrivals: Vec::with_capacity(notices),
            bytes_after_open: 0,
        }
    }

    /// Reads everything that has arrived (readiness is edge-triggered); false once the
    /// connection is closed.
    fn read(&mut self, index: usize, chunk: &mut [u8], opened: &AtomicUsize) -> bool {
        loop {
            let read = match self.socket.read(chunk) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            let now = Instant::now();
            self.take(index, &chunk[..read], now, opened);
        }
    }

    /// Counts the notices in `bytes`, read at `now`.
    fn take(&mut self, index: usize, bytes: &[u8], now: Instant, opened: &AtomicUsize) {
        if self.is_open {
            self.bytes_after_open += bytes.len();
        }
        let buffer = &mut self.buffer;
        buffer.extend_from_slice(bytes);
        if !self.is_open && buffer.starts_with(b"HTTP/1.1 ") && !buffer.starts_with(b"HTTP/1.1 200")
        {
            let status = String::from_utf8_lossy(&buffer[..buffer.len().min(12)]).into_owned();
            eprintln!("subscriber {index}: the stream was refused: {status}");
            std::process::exit(1);
        }
        if !self.is_open && CONNECTED.find(buffer).is_some() {
            self.is_open = true;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        // Count notices by their complete `event:` lines (the opening and heartbeats carry
        // `id:` lines too, but no event). Keep only what could still start or finish one, so
        // that no byte is searched twice.
        let mut searched = 0;
        let mut keep_from = None;
        while let Some(at) = EVENT_LINE.find(&buffer[searched..]) {
            let start = searched + at + EVENT_LINE.needle().len();
            match memchr::memchr(b'\n', &buffer[start..]) {
                Some(end) => {
                    self.arrivals.push(now);
                    searched = start + end;
                }
                None => {
                    keep_from = Some(searched + at);
                    break;
                }
            }
        }
        let consumed = match keep_from {
            Some(event_line) => event_line,
            None if self.is_open => {
                searched.max(buffer.len().saturating_sub(EVENT_LINE.needle().len() - 1))
            }
            None => 0,
        };
        buffer.drain(..consumed);
    }
}

/// What one subscriber read: when each notice arrived, and how many bytes came after the
/// stream opened.
#[derive(Default)]
struct Heard {
    arrivals: Vec<Instant>,
    bytes: usize,
}

/// One reader thread: takes its share of the connections from `incoming` and reads them
/// until `stop`; returns what each subscriber heard.
fn read_subscribers(
    incoming: mpsc::Receiver<(usize, std::net::TcpStream)>,
    notices: usize,
    opened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<(usize, Heard)> {
    let mut poll = mio::Poll::new().expect("epoll");
    let mut events = mio::Events::with_capacity(EVENTS_PER_WAIT);
    let mut connections: HashMap<usize, Connection> = HashMap::new();
    let mut closed = Vec::new();
    let mut chunk = [0u8; 2048];
    let heard = |c: Connection| Heard {
        arrivals: c.arrivals,
        bytes: c.bytes_after_open,
    };
    while !stop.load(Ordering::Relaxed) {
        while let Ok((index, socket)) = incoming.try_recv() {
            let mut connection = Connection::new(socket, notices);
            poll.registry()
                .register(
                    &mut connection.socket,
                    mio::Token(index),
                    mio::Interest::READABLE,
                )
                .expect("register a subscriber");
            connections.insert(index, connection);
        }
        match poll.poll(&mut events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        }
        let mut woken = 0;
        for event in events.iter() {
            woken += 1;
            let index = event.token().0;
            let Some(connection) = connections.get_mut(&index) else {
                continue;
            };
            if !connection.read(index, &mut chunk, &opened) {
                if let Some(connection) = connections.remove(&index) {
                    closed.push((index, heard(connection)));
                }
            }
        }
        // A full batch: more are waiting already.
        if woken > 0 && woken < EVENTS_PER_WAIT {
            std::thread::sleep(GATHER);
        }
    }
    closed.extend(connections.into_iter().map(|(index, c)| (index, heard(c))));
    closed
}

/// Subscribers connected to one server and read by the client's reader threads.
struct Subscribed {
    readers: Vec<std::thread::JoinHandle<Vec<(usize, Heard)>>>,
    stop: Arc<AtomicBool>,
    connect_time: Duration,
}

/// Connects `subscribers` readers of `GET /v1/stream` to `address` and waits until every
/// stream has opened.
async fn subscribe(address: SocketAddr, subscribers: usize, notices: usize) -> Subscribed {
    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (to_readers, readers): (Vec<_>, Vec<_>) = (0..READERS)
        .map(|n| {
            let (to_reader, incoming) = mpsc::channel();
            let (opened, stop) = (opened.clone(), stop.clone());
            let reader = std::thread::Builder::new()
                .name(format!("subscribers-{n}"))
                .spawn(move || read_subscribers(incoming, notices, opened, stop))
                .expect("a reader thread");
            (to_reader, reader)
        })
        .unzip();
    let started = Instant::now();
    for index in 0..subscribers {
        let to_reader = to_readers[index % READERS].clone();
        tokio::spawn(async move {
            let socket = connect(address, index).await;
            let _ = to_reader.send((index, socket));
        });
        // Connect in waves, as a crowd reconnecting after an outage would not all at once.
        if index % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while opened.load(Ordering::Relaxed) < subscribers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Subscribed {
        readers,
        stop,
        connect_time: started.elapsed(),
    }
}

impl Subscribed {
    /// Stops reading and closes every connection; what each subscriber heard, in order.
    fn finish(self, subscribers: usize) -> Vec<Heard> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Heard> = (0..subscribers).map(|_| Heard::default()).collect();
        for reader in self.readers {
            for (index, heard) in reader.join().expect("a reader thread") {
                all[index] = heard;
            }
        }
        all
    }
}

/// How many subscribers read every one of `notices`.
fn heard_every_notice(all: &[Heard], notices: usize) -> usize {
    all.iter().filter(|h| h.arrivals.len() >= notices).count()
}

/// Each notice's first and last delivery, and every delivery, in ms after it was sent.
struct Latencies {
    first: Vec<f64>,
    last: Vec<f64>,
    every: Vec<f64>,
}

fn latencies(all: &[Heard], published: &[Instant]) -> Latencies {
    let mut latencies = Latencies {
        first: Vec::new(),
        last: Vec::new(),
        every: Vec::new(),
    };
    for (n, sent) in published.iter().enumerate() {
        let (mut earliest, mut latest) = (f64::MAX, 0.0f64);
        for subscriber in all {
            if let Some(at) = subscriber.arrivals.get(n) {
                let ms = at.duration_since(*sent).as_secs_f64() * 1000.0;
                latencies.every.push(ms);
                earliest = earliest.min(ms);
                latest = latest.max(ms);
            }
        }
        latencies.first.push(earliest);
        latencies.last.push(latest);
    }
    latencies
}

/// The argument that makes this program the floor's writer (see [`floor_writer`]).
const FLOOR_WRITER: &str = "--floor-writer";
/// Threads the floor's writer sends on: as many as the server's HTTP workers.
const FLOOR_THREADS: usize = 2;

/// The floor: the least any server could spend on the same fan-out on this machine. A
/// process of its own (its sockets need a file each, as the server's do) that accepts
/// `subscribers` connections, answers each with a stream's head and a `: connected`
/// comment, then, for each line read on stdin, writes one message of `bytes` bytes (an
/// SSE message with an `event:` line in an HTTP chunk, written as crier writes it: one
/// `writev` of the chunk's size line, the message and the CRLF after it) to every
/// connection, from [`FLOOR_THREADS`] threads with their shares of the connections, and
/// nothing else. Prints its address first. Ends when stdin does, or with this program.
fn floor_writer(subscribers: usize, bytes: usize) {
    use std::io::{BufRead, IoSlice, Write};
    // Whatever way the bench ends, an orphaned writer would hold its sockets for good.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .expect("a parent-death signal");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    println!("{}", listener.local_addr().expect("the floor's address"));
    std::io::stdout().flush().expect("stdout");
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                 transfer-encoding: chunked\r\n\r\nd\r\n: connected\n\n\r\n";
    let mut shares: Vec<Vec<std::net::TcpStream>> =
        (0..FLOOR_THREADS).map(|_| Vec::new()).collect();
    for n in 0..subscribers {
        let (mut connection, _) = listener.accept().expect("accept");
        connection.set_nodelay(true).expect("nodelay");
        connection.write_all(head).expect("the stream's head");
        shares[n % FLOOR_THREADS].push(connection);
    }
    let to_threads: Vec<_> = shares
        .into_iter()
        .map(|mut share| {
            let (to_thread, notices) = mpsc::channel::<Arc<FloorMessage>>();
            std::thread::spawn(move || {
                for message in notices {
                    for connection in &mut share {
                        let mut slices = [
                            IoSlice::new(&message.size_line),
                            IoSlice::new(&message.event),
                            IoSlice::new(b"\r\n"),
                        ];
                        let mut slices = &mut slices[..];
                        while !slices.is_empty() {
                            let written = connection.write_vectored(slices).expect("a delivery");
                            IoSlice::advance_slices(&mut slices, written);
                        }
                    }
                }
            });
            to_thread
        })
        .collect();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        if line.is_err() {
            break;
        }
        let message = Arc::new(FloorMessage::new(n, bytes));
        for to_thread in &to_threads {
            to_thread.send(message.clone()).expect("a writer thread");
        }
    }
}

/// The floor's message: an SSE event in an HTTP chunk, `bytes` bytes on the wire in all.
struct FloorMessage {
    size_line: Vec<u8>,
    event: Vec<u8>,
}

impl FloorMessage {
    /// The `n`th message.
    fn new(n: usize, bytes: usize) -> FloorMessage {
        let start = format!("id: {n}\nevent: floor.notice\ndata: ");
        // The chunk's size line (hex digits and CRLF) and the CRLF after its data.
        let framing = |payload: usize| format!("{payload:x}\r\n").len() + 2;
        let payload = bytes.saturating_sub(framing(bytes)).max(start.len() + 2);
        let mut event = start.into_bytes();
        event.resize(payload - 2, b'x');
        event.extend_from_slice(b"\n\n");
        FloorMessage {
            size_line: format!("{:x}\r\n", event.len()).into_bytes(),
            event,
        }
    }
}

/// The floor's writer, started as a child of this program.
struct FloorWriter {
    child: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    address: SocketAddr,
}

impl FloorWriter {
    async fn start(subscribers: usize, bytes: usize) -> FloorWriter {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("self"))
            .args([FLOOR_WRITER, &subscribers.to_string(), &bytes.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the floor's writer");
        let commands = child.stdin.take().expect("its stdin");
        let mut answers =
            tokio::io::BufReader::new(child.stdout.take().expect("its stdout")).lines();
        let address = answers
            .next_line()
            .await
            .expect("its address")
            .expect("its address")
            .parse()
            .expect("an address");
        FloorWriter {
            child,
            commands,
            address,
        }
    }

    /// Sends the next notice to every subscriber, without waiting for the writes (as a
    /// publisher does not wait for crier's).
    async fn send(&mut self) {
        self.commands
            .write_all(b"notice\n")
            .await
            .expect("a notice");
        self.commands.flush().await.expect("a notice");
    }
}

#[tokio::main]
async fn main() {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some(FLOOR_WRITER) {
        let mut number = || raw.next().and_then(|v| v.parse().ok()).expect("a number");
        let (subscribers, bytes) = (number(), number());
        floor_writer(subscribers, bytes);
        return;
    }
    let args = args();
    let (subscribers, files) = subscribers_that_fit(args.subscribers);
    if subscribers < args.subscribers {
        println!(
            "the open-file limit is {files}: measuring {subscribers} subscribers instead of {} \
             (raise it with `ulimit -n` or LimitNOFILE=, as docs/OPERATIONS.md says)",
            args.subscribers
        );
    }
    let db = TestDatabase::create().await;
    let heartbeat = args.heartbeat.to_string();
    let server =
        BenchServer::start(&db.url, &[("CRIER_STREAM_HEARTBEAT", heartbeat.as_str())]).await;
    let address: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let (publisher, service_id) = server.publisher_and_service().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server_pid = server.child.id().to_string();
    let before = resident_kib(server.child.id());
    let (client_cpu_at_start, server_cpu_at_start) =
        (cpu_seconds("self"), cpu_seconds(&server_pid));
    let subscribed = subscribe(address, subscribers, args.notices).await;
    let connect_time = subscribed.connect_time;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = resident_kib(server.child.id());
    let (client_cpu_connected, server_cpu_connected) =
        (cpu_seconds("self"), cpu_seconds(&server_pid));

    let publishing = Instant::now();
    let mut published = Vec::new();
    let mut answer_times = Vec::new();
    for n in 0..args.notices {
        let body = incident(n, &service_id);
        let sent = Instant::now();
        server.post("/v1/incidents", &publisher, body).await;
        answer_times.push(sent.elapsed().as_secs_f64() * 1000.0);
        published.push(sent);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let publishing = publishing.elapsed();
    let (client_cpu_end, server_cpu_end) = (cpu_seconds("self"), cpu_seconds(&server_pid));
    let all = subscribed.finish(subscribers);
    let complete = heard_every_notice(&all, args.notices);
    let crier = latencies(&all, &published);
    drop(server);
    // What a notice cost each subscriber on the wire, the floor's message size.
    let message_bytes =
        all.iter().map(|h| h.bytes).sum::<usize>() / (subscribers * args.notices).max(1);
    drop(all);

    // The floor, on the same machine in the same run: the same bytes to as many
    // connections, read by the same client.
    let mut floor = FloorWriter::start(subscribers, message_bytes).await;
    let floor_pid = floor
        .child
        .id()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let subscribed = subscribe(floor.address, subscribers, args.notices).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (client_cpu_floor, floor_cpu_start) = (cpu_seconds("self"), cpu_seconds(&floor_pid));
    let mut floor_published = Vec::new();
    for _ in 0..args.notices {
        let sent = Instant::now();
        floor.send().await;
        floor_published.push(sent);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (client_cpu_floor_end, floor_cpu_end) = (cpu_seconds("self"), cpu_seconds(&floor_pid));
    let floor_all = subscribed.finish(subscribers);
    let floor_complete = heard_every_notice(&floor_all, args.notices);
    let floor_latencies = latencies(&floor_all, &floor_published);
    drop(floor);

    println!();
    println!(
        "{subscribers} subscribers on one process (2 workers), from {} loopback addresses; \
         {} notices one every 500 ms; heartbeats every {} s; connected in {:.1} s",
        subscribers.div_ceil(PER_SOURCE_ADDRESS),
        args.notices,
        args.heartbeat,
        connect_time.as_secs_f64()
    );
    println!("subscribers that received every notice: {complete}");
    println!("| measurement | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    let row = |what: &str, times: &[f64]| {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms |",
            percentile(times.to_vec(), 50.0),
            percentile(times.to_vec(), 99.0),
            percentile(times.to_vec(), 100.0)
        )
    };
    row("POST /v1/incidents answered (baseline)", &answer_times);
    row("publish to delivery, every subscriber", &crier.every);
    let in_order = |times: &[f64]| {
        let times: Vec<String> = times.iter().map(|ms| format!("{ms:.0}")).collect();
        times.join(", ")
    };
    println!(
        "each notice's last delivery, in order (ms): {}",
        in_order(&crier.last)
    );
    // From publishing to the fan-out's start: the POST, the log's sealing and the follower.
    println!(
        "each notice's first delivery, in order (ms): {}",
        in_order(&crier.first)
    );
    row("publish to LAST delivery, per notice", &crier.last);
    row(
        &format!("floor: {message_bytes} bytes to each by bare writev, to the LAST"),
        &floor_latencies.last,
    );
    let p99 = percentile(crier.last.clone(), 99.0);
    let floor_p99 = percentile(floor_latencies.last.clone(), 99.0);
    println!(
        "floor: {floor_complete} of {subscribers} subscribers read every notice; p99 floor / \
         crier: {:.2}; CPU seconds over its {} notices: client {:.1}, writer {:.1}",
        floor_p99 / p99,
        args.notices,
        client_cpu_floor_end - client_cpu_floor,
        floor_cpu_end - floor_cpu_start
    );
    // Each notice is written to every subscriber, so the time to the last grows with their
    // number: 180 ms at 18,000 is under 1 s at 100,000. Below 18,000 it is not judged.
    let verdict = if subscribers < 18_000 {
        "not judged below 18,000 subscribers"
    } else if p99 * 100_000.0 / subscribers as f64 <= 1000.0 {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "target: p99 publish-to-last-delivery ≤ 180 ms at 18,000 (under 1 s at 100,000): {verdict}"
    );
    println!(
        "server memory: {:.1} MiB before, {:.1} MiB with the subscribers: {:.1} KiB per subscriber",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / subscribers as f64
    );
    println!(
        "CPU seconds while connecting: client {:.1}, server {:.1}; while publishing ({:.1} s): \
         client {:.1}, server {:.1}",
        client_cpu_connected - client_cpu_at_start,
        server_cpu_connected - server_cpu_at_start,
        publishing.as_secs_f64(),
        client_cpu_end - client_cpu_connected,
        server_cpu_end - server_cpu_connected
    );
}
