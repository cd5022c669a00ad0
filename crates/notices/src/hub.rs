//! The live hub: notices as Server-Sent Events for the streams `GET /v1/stream` serves.
//!
//! One follower per process (the [`NoticeHub`]) reads the durable global log from the head
//! it found at start (started again after a failure, from where it stopped), so a notice
//! published through any process reaches the subscribers of every process, and hands each
//! notice to its subscribers through a bounded broadcast ring. Subscribers never slow the
//! follower or one another: one that falls more than the ring behind is closed, and
//! reconnects with `Last-Event-ID` like any EventSource does.
//!
//! A subscriber that names a position (`Last-Event-ID` or `?after=`) first catches up from
//! the log itself, then joins the ring and catches up once more to the position it joined
//! at, so nothing between the two is missed, and nothing is sent twice (positions only
//! grow). Each message: `id:` the global position, `event:` the CloudEvent type, `data:`
//! the CloudEvent (see [`crate::notice`]). A comment after 15 s with nothing sent keeps
//! idle connections open.
//!
//! # A ring per thread
//!
//! A server's streams run on its HTTP workers, one thread each. With one ring for the
//! process, the follower woke every subscriber itself, from its own thread: each wake-up
//! crossed to the subscriber's worker through that worker's queue lock and an `eventfd`
//! write (18,000 subscribers: 18,000 system calls and lock hand-offs a notice, one after
//! another on the follower's thread, before the last subscriber could run). A hub made
//! [`NoticeHub::relaying_per_thread`] gives each worker thread a ring of its own instead,
//! fed by one relay task on that thread: the follower wakes one relay a thread, and each
//! relay wakes its thread's subscribers in that thread's own queue. A thread's ring holds
//! what its relay has handed on, in the follower's order, so a subscriber joins it at the
//! relay's position exactly as it would join the process's ring at the follower's. A
//! relay that falls more than a ring behind ends its ring, and its subscribers are closed
//! as too far behind (they resume from the log); the last subscriber of a thread to go
//! ends its relay, which lets go of the process ring. A stream with nothing else to send
//! is not woken at all: the relay writes to its socket itself (see [`crate::direct`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eventstore::{CancellationToken, EventStore, Subscription, SubscriptionOptions};
use projections::queries::Viewer;
use tasks::Chain;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::direct::{DirectList, GivenBack, Live, LiveSocket, Revoked, Scope};
use crate::notice::{Notice, NoticeFilter, Site};
use crate::NoticeError;

/// Notices the ring holds by default: how far behind a subscriber may fall before it is
/// closed.
pub const RING: usize = 1024;
/// A comment this often (by default) keeps proxies and clients from timing an idle stream
/// out.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read per catch-up query.
const CATCH_UP_BATCH: usize = 500;

/// The process's follower of the log and its ring of notices.
pub struct NoticeHub {
    ring: Mutex<HubState>,
    /// Set when the process stops: every stream ends.
    closing: watch::Sender<bool>,
    /// Set once the follower has started: streams opened before wait for it.
    started: watch::Sender<bool>,
    /// The ids of API keys revoked since start, as the log says: their streams end.
    revocations: broadcast::Sender<Uuid>,
    /// Subscribers reading the log to catch up at once (each holds a connection per read).
    catching_up: Arc<tokio::sync::Semaphore>,
    heartbeat: Duration,
    /// What notices are rendered for.
    site: Site,
    /// Notices a ring holds.
    ring_size: usize,
    /// Whether subscribers join a ring of their thread's (see the module's docs).
    per_thread: bool,
    /// Tells this hub's thread rings from another hub's in the same process.
    id: u64,
}

/// Subscribers of one process that may read the log to catch up at the same time.
const CATCH_UPS_AT_ONCE: usize = 4;

struct HubState {
    /// The last position the follower has handed on; `None` until it has started.
    published: Option<u64>,
    sender: broadcast::Sender<Arc<Notice>>,
}

impl Default for NoticeHub {
    fn default() -> Self {
        NoticeHub::new(RING, HEARTBEAT, Site::default())
    }
}

impl NoticeHub {
    /// A hub whose ring holds `ring` notices, its streams sending a comment once they have
    /// sent nothing for `heartbeat`.
    pub fn new(ring: usize, heartbeat: Duration, site: Site) -> NoticeHub {
        static HUBS: AtomicU64 = AtomicU64::new(0);
        let (sender, _) = broadcast::channel(ring.max(1));
        let (revocations, _) = broadcast::channel(256);
        NoticeHub {
            ring_size: ring.max(1),
            per_thread: false,
            id: HUBS.fetch_add(1, Ordering::Relaxed),
            ring: Mutex::new(HubState {
                published: None,
                sender,
            }),
            closing: watch::Sender::new(false),
            started: watch::Sender::new(false),
            revocations,
            catching_up: Arc::new(tokio::sync::Semaphore::new(CATCH_UPS_AT_ONCE)),
            heartbeat,
            site,
        }
    }

    /// The same hub, its subscribers joining a ring of their own thread's, each fed by a
    /// relay task on that thread (see the module's docs). Every subscriber of such a hub
    /// must be made where `tokio::task::spawn_local` works (a `LocalSet` or a local
    /// runtime: actix-web's workers run on one or the other): the relay is spawned there.
    pub fn relaying_per_thread(mut self) -> NoticeHub {
        self.per_thread = true;
        self
    }

    /// Joins the ring: every notice after the returned position arrives on the receiver.
    /// `None` until the follower has started.
    fn join(&self) -> Option<Joined> {
        if self.per_thread {
            self.join_thread_ring()
        } else {
            let (receiver, at) = self.join_process_ring()?;
            Some(Joined {
                receiver,
                at,
                thread_ring: Weak::new(),
            })
        }
    }

    fn join_process_ring(&self) -> Option<(broadcast::Receiver<Arc<Notice>>, u64)> {
        let state = self.ring.lock().ok()?;
        // Under the lock `close` takes to end the ring: a ring joined here is one it ends.
        if self.is_closing() {
            return None;
        }
        let published = state.published?;
        Some((state.sender.subscribe(), published))
    }

    /// Joins this thread's ring, starting its relay if it has none.
    fn join_thread_ring(&self) -> Option<Joined> {
        let joined = THREAD_RINGS.with_borrow(|rings| {
            rings
                .iter()
                .find(|(hub, _)| *hub == self.id)
                .map(|(_, ring)| Joined {
                    receiver: ring.sender.subscribe(),
                    at: ring.relayed.get(),
                    thread_ring: Rc::downgrade(ring),
                })
        });
        if joined.is_some() {
            return joined;
        }
        let (process_ring, published) = self.join_process_ring()?;
        let (sender, receiver) = broadcast::channel(self.ring_size);
        let ring = Rc::new(ThreadRing {
            sender,
            relayed: Cell::new(published),
            direct: DirectList::default(),
        });
        let thread_ring = Rc::downgrade(&ring);
        // Spawned before it is registered: no ring is joined that no relay feeds. (The relay
        // does not run before this returns: it is on this thread.)
        let registration = Registration {
            hub: self.id,
            ring: ring.clone(),
        };
        let revocations = self.revocations.subscribe();
        tokio::task::spawn_local(relay(
            registration,
            process_ring,
            revocations,
            self.site.clone(),
        ));
        THREAD_RINGS.with_borrow_mut(|rings| rings.push((self.id, ring)));
        Some(Joined {
            receiver,
            at: published,
            thread_ring,
        })
    }

    /// Whether the follower has started, so that streams can be opened.
    pub fn is_started(&self) -> bool {
        self.published().is_some()
    }

    /// The last position the follower has handed on; `None` until it has started.
    fn published(&self) -> Option<u64> {
        self.ring.lock().ok().and_then(|state| state.published)
    }

    fn publish(&self, position: u64, notice: Option<Notice>) {
        if let Ok(mut state) = self.ring.lock() {
            if let Some(notice) = notice {
                // No receivers is not an error: nobody is listening.
                let _ = state.sender.send(Arc::new(notice));
            }
            state.published = Some(position);
        }
        self.started
            .send_if_modified(|started| !std::mem::replace(started, true));
    }

    /// Waits until the follower has started (at once if it has), or the process stops.
    pub async fn until_started(&self) {
        let mut started = self.started.subscribe();
        let mut closing = self.closing.subscribe();
        tokio::select! {
            _ = started.wait_for(|started| *started) => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    }

    /// Whether the process is stopping (no stream opens any more).
    pub fn stopping(&self) -> bool {
        self.is_closing()
    }

    /// Ends every stream (the process is stopping).
    ///
    /// Streams learn it from their rings, not from a watch of their own: registering on a
    /// watch each time a stream waits cost every delivery a lock that every worker thread
    /// shares. Ending the process ring ends each relay, and so each thread's ring; a
    /// subscriber whose ring ends while the process stops says goodbye.
    pub fn close(&self) {
        self.closing.send_replace(true);
        if let Ok(mut state) = self.ring.lock() {
            state.sender = broadcast::channel(1).0;
        }
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Follows the log from its head at start until `cancel`; retries while the database
    /// is away.
    pub async fn follow(
        self: Arc<Self>,
        store: EventStore,
        cancel: CancellationToken,
    ) -> Result<(), NoticeError> {
        // Started again after a failure: go on from the last position handed on, or the
        // notices published meanwhile would never reach the subscribers already in the ring.
        let start = match self.published() {
            Some(resumed) => resumed,
            None => loop {
                match store.log_head().await {
                    Ok(head) => break head.map_or(0, |(position, _)| position),
                    Err(e) => {
                        tracing::warn!(error = %Chain(&e), "the notice stream waits for the database");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = cancel.cancelled() => return Ok(()),
                        }
                    }
                }
            },
        };
        self.publish(start, None);
        let options = SubscriptionOptions {
            batch_size: CATCH_UP_BATCH,
        };
        let mut log = Subscription::from_position(&store, start, options);
        loop {
            let batch = tokio::select! {
                batch = log.next_batch() => batch,
                _ = cancel.cancelled() => return Ok(()),
            };
            let events = match batch {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "the notice stream could not read the log");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = cancel.cancelled() => return Ok(()),
                    }
                    continue;
                }
            };
            for event in &events {
                if event.event.event_type == "api_key.revoked" {
                    if let Some(id) = event
                        .event
                        .stream_id
                        .strip_prefix("api_key-")
                        .and_then(|id| Uuid::parse_str(id).ok())
                    {
                        let _ = self.revocations.send(id);
                    }
                }
                let notice = Notice::of(event);
                let listened = self
                    .ring
                    .lock()
                    .is_ok_and(|state| state.sender.receiver_count() > 0);
                // Nobody listening on this process: no reading or rendering on the write
                // path's database for nothing (a catch-up renders what it needs).
                if let Some(notice) = notice.as_ref().filter(|_| listened) {
                    // Read the resource and render the public messages once here, so that
                    // most subscribers only copy bytes (their relay writes them) and none
                    // falls behind waiting for the database. A failure is retried by
                    // whichever subscriber needs it.
                    if let Err(e) = notice.render_for_the_public(&store, &self.site).await {
                        tracing::warn!(error = %Chain(&e), position = event.position, "could not prepare a notice");
                    }
                }
                self.publish(event.position, notice);
            }
        }
    }
}

thread_local! {
    /// This thread's rings, one per hub that relays per thread.
    static THREAD_RINGS: RefCell<Vec<(u64, Rc<ThreadRing>)>> = const { RefCell::new(Vec::new()) };
}

/// A ring joined: its notices after `at` arrive on `receiver`.
struct Joined {
    receiver: broadcast::Receiver<Arc<Notice>>,
    at: u64,
    /// The thread's ring it is (none for the process ring).
    thread_ring: Weak<ThreadRing>,
}

#[cfg(test)]
impl Joined {
    fn parts(self) -> (broadcast::Receiver<Arc<Notice>>, u64) {
        (self.receiver, self.at)
    }
}

/// One thread's ring of a hub's notices.
struct ThreadRing {
    sender: broadcast::Sender<Arc<Notice>>,
    /// The position of the last notice handed on (at first, the process ring's position
    /// when the relay joined it).
    relayed: Cell<u64>,
    /// The streams the relay writes to itself (see [`crate::direct`]).
    direct: DirectList,
}

/// Hands the process ring's notices on to this thread's ring, in order, and writes them to
/// the streams of its direct list, until the thread has no subscriber left or falls more
/// than a ring behind.
///
/// However the relay ends (returned, or its task dropped with its runtime, polled or not),
/// `registration` goes with it, and its ring is no longer joined: a subscriber must never
/// wait on a ring that nothing feeds.
async fn relay(
    registration: Registration,
    mut process_ring: broadcast::Receiver<Arc<Notice>>,
    mut revocations: broadcast::Receiver<Uuid>,
    site: Site,
) {
    let ring = &registration.ring;
    loop {
        let received = tokio::select! {
            biased;
            received = process_ring.recv() => received,
            // The last subscriber gone: let go of the process ring at once, so that the
            // follower renders nothing for nobody. (A stream in the direct list holds no
            // receiver: the list must be empty too.)
            () = ring.sender.closed(), if ring.direct.is_empty() => {
                // A subscriber may have joined between the wake-up and this poll.
                if ring.sender.receiver_count() == 0 && ring.direct.is_empty() {
                    return;
                }
                continue;
            }
            () = ring.direct.emptied(), if !ring.direct.is_empty() => continue,
        };
        match received {
            Ok(notice) => {
                ring.relayed.set(notice.position);
                // First into the ring: a stream given back reads on from right after it.
                // No receiver left is not an error: `closed` ends the relay next.
                let _ = ring.sender.send(notice.clone());
                let revoked = Revoked::since(&mut revocations);
                if ring.direct.write(&notice, &ring.sender, &site, &revoked) > 0 {
                    // A burst of notices, each written to thousands of sockets, must not
                    // keep the thread's requests waiting until the burst is through.
                    tokio::task::yield_now().await;
                }
            }
            // Lagged: its subscribers missed what it missed, and ending their ring closes
            // them as too far behind (they resume from the log). Closed: the hub is closing,
            // and ending their ring has them say goodbye.
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                return
            }
        }
    }
}

/// A relay's ring, registered as its thread's ring for its hub while the relay lives.
struct Registration {
    hub: u64,
    ring: Rc<ThreadRing>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // `try_`: the thread may be ending, or the registry borrowed higher up the stack.
        let _ = THREAD_RINGS.try_with(|rings| {
            if let Ok(mut rings) = rings.try_borrow_mut() {
                rings.retain(|(id, kept)| !(*id == self.hub && Rc::ptr_eq(kept, &self.ring)));
            }
        });
        // Its streams' tasks take them back, and find the ring ended.
        self.ring.direct.end();
    }
}

/// The key a stream was opened with, so that revoking it ends the stream.
pub struct StreamKey {
    pub id: Uuid,
}

/// One subscriber's stream of SSE bytes.
pub struct Subscriber {
    store: EventStore,
    hub: Arc<NoticeHub>,
    /// Who it is for and what it takes, shared with its record for the relay.
    scope: Rc<Scope>,
    key: Option<Uuid>,
    revocations: broadcast::Receiver<Uuid>,
    /// The last position handled (delivered or left out).
    last: u64,
    /// `None` while catching up from the log, and while the relay writes for it.
    ring: Option<broadcast::Receiver<Arc<Notice>>>,
    /// The thread's ring `ring` reads (none for the process ring).
    thread_ring: Weak<ThreadRing>,
    /// Where the catch-up must reach before the ring takes over.
    catch_up_to: Option<u64>,
    /// A notice to handle before the ring's next: one the relay gave back, or one just
    /// received.
    pending: Option<Arc<Notice>>,
    ready: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    last_sent: tokio::time::Instant,
    done: bool,
    /// The connection, when the thread's relay may write to it (see [`crate::direct`]).
    socket: Option<Rc<dyn LiveSocket>>,
    /// This stream's record for the relay, made the first time it is handed over.
    live: Option<Rc<Live>>,
    /// Whether the relay writes for it now (its record is in the thread ring's list).
    direct: bool,
}

/// Ends a stream with a comment, and an `id:` line so that EventSource clients (which
/// ignore comments) resume after `last` when they reconnect.
fn farewell(last: u64, why: &str) -> Bytes {
    Bytes::from(format!(
        "id: {last}\n: {why}; reconnect to resume after {last}\n\n"
    ))
}

/// How long a client waits before it reconnects to a stopping server, in milliseconds:
/// spread over a few seconds, so that every client of the process does not come back in the
/// same instant (to the next process, or this one restarted).
pub fn reconnect_hint() -> u32 {
    let mut byte = [0u8; 2];
    let spread =
        getrandom::fill(&mut byte).map_or(0, |()| u32::from(u16::from_le_bytes(byte)) % 3000);
    1000 + spread
}

impl Subscriber {
    /// A stream starting after `after`, or with the next notice when `None`. `None` if
    /// the hub has not started yet or the process is stopping.
    pub fn new(
        store: EventStore,
        hub: Arc<NoticeHub>,
        viewer: Viewer,
        filter: NoticeFilter,
        key: Option<StreamKey>,
        after: Option<u64>,
    ) -> Option<Subscriber> {
        if hub.is_closing() {
            return None;
        }
        let mut heartbeat = tokio::time::interval(hub.heartbeat);
        heartbeat.reset(); // the first tick after a period, not at once
        let revocations = hub.revocations.subscribe();
        let (ring, thread_ring, last) = match after {
            None => {
                let joined = hub.join()?;
                (Some(joined.receiver), joined.thread_ring, joined.at)
            }
            Some(after) if hub.is_started() => (None, Weak::new(), after),
            Some(_) => return None,
        };
        Some(Subscriber {
            store,
            scope: Rc::new(Scope { viewer, filter }),
            key: key.map(|k| k.id),
            revocations,
            last,
            ring,
            thread_ring,
            catch_up_to: None,
            pending: None,
            socket: None,
            live: None,
            direct: false,
            // The `id:` makes a client that hears no notice before it reconnects resume
            // from here rather than from "now".
            ready: VecDeque::from([Bytes::from(format!(
                "retry: 2000\nid: {last}\n: connected\n\n"
            ))]),
            heartbeat,
            last_sent: tokio::time::Instant::now(),
            done: false,
            hub,
        })
    }

    /// The same stream, its notices written to `socket` by its thread's relay whenever the
    /// stream has nothing else to send (see [`crate::direct`]). Only a hub that relays per
    /// thread has a relay to write them.
    pub fn writing_directly_to(mut self, socket: Rc<dyn LiveSocket>) -> Subscriber {
        if self.hub.per_thread {
            self.socket = Some(socket);
        }
        self
    }

    /// Hands the stream to its thread's relay, if it may: it has a socket to be written
    /// to, and nothing left to send. Answers whether it did.
    fn hand_to_relay(&mut self) -> bool {
        let Some(socket) = &self.socket else {
            return false;
        };
        let idle = self.ready.is_empty()
            && self.pending.is_none()
            && self.catch_up_to.is_none()
            && self.ring.as_ref().is_some_and(|ring| ring.is_empty());
        if !idle {
            return false;
        }
        // A ring that has ended cannot be handed over to: its receiver says so next.
        let Some(thread_ring) = self.thread_ring.upgrade() else {
            return false;
        };
        let live = self.live.get_or_insert_with(|| {
            Rc::new(Live::new(socket.clone(), self.scope.clone(), self.key))
        });
        thread_ring.direct.join(live, self.last, self.last_sent);
        self.direct = true;
        // The relay writes from here on; the ring is read again once it is taken back.
        self.ring = None;
        true
    }

    /// Takes the stream back from the relay (the task has something to send itself):
    /// it reads its thread's ring on from where the relay got to.
    fn take_from_relay(&mut self) {
        if !self.direct {
            return;
        }
        let Some(live) = self.live.clone() else {
            return;
        };
        match live.take_given_back() {
            Some(given) => self.given_back(given),
            None => {
                self.direct = false;
                (self.last, self.last_sent) = live.progress();
                self.ring = Some(match self.thread_ring.upgrade() {
                    Some(thread_ring) => {
                        thread_ring.direct.leave(&live);
                        thread_ring.sender.subscribe()
                    }
                    // Not reached: a ring that ends gives every stream back first.
                    None => ended_ring(),
                });
            }
        }
    }

    /// Goes on from what the relay gave back.
    fn given_back(&mut self, given: GivenBack) {
        self.direct = false;
        if let Some(live) = &self.live {
            (self.last, self.last_sent) = live.progress();
        }
        match given {
            GivenBack::Ring { receiver, notice } => {
                self.ring = Some(receiver);
                self.pending = notice;
            }
            // The client is gone: nothing more can be written.
            GivenBack::Failed => self.done = true,
            // Read as any ended ring is: a goodbye if the process stops, else too far behind.
            GivenBack::RingEnded => self.ring = Some(ended_ring()),
        }
    }

    /// Has this stream's key been revoked?
    fn revoked(&mut self) -> bool {
        let Some(key) = self.key else {
            return false;
        };
        loop {
            match self.revocations.try_recv() {
                Ok(id) if id == key => return true,
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty) => return false,
                // Missed some: assume the worst; the client reconnects and authenticates.
                Err(broadcast::error::TryRecvError::Lagged(_)) => return true,
                Err(broadcast::error::TryRecvError::Closed) => return false,
            }
        }
    }

    /// Reads the next events of the log after `last` and queues their messages; joins the
    /// ring once caught up.
    async fn catch_up(&mut self) -> Result<(), NoticeError> {
        let turn = self
            .hub
            .catching_up
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NoticeError::Stopping)?;
        let events = self.store.read_log(self.last, CATCH_UP_BATCH).await?;
        let caught_up = events.len() < CATCH_UP_BATCH;
        for event in &events {
            if self.catch_up_to.is_some_and(|to| event.position > to) {
                break;
            }
            if let Some(notice) = Notice::of(event) {
                if let Some(message) = notice
                    .message_for(
                        &self.store,
                        &self.scope.viewer,
                        &self.scope.filter,
                        &self.hub.site,
                    )
                    .await?
                {
                    self.ready.push_back(message);
                }
            }
            self.last = event.position;
        }
        drop(turn);
        match self.catch_up_to {
            // Joined the ring already: the log up to the join point is done.
            Some(to) if self.last >= to || caught_up => self.catch_up_to = None,
            Some(_) => {}
            None if caught_up => {
                // Join the ring, then fetch what was sealed between this read and the join.
                if let Some(joined) = self.hub.join() {
                    self.ring = Some(joined.receiver);
                    self.thread_ring = joined.thread_ring;
                    if joined.at > self.last {
                        self.catch_up_to = Some(joined.at);
                    }
                }
            }
            None => {}
        }
        // A long catch-up through notices this subscriber does not see still says it is
        // alive, and how far it got.
        if self.ready.is_empty() && self.last_sent.elapsed() >= self.hub.heartbeat {
            self.ready
                .push_back(Bytes::from(format!("id: {}\n: catching up\n\n", self.last)));
        }
        Ok(())
    }

    /// The next bytes to send, or `None` when the stream ends.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        let chunk = self.produce().await;
        if chunk.is_some() {
            self.last_sent = tokio::time::Instant::now();
        }
        chunk
    }

    async fn produce(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Some(bytes);
            }
            if self.done {
                return None;
            }
            if let Some(given) = self.live.as_ref().and_then(|live| live.take_given_back()) {
                self.given_back(given);
                continue;
            }
            if self.hub.is_closing() {
                self.take_from_relay();
                self.done = true;
                return Some(Bytes::from(format!(
                    "retry: {}\nid: {}\n: the server is stopping; reconnect to resume after {}\n\n",
                    reconnect_hint(),
                    self.last,
                    self.last
                )));
            }
            if self.revoked() {
                self.take_from_relay();
                self.done = true;
                return Some(farewell(self.last, "the key of this stream was revoked"));
            }
            if self.direct {
                if let Some(bytes) = self.wait_while_direct().await {
                    return Some(bytes);
                }
                continue;
            }
            if self.ring.is_none() || self.catch_up_to.is_some() {
                // Boxed, as is the rendering below: their futures (database reads) are far
                // larger than a stream's state between notices, which every open stream
                // would otherwise carry for its whole life.
                if let Err(e) = Box::pin(self.catch_up()).await {
                    tracing::warn!(error = %Chain(&e), "a stream could not catch up; closing it");
                    self.done = true;
                    return Some(farewell(self.last, "the history is unavailable"));
                }
                continue;
            }
            if let Some(notice) = self.pending.take() {
                if let Some(end) = self.hear(&notice).await {
                    return Some(end);
                }
                continue;
            }
            if self.hand_to_relay() {
                continue;
            }
            let Some(ring) = self.ring.as_mut() else {
                continue;
            };
            tokio::select! {
                received = ring.recv() => match received {
                    Ok(notice) => self.pending = Some(notice),
                    // Ended because the process stops: the loop's top says goodbye.
                    Err(broadcast::error::RecvError::Closed) if self.hub.is_closing() => {}
                    // Too far behind (this subscriber, or its thread's relay, which then
                    // ends the thread's ring): close, and let the client resume from the log.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => {
                        self.done = true;
                        return Some(farewell(self.last, "too far behind"));
                    }
                },
                _ = self.heartbeat.tick() => {
                    // Only a stream that has been silent for a period needs one: whatever
                    // was sent since kept the connection alive. So while notices flow,
                    // 100,000 subscribers' heartbeats cost a timer each, not a write each.
                    let due = self.last_sent + self.hub.heartbeat;
                    if due > tokio::time::Instant::now() {
                        self.heartbeat.reset_at(due);
                        continue;
                    }
                    return Some(heartbeat(self.last));
                }
                revoked = self.revocations.recv(), if self.key.is_some() => {
                    if self.revocation_ends(revoked) {
                        self.done = true;
                        return Some(farewell(self.last, "the key of this stream was revoked"));
                    }
                }
            }
        }
    }

    /// Renders a notice for this stream and queues it; the stream's goodbye if it cannot.
    async fn hear(&mut self, notice: &Notice) -> Option<Bytes> {
        if notice.position <= self.last {
            return None;
        }
        let rendering = notice.message_for(
            &self.store,
            &self.scope.viewer,
            &self.scope.filter,
            &self.hub.site,
        );
        match Box::pin(rendering).await {
            Ok(Some(message)) => self.ready.push_back(message),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "a notice could not be rendered; closing the stream");
                self.done = true;
                // Resuming before this notice gets it then.
                return Some(farewell(self.last, "the history is unavailable"));
            }
        }
        self.last = notice.position;
        None
    }

    /// Waits while the relay writes for this stream: until the relay gives it back, a
    /// heartbeat is due, or its key is revoked. What to send, if anything.
    async fn wait_while_direct(&mut self) -> Option<Bytes> {
        let live = self.live.clone()?;
        tokio::select! {
            () = live.until_given_back() => None,
            _ = self.heartbeat.tick() => {
                let (_, last_sent) = live.progress();
                let due = last_sent + self.hub.heartbeat;
                if due > tokio::time::Instant::now() {
                    self.heartbeat.reset_at(due);
                    return None;
                }
                self.take_from_relay();
                Some(heartbeat(self.last))
            }
            revoked = self.revocations.recv(), if self.key.is_some() => {
                if !self.revocation_ends(revoked) {
                    return None;
                }
                self.take_from_relay();
                self.done = true;
                Some(farewell(self.last, "the key of this stream was revoked"))
            }
        }
    }

    /// Whether a revocation heard ends this stream.
    fn revocation_ends(&self, revoked: Result<Uuid, broadcast::error::RecvError>) -> bool {
        match revoked {
            Ok(id) => Some(id) == self.key,
            // Missed some: assume the worst; the client reconnects and authenticates.
            Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => false,
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Out of the relay's list: nothing is written for a stream that has ended.
        if let (true, Some(live)) = (self.direct, &self.live) {
            if let Some(thread_ring) = self.thread_ring.upgrade() {
                thread_ring.direct.leave(live);
            }
        }
    }
}

/// A stream's comment after a silent period.
fn heartbeat(last: u64) -> Bytes {
    Bytes::from(format!("id: {last}\n: heartbeat\n\n"))
}

/// A ring that has ended: reading it says so, as reading a ring whose relay ended does.
fn ended_ring() -> broadcast::Receiver<Arc<Notice>> {
    broadcast::channel(1).1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::task::LocalSet;

    fn started_hub(ring: usize) -> Arc<NoticeHub> {
        started_hub_relaying(ring, true)
    }

    fn started_hub_relaying(ring: usize, per_thread: bool) -> Arc<NoticeHub> {
        let mut hub = NoticeHub::new(ring, HEARTBEAT, Site::default());
        if per_thread {
            hub = hub.relaying_per_thread();
        }
        hub.publish(0, None);
        Arc::new(hub)
    }

    /// Publishes the notice of an incident declared at `position`.
    fn publish(hub: &NoticeHub, position: u64) {
        let declared = eventstore::LoggedEvent {
            position,
            prev_hash: eventstore::Hash::GENESIS,
            hash: eventstore::Hash::GENESIS,
            event: eventstore::RecordedEvent {
                stream_id: format!("incident-{}", Uuid::nil()),
                stream_version: 1,
                event_id: Uuid::nil(),
                event_type: "incident.declared".into(),
                schema_version: 1,
                data: eventstore::EventData::from_text("{}").unwrap(),
                metadata: eventstore::Metadata::by("tester"),
                recorded_at: chrono::Utc::now(),
                content_hash: eventstore::Hash::GENESIS,
            },
        };
        hub.publish(position, Notice::of(&declared));
    }

    async fn next(receiver: &mut broadcast::Receiver<Arc<Notice>>) -> u64 {
        receiver.recv().await.unwrap().position
    }

    fn rings_of_this_thread(hub: &NoticeHub) -> usize {
        THREAD_RINGS.with_borrow(|rings| rings.iter().filter(|(id, _)| *id == hub.id).count())
    }

    /// Lets the relay run until `done`.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the relay did not get there");
    }

    #[tokio::test]
    async fn a_thread_ring_hands_on_every_notice_in_order_after_where_each_subscriber_joined() {
        LocalSet::new()
            .run_until(async {
                let hub = started_hub(16);
                let (mut first, at) = hub.join().unwrap().parts();
                assert_eq!(at, 0);
                publish(&hub, 1);
                publish(&hub, 2);
                // Joined before the relay handed 1 and 2 on: at the relay's position, so
                // both still reach it.
                let (mut second, at) = hub.join().unwrap().parts();
                assert_eq!(at, 0);
                assert_eq!(rings_of_this_thread(&hub), 1, "one relay for the thread");
                for receiver in [&mut first, &mut second] {
                    assert_eq!(next(receiver).await, 1);
                    assert_eq!(next(receiver).await, 2);
                }
                let (mut third, at) = hub.join().unwrap().parts();
                assert_eq!(at, 2, "joined after the relay handed 2 on");
                publish(&hub, 3);
                for receiver in [&mut first, &mut second, &mut third] {
                    assert_eq!(next(receiver).await, 3);
                }
                // Events that are no notice move the process ring's position, not the
                // thread ring's: a subscriber joins where the notices it will get start.
                hub.publish(4, None);
                publish(&hub, 5);
                hub.publish(6, None);
                let (mut fourth, at) = hub.join().unwrap().parts();
                assert_eq!(at, 3, "5 is not handed on yet, and 4 and 6 never are");
                for receiver in [&mut first, &mut second, &mut third, &mut fourth] {
                    assert_eq!(next(receiver).await, 5);
                }
                let (_, at) = hub.join().unwrap().parts();
                assert_eq!(at, 5);
            })
            .await;
    }

    #[tokio::test]
    async fn the_last_subscriber_of_a_thread_gone_ends_its_relay_and_a_new_one_starts_after() {
        LocalSet::new()
            .run_until(async {
                let hub = started_hub(16);
                let (first, _) = hub.join().unwrap().parts();
                let (second, _) = hub.join().unwrap().parts();
                drop(first);
                tokio::task::yield_now().await;
                assert_eq!(rings_of_this_thread(&hub), 1, "one subscriber is left");
                drop(second);
                // With no notice to wait for: the follower must not render for nobody.
                until(|| rings_of_this_thread(&hub) == 0).await;
                until(|| hub.ring.lock().unwrap().sender.receiver_count() == 0).await;
                publish(&hub, 1);
                let (mut receiver, at) = hub.join().unwrap().parts();
                assert_eq!(at, 1);
                publish(&hub, 2);
                assert_eq!(next(&mut receiver).await, 2);
            })
            .await;
    }

    #[tokio::test]
    async fn a_relay_dropped_with_its_runtime_leaves_no_ring_behind_that_nothing_feeds() {
        let hub = started_hub(16);
        let local = LocalSet::new();
        let receiver = local
            .run_until(async { hub.join().unwrap().parts().0 })
            .await;
        drop(local); // its tasks, the relay among them, are dropped unfinished
        assert_eq!(rings_of_this_thread(&hub), 0);
        drop(receiver);
        LocalSet::new()
            .run_until(async {
                let (mut receiver, _) = hub.join().unwrap().parts();
                publish(&hub, 1);
                assert_eq!(next(&mut receiver).await, 1);
            })
            .await;
    }

    #[tokio::test]
    async fn a_relay_more_than_a_ring_behind_ends_its_ring_so_its_subscribers_close() {
        LocalSet::new()
            .run_until(async {
                let hub = started_hub(2);
                let (mut receiver, _) = hub.join().unwrap().parts();
                for position in 1..=4 {
                    publish(&hub, position); // the relay does not run meanwhile
                }
                assert!(matches!(
                    receiver.recv().await,
                    Err(broadcast::error::RecvError::Closed)
                ));
                assert_eq!(rings_of_this_thread(&hub), 0);
                let (mut receiver, at) = hub.join().unwrap().parts();
                assert_eq!(at, 4, "a new ring starts where the process ring is");
                publish(&hub, 5);
                assert_eq!(next(&mut receiver).await, 5);
            })
            .await;
    }

    #[tokio::test]
    async fn closing_the_hub_ends_the_streams_waiting_on_its_rings_with_a_goodbye() {
        let database = eventstore::testing::TestDatabase::create().await;
        for per_thread in [true, false] {
            LocalSet::new()
                .run_until(async {
                    let hub = started_hub_relaying(16, per_thread);
                    let subscribe = || {
                        let (viewer, filter) = (Viewer::Public, NoticeFilter::default());
                        Subscriber::new(database.store(), hub.clone(), viewer, filter, None, None)
                    };
                    let mut subscriber = subscribe().unwrap();
                    let opening = subscriber.next_chunk().await.unwrap();
                    assert!(opening.ends_with(b": connected\n\n"));
                    let waiting = tokio::task::spawn_local(async move {
                        (subscriber.next_chunk().await, subscriber.next_chunk().await)
                    });
                    tokio::task::yield_now().await; // it waits on its ring now
                    hub.close();
                    // Woken by the ring's end, not by a heartbeat (15 s).
                    let (goodbye, after) = tokio::time::timeout(Duration::from_secs(5), waiting)
                        .await
                        .expect("closing wakes a waiting stream")
                        .unwrap();
                    let goodbye = String::from_utf8(goodbye.unwrap().to_vec()).unwrap();
                    assert!(
                        goodbye.contains("id: 0\n: the server is stopping"),
                        "per thread: {per_thread}: {goodbye}"
                    );
                    assert!(after.is_none());
                    assert!(subscribe().is_none(), "no stream opens any more");
                    assert!(hub.join().is_none(), "no ring is joined any more");
                })
                .await;
        }
    }

    #[tokio::test]
    async fn a_follower_started_again_after_a_failure_goes_on_from_where_it_stopped() {
        let database = eventstore::testing::TestDatabase::create().await;
        let store = database.store();
        let hub = Arc::new(NoticeHub::default());
        let follow =
            |cancel: CancellationToken| tokio::spawn(hub.clone().follow(store.clone(), cancel));
        let first = CancellationToken::new();
        let follower = follow(first.clone());
        hub.until_started().await;
        let (mut ring, _) = hub.join().unwrap().parts();
        first.cancel(); // as a failure would end it
        follower.await.unwrap().unwrap();
        // Declared while no follower runs.
        let incident = format!("incident-{}", Uuid::new_v4());
        let event = eventstore::NewEvent::new(
            "incident.declared",
            serde_json::json!({}),
            eventstore::Metadata::by("tester"),
        );
        store
            .append(&incident, eventstore::ExpectedVersion::NoStream, &[event])
            .await
            .unwrap();
        let head = store.seal_all(Duration::from_secs(10)).await.unwrap().head;
        let again = CancellationToken::new();
        let follower = follow(again.clone());
        let notice = tokio::time::timeout(Duration::from_secs(10), ring.recv())
            .await
            .expect("the notice published while no follower ran arrives")
            .unwrap();
        assert_eq!(notice.position, head);
        again.cancel();
        follower.await.unwrap().unwrap();
    }

    #[test]
    fn each_thread_gets_every_notice_from_a_follower_on_another_thread() {
        let hub = started_hub(64);
        let (joined, all_joined) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let hub = hub.clone();
                let joined = joined.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    LocalSet::new().block_on(&runtime, async {
                        let mut receivers: Vec<_> =
                            (0..3).map(|_| hub.join().unwrap().parts().0).collect();
                        assert_eq!(rings_of_this_thread(&hub), 1);
                        joined.send(()).unwrap();
                        let mut got = Vec::new();
                        for receiver in &mut receivers {
                            let mut positions = Vec::new();
                            for _ in 0..10 {
                                positions.push(next(receiver).await);
                            }
                            got.push(positions);
                        }
                        got
                    })
                })
            })
            .collect();
        drop(joined); // a thread that fails before it joins fails this test, not hangs it
        for _ in 0..2 {
            all_joined
                .recv_timeout(Duration::from_secs(10))
                .expect("both threads joined");
        }
        for position in 1..=10 {
            publish(&hub, position);
        }
        for thread in threads {
            for positions in thread.join().unwrap() {
                assert_eq!(positions, (1..=10).collect::<Vec<_>>());
            }
        }
        assert_eq!(
            rings_of_this_thread(&hub),
            0,
            "the follower's thread has no ring"
        );
    }

    /// A connection that keeps what the relay writes to it, and answers as told.
    #[derive(Default)]
    struct Connection {
        written: RefCell<Vec<String>>,
        answer: Cell<Option<crate::LiveWrite>>,
    }

    impl LiveSocket for Connection {
        fn write_now(&self, message: &Bytes) -> crate::LiveWrite {
            let answer = self.answer.get().unwrap_or(crate::LiveWrite::Whole);
            if answer != crate::LiveWrite::Failed {
                let message = String::from_utf8_lossy(message).into_owned();
                self.written.borrow_mut().push(message);
            }
            answer
        }
    }

    /// Waits (in time, for a database's answer) until `done`.
    async fn eventually(done: impl Fn() -> bool) {
        for _ in 0..5_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("not done within 5 s");
    }

    fn written(connection: &Connection) -> Vec<String> {
        connection.written.borrow().clone()
    }

    fn direct_streams(hub: &NoticeHub) -> usize {
        THREAD_RINGS.with_borrow(|rings| {
            (rings.iter())
                .filter(|(id, _)| *id == hub.id)
                .map(|(_, ring)| ring.direct.len())
                .sum()
        })
    }

    fn publish_rendered(hub: &NoticeHub, position: u64) {
        let message = format!("id: {position}\n\n");
        hub.publish(
            position,
            Some(Notice::rendered_for_tests(position, &message)),
        );
    }

    /// Runs `test` in a local set, as a server's worker runs its streams, with the store of
    /// a database of its own.
    async fn on_a_worker(test: impl AsyncFnOnce(EventStore)) {
        let database = eventstore::testing::TestDatabase::create().await;
        LocalSet::new().run_until(test(database.store())).await;
    }

    /// A stream the relay writes to: its connection, and its task, which sends on what it
    /// writes itself.
    struct DirectStream {
        connection: Rc<Connection>,
        task: tokio::task::JoinHandle<()>,
        by_task: tokio::sync::mpsc::UnboundedReceiver<String>,
    }

    impl DirectStream {
        /// The next thing the stream's task writes itself (`what`: what it should be).
        async fn said(&mut self, what: &str) -> String {
            tokio::time::timeout(Duration::from_secs(5), self.by_task.recv())
                .await
                .expect(what)
                .unwrap_or_default()
        }
    }

    /// A stream on `hub`, handed to the relay once it has sent its opening.
    async fn direct_stream(
        store: EventStore,
        hub: &Arc<NoticeHub>,
        key: Option<Uuid>,
    ) -> DirectStream {
        let connection = Rc::new(Connection::default());
        let (viewer, filter) = (Viewer::Public, NoticeFilter::default());
        let key = key.map(|id| StreamKey { id });
        let mut subscriber = Subscriber::new(store, hub.clone(), viewer, filter, key, None)
            .unwrap()
            .writing_directly_to(connection.clone());
        let opening = subscriber.next_chunk().await.unwrap();
        assert!(opening.ends_with(b": connected\n\n"));
        let (sent, by_task) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::task::spawn_local(async move {
            while let Some(chunk) = subscriber.next_chunk().await {
                let _ = sent.send(String::from_utf8_lossy(&chunk).into_owned());
            }
        });
        let before = direct_streams(hub);
        until(|| direct_streams(hub) == before + 1).await;
        DirectStream {
            connection,
            task,
            by_task,
        }
    }

    #[tokio::test]
    async fn the_relay_writes_to_an_idle_stream_and_gives_it_back_when_it_cannot_finish() {
        on_a_worker(async |store| {
            let hub = started_hub(16);
            let mut stream = direct_stream(store.clone(), &hub, None).await;
            let connection = stream.connection.clone();
            publish_rendered(&hub, 1);
            until(|| written(&connection).len() == 1).await;
            assert_eq!(written(&connection), ["id: 1\n\n"]);
            // Only part taken: given back, the rest is the connection's to write, and
            // the stream goes back to the relay once it has nothing left.
            connection.answer.set(Some(crate::LiveWrite::Partly));
            publish_rendered(&hub, 2);
            until(|| written(&connection).len() == 2).await;
            connection.answer.set(None);
            until(|| direct_streams(&hub) == 1).await;
            // Not rendered yet (an incident the relay has not read): the task renders
            // it (here, an incident that does not exist, so nothing is sent), and the
            // relay writes the next.
            publish(&hub, 3);
            until(|| direct_streams(&hub) == 0).await;
            eventually(|| direct_streams(&hub) == 1).await;
            publish_rendered(&hub, 4);
            until(|| written(&connection).len() == 3).await;
            assert_eq!(written(&connection)[2], "id: 4\n\n");
            assert!(
                stream.by_task.try_recv().is_err(),
                "the task wrote nothing itself"
            );
            // The process stops: the task says goodbye, from where the relay got.
            hub.close();
            let goodbye = stream
                .said("closing wakes a stream the relay writes to")
                .await;
            assert!(
                goodbye.contains("id: 4\n: the server is stopping"),
                "{goodbye}"
            );
            stream.task.await.unwrap();
            assert_eq!(direct_streams(&hub), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn a_stream_the_relay_writes_to_hears_a_heartbeat_from_where_the_relay_got() {
        on_a_worker(async |store| {
            let hub = NoticeHub::new(16, Duration::from_millis(200), Site::default());
            let hub = Arc::new(hub.relaying_per_thread());
            hub.publish(0, None);
            let mut stream = direct_stream(store.clone(), &hub, None).await;
            let connection = stream.connection.clone();
            publish_rendered(&hub, 1);
            let heartbeat = stream.said("a heartbeat after a silent period").await;
            assert_eq!(heartbeat, "id: 1\n: heartbeat\n\n");
            // Then back to the relay.
            until(|| direct_streams(&hub) == 1).await;
            publish_rendered(&hub, 2);
            until(|| written(&connection).len() == 2).await;
            stream.task.abort();
            let _ = stream.task.await;
            assert_eq!(direct_streams(&hub), 0, "a stream gone leaves the list");
            // With no stream left, the relay ends.
            until(|| rings_of_this_thread(&hub) == 0).await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_stream() {
        on_a_worker(async |store| {
            let hub = started_hub(16);
            let mut stream = direct_stream(store.clone(), &hub, None).await;
            let connection = stream.connection.clone();
            connection.answer.set(Some(crate::LiveWrite::Failed));
            publish_rendered(&hub, 1);
            tokio::time::timeout(Duration::from_secs(5), stream.task)
                .await
                .expect("the stream ends")
                .unwrap();
            assert!(
                stream.by_task.try_recv().is_err(),
                "nothing more is written"
            );
            assert_eq!(direct_streams(&hub), 0);
            until(|| rings_of_this_thread(&hub) == 0).await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_key_revoked_before_a_notice_ends_its_stream_before_the_relay_writes_that_notice() {
        on_a_worker(async |store| {
            let hub = started_hub(16);
            let (key, other) = (Uuid::new_v4(), Uuid::new_v4());
            let mut stream = direct_stream(store.clone(), &hub, Some(key)).await;
            let kept = direct_stream(store.clone(), &hub, Some(other)).await;
            let (revoked, kept) = (stream.connection.clone(), kept.connection);
            // As the follower does: the revocation first, then the next notice, both
            // before the relay or the stream's task runs.
            hub.revocations.send(key).unwrap();
            publish_rendered(&hub, 1);
            let goodbye = stream.said("the revoked stream says goodbye").await;
            assert!(
                goodbye.starts_with("id: 0\n: the key of this stream was revoked"),
                "{goodbye}"
            );
            stream.task.await.unwrap();
            assert!(written(&revoked).is_empty(), "{:?}", written(&revoked));
            until(|| written(&kept).len() == 1).await;
            assert_eq!(
                direct_streams(&hub),
                1,
                "the other key's stream is still written to"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn streams_the_relay_writes_to_are_closed_resumably_when_it_falls_a_ring_behind() {
        on_a_worker(async |store| {
            let hub = started_hub(2);
            let mut stream = direct_stream(store.clone(), &hub, None).await;
            let connection = stream.connection.clone();
            publish_rendered(&hub, 1);
            until(|| written(&connection).len() == 1).await;
            for position in 2..=5 {
                publish_rendered(&hub, position); // the relay does not run meanwhile
            }
            let goodbye = stream.said("the stream is closed").await;
            assert!(goodbye.starts_with("id: 1\n: too far behind"), "{goodbye}");
            stream.task.await.unwrap();
            assert_eq!(written(&connection).len(), 1);
            assert_eq!(rings_of_this_thread(&hub), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn a_stream_leaving_the_middle_of_the_list_leaves_the_others_written_to() {
        on_a_worker(async |store| {
            let hub = started_hub(16);
            let (mut connections, mut tasks) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let stream = direct_stream(store.clone(), &hub, None).await;
                connections.push(stream.connection);
                tasks.push(stream.task);
            }
            tasks.remove(1).abort();
            until(|| direct_streams(&hub) == 2).await;
            publish_rendered(&hub, 1);
            publish_rendered(&hub, 2);
            until(|| written(&connections[2]).len() == 2).await;
            assert_eq!(written(&connections[0]), ["id: 1\n\n", "id: 2\n\n"]);
            assert_eq!(written(&connections[2]), ["id: 1\n\n", "id: 2\n\n"]);
            assert!(written(&connections[1]).is_empty());
        })
        .await;
    }
}
