//! Direct writes: a live stream's notices written to its connection by its thread's relay.
//!
//! # Why
//!
//! With a ring per thread (see [`crate::hub`]), a notice still woke every subscriber's task.
//! Each woken task polled its connection's future down through the answer's body to its
//! ring, looked its rendering up, and wrote it. At 18,000 subscribers that cost about 3 µs
//! of user space per delivery above a bare writer, and most of it was memory: each
//! delivery touched half a dozen allocations of its subscriber, each cold by its turn.
//!
//! So a stream that has nothing else to send hands its connection to its thread's relay,
//! which writes each notice to every such connection itself, from one record per
//! subscriber ([`Live`]), with no task woken.
//!
//! # Handing back
//!
//! The relay gives a stream back to its task when it cannot finish alone:
//! - the notice's rendering for this subscriber is not ready (a read or a rendering is
//!   still to be done): the task renders it, as every notice was rendered before;
//! - the socket took only part of a message: the connection keeps the rest, and the task
//!   writes it before anything else;
//! - the write failed (the client is gone): the stream ends;
//! - the stream's key was revoked since the relay last looked: the task says goodbye
//!   before the notice (the follower hands a revocation on before any later notice);
//! - the ring ends (the process stops, or the relay fell more than a ring behind).
//!
//! The task takes its stream back itself for a heartbeat, a revoked key, or the process
//! stopping. Back with its task, a stream reads the thread's ring from right after the last
//! notice the relay handled for it, so nothing is missed or sent twice, and once it has
//! nothing left to send it hands its connection to the relay again.
//!
//! # Invariants
//! - A connection is written by one side at a time: the relay while the stream's record is
//!   in its thread ring's list, the stream's task while it is not. Both run on the thread,
//!   so the list alone says which.
//! - A stream joins the list only with nothing left to send: no message queued, nothing
//!   unread in its ring, nothing unwritten on its connection.
//! - Given back (or taking itself back), a stream goes on from the position the relay
//!   reached for it, with the notice the relay could not handle first.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use projections::queries::Viewer;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use crate::notice::{Notice, NoticeFilter, Site};

/// A connection that a stream's notices can be written to without waiting, by its
/// thread's relay. The server's connections implement it, and frame each message as they
/// frame the rest of the answer.
pub trait LiveSocket {
    /// Writes one Server-Sent Events message now, or as much of it as the socket takes.
    fn write_now(&self, message: &Bytes) -> LiveWrite;
}

/// How a [`LiveSocket::write_now`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveWrite {
    /// All of it was written.
    Whole,
    /// Only part (or none) was: the connection keeps the rest, and writes it before
    /// anything else once the stream's task runs.
    Partly,
    /// The connection failed: the client is gone.
    Failed,
}

/// Why the relay gave a stream back to its task.
pub(crate) enum GivenBack {
    /// Read the thread's ring from `receiver` on (it starts right after the notice being
    /// relayed), with `notice` first when the relay could not handle it.
    Ring {
        receiver: broadcast::Receiver<Arc<Notice>>,
        notice: Option<Arc<Notice>>,
    },
    /// The connection failed.
    Failed,
    /// The ring ended: the process stops, or its relay fell too far behind.
    RingEnded,
}

/// The keys revoked since the relay last looked.
pub(crate) enum Revoked {
    None,
    Keys(Vec<Uuid>),
    /// More than the revocations channel holds: any key may be among them.
    Unknown,
}

impl Revoked {
    /// Drains what `revocations` heard since the last time.
    pub(crate) fn since(revocations: &mut broadcast::Receiver<Uuid>) -> Revoked {
        let mut keys = Vec::new();
        loop {
            match revocations.try_recv() {
                Ok(key) => keys.push(key),
                Err(TryRecvError::Lagged(_)) => return Revoked::Unknown,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if keys.is_empty() {
            Revoked::None
        } else {
            Revoked::Keys(keys)
        }
    }

    fn may_end(&self, key: Option<Uuid>) -> bool {
        match (self, key) {
            (Revoked::None, _) | (_, None) => false,
            (Revoked::Unknown, Some(_)) => true,
            (Revoked::Keys(keys), Some(key)) => keys.contains(&key),
        }
    }
}

/// Who a stream is for and what it takes: its task and its relay read the one copy.
pub(crate) struct Scope {
    pub(crate) viewer: Viewer,
    pub(crate) filter: NoticeFilter,
}

/// A stream's record in its thread ring's list: what the relay needs to write to it.
pub(crate) struct Live {
    socket: Rc<dyn LiveSocket>,
    scope: Rc<Scope>,
    /// The key the stream was opened with: its revocation ends the stream.
    key: Option<Uuid>,
    /// Public, unfiltered, in the default language: it gets the notice's one shared
    /// rendering, looked up once per notice rather than once per stream.
    plain: bool,
    /// The last position handled for the stream while its record is in the list.
    last: Cell<u64>,
    /// When the relay last wrote to it (heartbeats are due a period after).
    last_sent: Cell<Instant>,
    /// Its place in the list while it is in it.
    index: Cell<usize>,
    given_back: Cell<Option<GivenBack>>,
    /// The stream's task, waiting to be given back.
    waker: Cell<Option<Waker>>,
}

impl Live {
    pub(crate) fn new(socket: Rc<dyn LiveSocket>, scope: Rc<Scope>, key: Option<Uuid>) -> Live {
        let Scope { viewer, filter } = &*scope;
        let plain = *viewer == Viewer::Public
            && filter.services.is_empty()
            && filter.region.is_none()
            && filter.types.is_empty()
            && filter.preferences.is_empty();
        Live {
            socket,
            scope,
            key,
            plain,
            last: Cell::new(0),
            last_sent: Cell::new(Instant::now()),
            index: Cell::new(0),
            given_back: Cell::new(None),
            waker: Cell::new(None),
        }
    }

    /// Where the relay got to for this stream, and when it last wrote to it.
    pub(crate) fn progress(&self) -> (u64, Instant) {
        (self.last.get(), self.last_sent.get())
    }

    fn give_back(&self, why: GivenBack) {
        self.given_back.set(Some(why));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// What the relay gave back, if it did.
    pub(crate) fn take_given_back(&self) -> Option<GivenBack> {
        self.given_back.take()
    }

    /// Waits until the relay gives the stream back.
    pub(crate) async fn until_given_back(&self) {
        std::future::poll_fn(|cx| {
            let given = self.given_back.take();
            let ready = given.is_some();
            self.given_back.set(given);
            if ready {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }
}

/// A thread ring's streams that its relay writes to.
#[derive(Default)]
pub(crate) struct DirectList {
    lives: RefCell<Vec<Rc<Live>>>,
    /// Told when the list empties: a relay with no receiver left waits for it to end.
    emptied: Notify,
}

impl DirectList {
    pub(crate) fn is_empty(&self) -> bool {
        self.lives.borrow().is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lives.borrow().len()
    }

    /// Hands a stream to the relay, from `last` on.
    pub(crate) fn join(&self, live: &Rc<Live>, last: u64, last_sent: Instant) {
        live.last.set(last);
        live.last_sent.set(last_sent);
        live.given_back.set(None);
        let Ok(mut lives) = self.lives.try_borrow_mut() else {
            // Not reached, as in `leave`; the stream goes back to its task at once.
            tracing::error!("a stream could not join its relay's list");
            live.give_back(GivenBack::RingEnded);
            return;
        };
        live.index.set(lives.len());
        lives.push(live.clone());
    }

    /// Takes a stream out of the list (its task takes it back, or it ends).
    pub(crate) fn leave(&self, live: &Rc<Live>) {
        let Ok(mut lives) = self.lives.try_borrow_mut() else {
            // Not reached: the list is borrowed only inside these methods, which call
            // nothing that leaves it.
            tracing::error!("a stream could not leave its relay's list");
            return;
        };
        let index = live.index.get();
        if lives.get(index).is_some_and(|kept| Rc::ptr_eq(kept, live)) {
            remove(&mut lives, index);
            if lives.is_empty() {
                self.emptied.notify_one();
            }
        }
    }

    /// Waits until the list empties (or may have).
    pub(crate) async fn emptied(&self) {
        self.emptied.notified().await;
    }

    /// Writes `notice` to every stream in the list, and gives back each that it cannot
    /// finish alone. `sender` is the thread's ring, which holds `notice` already; `revoked`
    /// the keys revoked since the last notice. Answers how many streams it looked at.
    pub(crate) fn write(
        &self,
        notice: &Arc<Notice>,
        sender: &broadcast::Sender<Arc<Notice>>,
        site: &Site,
        revoked: &Revoked,
    ) -> usize {
        let Ok(mut lives) = self.lives.try_borrow_mut() else {
            tracing::error!("a relay could not write to its list");
            return 0;
        };
        let looked_at = lives.len();
        if looked_at == 0 {
            return 0;
        }
        let now = Instant::now();
        let position = notice.position;
        let mut plain: Option<Option<Option<Bytes>>> = None;
        let (mut written, mut rendering, mut partial, mut failed, mut revoking) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut index = 0;
        while index < lives.len() {
            let live = &lives[index];
            // A stream that caught up from the log may be ahead of the ring.
            if position <= live.last.get() {
                index += 1;
                continue;
            }
            if revoked.may_end(live.key) {
                // Its task looks at its revocations before it handles the notice.
                revoking += 1;
                remove(&mut lives, index).give_back(GivenBack::Ring {
                    receiver: sender.subscribe(),
                    notice: Some(notice.clone()),
                });
                continue;
            }
            let known = if live.plain {
                plain
                    .get_or_insert_with(|| {
                        notice.known_message_for(&Viewer::Public, &NoticeFilter::default(), site)
                    })
                    .clone()
            } else {
                notice.known_message_for(&live.scope.viewer, &live.scope.filter, site)
            };
            let given_back = match known {
                Some(None) => {
                    live.last.set(position);
                    None
                }
                Some(Some(message)) => match live.socket.write_now(&message) {
                    LiveWrite::Whole => {
                        live.last.set(position);
                        live.last_sent.set(now);
                        written += 1;
                        None
                    }
                    LiveWrite::Partly => {
                        live.last.set(position);
                        live.last_sent.set(now);
                        partial += 1;
                        Some(GivenBack::Ring {
                            receiver: sender.subscribe(),
                            notice: None,
                        })
                    }
                    LiveWrite::Failed => {
                        failed += 1;
                        Some(GivenBack::Failed)
                    }
                },
                None => {
                    rendering += 1;
                    Some(GivenBack::Ring {
                        receiver: sender.subscribe(),
                        notice: Some(notice.clone()),
                    })
                }
            };
            match given_back {
                None => index += 1,
                // The last one moves into this place: it is looked at next.
                Some(why) => remove(&mut lives, index).give_back(why),
            }
        }
        if lives.is_empty() {
            self.emptied.notify_one();
        }
        drop(lives);
        if written > 0 {
            metrics::counter!("crier_stream_relay_writes_total").increment(written);
        }
        for (reason, count) in [
            ("rendering", rendering),
            ("partial_write", partial),
            ("failed_write", failed),
            ("revoked_key", revoking),
        ] {
            if count > 0 {
                metrics::counter!("crier_stream_relay_returns_total", "reason" => reason)
                    .increment(count);
            }
        }
        looked_at
    }

    /// The ring ends: every stream goes back to its task.
    pub(crate) fn end(&self) {
        let Ok(mut lives) = self.lives.try_borrow_mut() else {
            tracing::error!("a relay could not give its streams back");
            return;
        };
        for live in std::mem::take(&mut *lives) {
            live.give_back(GivenBack::RingEnded);
        }
    }
}

fn remove(lives: &mut Vec<Rc<Live>>, index: usize) -> Rc<Live> {
    let live = lives.swap_remove(index);
    if let Some(moved) = lives.get(index) {
        moved.index.set(index);
    }
    live
}
