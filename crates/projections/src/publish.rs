//! Running a command: the one write path of the product.
//!
//! # Read-your-writes, inline
//!
//! [`Publisher::execute`] writes the resource's new state in the transaction that appends its
//! events. When a write answers, its read models are committed, so the next read on any
//! process sees them; nothing waits for the sealer or a follower.
//!
//! The command is decided on the resource as its row holds it (a snapshot written by the same
//! `evolve`), folded forward with any newer events of its stream (appended by another writer
//! and not folded yet), so a long timeline costs a write no more than a short one. It is
//! appended with the version decided on as the expected one, so a stale snapshot can only lose
//! the race: a lost race decides again on the newer state, or is a version mismatch (412)
//! under `If-Match`.
//!
//! # Two round trips
//!
//! 1. The reads, outside any transaction, in one pipeline: the idempotency record, the
//!    stream's events after the row's version, then the row. The events are read before the
//!    row, so the row, read a moment later, is at their floor or past it: whatever the builder
//!    did in between, the events cover everything after the row.
//! 2. The transaction, as one pipeline (see [`eventstore::pipeline`]): `BEGIN`, the shared
//!    projections lock (with generic plans, see `READ_MODEL_WRITE_SQL`), the append, the
//!    read-model writes, the caller's own statement ([`AlsoWrite`]), the idempotency answer,
//!    `COMMIT`. The lock comes before any write, so that a replay waiting for it exclusively
//!    never waits on a transaction that holds back the sealer; the append is the first write,
//!    as the log's order requires. The commands of requests that arrive together share that
//!    transaction ([`crate::group_commit`]): their appends, one set of read-model statements
//!    for all of them, their answers, one `COMMIT`. A command with its own statement
//!    ([`AlsoWrite`]) is written alone.
//!
//! The `COMMIT` goes out before any answer is in, so every outcome that must not be committed
//! is a statement's error, never a result read afterwards: a stream that moved past the
//! expected version is a unique violation of the append (one below it, a not-null violation),
//! and a lost idempotency race a primary-key violation of the answer's row; after an error the
//! server answers `COMMIT` by rolling back. A concurrent request under the same idempotency key
//! is caught that way, when its answer is recorded; its next attempt finds the winner's answer.
//! In a shared transaction the failing command is answered with its failure and the others,
//! rolled back with it, are sent again.
//!
//! A process writes one command per stream at a time: a second write to a resource waits for
//! the first and decides on the state it left, instead of racing it to the append.
//!
//! # The states written last
//!
//! Each publisher keeps the states it wrote last with their versions (`quick_cache`, bounded at
//! 64 MiB by an estimate of their size, [`Kind::weight`]), and markers for new ids not
//! written yet. The row read then returns the state only when the row no longer holds the
//! known version: a version is one state, whoever computed it, so a write by another process
//! or the builder simply moves the row past it.
//!
//! A write to a resource this process wrote last skips the reads altogether (one round trip):
//! it is decided on the kept state and appended at the kept version, and the append's expected
//! version (and the idempotency answer's primary key) prove that state current. Whatever that
//! attempt cannot settle alone (the domain refuses the command, the stream moved on, the
//! command changes nothing) is decided again on what the database holds, so a stale state
//! never answers a 409, 412 or 400 that the current one would not.
//!
//! A resource created under an id from [`Publisher::new_id`] skips them too: the id is new
//! (random, made by this process), so its stream is empty, and the append at version 0
//! proves it the same way. The cache keeps a marker for such an id ([`Unwritten`]) until the
//! first write replaces it with the state written, or the command ends without writing and
//! takes it out. A create under an `Idempotency-Key` reads first all the same: sent again,
//! it would carry a new id, append, and find the earlier answer only when the answer's
//! primary key refused it, rolling back every write batched with it.

use std::any::Any;
use std::sync::Arc;

use domain::DomainError;
use eventstore::{AppendError, EventStore, Metadata, NewEvent, StoreError};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::group_commit::{Committed, GroupCommit, Job, StreamTurns, ALONE_AFTER};
use crate::idempotency::{self, IdempotentRequest, Recall, StoredAnswer};
use crate::kinds::{Kind, Versioned};
use crate::write::{Changes, Writes};
use crate::{ProjectionError, PROJECTIONS_LOCK, READ_MODEL_WRITE_SQL};
use eventstore::pipeline::OpenTransaction;

/// How often a command is decided again after a concurrent write to its resource won the
/// race, before giving up.
const MAX_ATTEMPTS: usize = 20;

/// A statement run in a command's transaction right after its events are appended: what
/// must be stored exactly when they are and never otherwise (a webhook's signing secret,
/// which no event may carry). Not run when the command appends nothing.
pub struct AlsoWrite<'a> {
    pub statement: &'static str,
    pub params: &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)],
}

/// The outcome of a command that was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<R> {
    /// The resource after the command, at `version`.
    pub resource: Versioned<R>,
    /// How many events the command appended (0: it changed nothing).
    pub events: usize,
}

/// What [`Publisher::execute_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<R> {
    /// The command ran now (and its answer is recorded).
    Written(Written<R>),
    /// The same request was answered before: this is its answer, and nothing was written.
    Replayed(StoredAnswer),
}

/// A request sent with an idempotency key, and how to render its answer for the record.
pub struct Once<'a, R> {
    pub request: &'a IdempotentRequest,
    /// The answer the caller will give for this write, recorded with it.
    pub answer: &'a (dyn Fn(&Written<R>) -> StoredAnswer + Sync),
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command (400, 404 or 409).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// `If-Match` named another version than the current one (412).
    #[error("the resource is at version {current}, not {expected}")]
    VersionMismatch { expected: u64, current: u64 },
    /// The idempotency key was used before for another request (422).
    #[error("this Idempotency-Key was used for another request")]
    IdempotencyKeyReused,
    /// Writers kept winning the race for this resource.
    #[error("the resource is changing too fast to apply the command; retry")]
    Contended,
    /// The store refused the events as malformed (a bug or a payload beyond its limits).
    #[error("the events were refused: {0}")]
    Refused(String),
    /// The system gave no randomness for a secret.
    #[error("no randomness for a secret")]
    Randomness(#[source] getrandom::Error),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl From<StoreError> for CommandError {
    fn from(err: StoreError) -> Self {
        CommandError::Projection(err.into())
    }
}

impl From<tokio_postgres::Error> for CommandError {
    fn from(err: tokio_postgres::Error) -> Self {
        CommandError::Projection(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for CommandError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        CommandError::Projection(err.into())
    }
}

impl CommandError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CommandError::Projection(e) if e.is_unavailable())
    }
}

/// Runs commands against the event store and keeps the read models in step.
#[derive(Clone)]
pub struct Publisher {
    store: EventStore,
    recent: Arc<RecentStates>,
    turns: Arc<StreamTurns>,
    batches: Arc<GroupCommit>,
}

/// How many bytes (estimated, see [`Kind::weight`]) of recently written states a publisher
/// keeps.
const RECENT_STATES_BYTES: u64 = 64 << 20;

/// The states this process wrote last, by resource id, with their versions, and markers of
/// the new ids it made and has not written yet. A write to the same resource then reads
/// only its row's version, not its state, when the row still holds that version: a version
/// is one state, whoever computed it.
type RecentStates = quick_cache::sync::Cache<Uuid, Recent, RecentWeight>;

#[derive(Clone)]
struct Recent {
    version: u64,
    weight: u64,
    /// A `K::Resource` of the writer's kind, or [`Unwritten`].
    state: Arc<dyn Any + Send + Sync>,
}

/// The state kept for an id made by [`Publisher::new_id`] and not written yet: no resource,
/// at version 0.
struct Unwritten;

/// Takes a new id's [`Unwritten`] marker out of the cache when the command that was to
/// write it ends, however it ends (its request dropped midway too): a write has replaced the
/// marker with its state already, and anything else leaves the marker nothing to do.
struct ForgetUnwritten<'a> {
    recent: &'a RecentStates,
    id: Uuid,
}

impl Drop for ForgetUnwritten<'_> {
    fn drop(&mut self) {
        self.recent
            .remove_if(&self.id, |r| r.state.is::<Unwritten>());
    }
}

/// The weight of an [`Unwritten`] marker: its entry, its allocation and the cache's own
/// bookkeeping, generously, so that markers left by requests refused before their command
/// ran (a rate limit) cannot crowd out more than their share.
const UNWRITTEN_WEIGHT: u64 = 256;

#[derive(Clone)]
struct RecentWeight;

impl quick_cache::Weighter<Uuid, Recent> for RecentWeight {
    fn weight(&self, _: &Uuid, recent: &Recent) -> u64 {
        recent.weight
    }
}

enum Attempt<R> {
    Done(Written<R>),
    Replayed(StoredAnswer),
    /// Another writer appended to the stream between our read and our append.
    LostRace,
    /// The state this process wrote last could not decide the command alone (it refused
    /// it, or the append found the stream moved on): read the current one and decide again.
    Unverified,
    /// Another write of the same batch failed and rolled this one back with it: try again.
    RolledBack,
    /// The batch failed where no one write is to blame: write this one alone.
    WriteAlone,
}

/// A command as its caller sent it, with what its transaction must also write.
struct Request<'r, K: Kind> {
    id: Uuid,
    command: &'r K::Command,
    if_match: Option<u64>,
    metadata: &'r Metadata,
    once: Option<&'r Once<'r, K::Resource>>,
    also: Option<&'r AlsoWrite<'r>>,
}

// By hand: a derive would ask `K: Copy`.
impl<K: Kind> Clone for Request<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: Kind> Copy for Request<'_, K> {}

impl Publisher {
    pub fn new(store: &EventStore) -> Self {
        Publisher {
            store: store.clone(),
            recent: Arc::new(RecentStates::with_weighter(
                10_000,
                RECENT_STATES_BYTES,
                RecentWeight,
            )),
            turns: Arc::default(),
            batches: Arc::default(),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// A new resource id, to create a resource under: its first write, unless under an
    /// idempotency key or `If-Match`, decides on no resource and appends at version 0
    /// without reading first (see the module doc), while the cache keeps its marker.
    pub fn new_id(&self) -> Uuid {
        let id = Uuid::new_v4();
        let unwritten = Recent {
            version: 0,
            weight: UNWRITTEN_WEIGHT,
            state: Arc::new(Unwritten),
        };
        self.recent.insert(id, unwritten);
        id
    }

    /// Decides `command` on resource `id` as it stands and, if it is accepted, appends its
    /// events and writes the resource's read models in one transaction.
    ///
    /// `if_match`: the version the caller last saw; any other current version refuses the
    /// command with [`CommandError::VersionMismatch`]. Without it, a concurrent write makes
    /// the command be decided again on the newer state.
    #[tracing::instrument(level = "debug", skip(self, command, metadata), fields(kind = K::NAME))]
    pub async fn execute<K: Kind>(
        &self,
        id: Uuid,
        command: &K::Command,
        if_match: Option<u64>,
        metadata: &Metadata,
    ) -> Result<Written<K::Resource>, CommandError> {
        match self
            .execute_once::<K>(id, command, if_match, metadata, None, None)
            .await?
        {
            Outcome::Written(written) => Ok(written),
            Outcome::Replayed(_) => Err(CommandError::Refused(
                "a replayed answer without an idempotency key".into(),
            )),
        }
    }

    /// [`Publisher::execute`], at most once per idempotency key, with `also` written in the
    /// events' transaction: with `once`, a request
    /// answered before gets its recorded answer and writes nothing, and the answer of a new
    /// one is recorded in the transaction of its events (after them), so that a crash can
    /// never leave the write without its record or the reverse. A concurrent duplicate
    /// waits for the first one and then gets its answer.
    #[tracing::instrument(level = "debug", skip_all, fields(kind = K::NAME, %id))]
    pub async fn execute_once<K: Kind>(
        &self,
        id: Uuid,
        command: &K::Command,
        if_match: Option<u64>,
        metadata: &Metadata,
        once: Option<Once<'_, K::Resource>>,
        also: Option<&AlsoWrite<'_>>,
    ) -> Result<Outcome<K::Resource>, CommandError> {
        let _marker = ForgetUnwritten {
            recent: &self.recent,
            id,
        };
        // The first attempt trusts the state this process wrote last, if it has it: the
        // append's expected version and the idempotency record prove it current, so the
        // common write skips the read round trip. Anything it cannot settle alone is tried
        // again on what the database holds.
        let stream_id = K::stream_id(id);
        // One command per stream at a time in this process (see group_commit).
        let _turn = self.turns.take(&stream_id).await;
        let mut from_memory = true;
        let mut alone = false;
        let mut attempts = 0;
        let mut rollbacks = 0;
        while attempts < MAX_ATTEMPTS {
            let request = Request::<K> {
                id,
                command,
                if_match,
                metadata,
                once: once.as_ref(),
                also,
            };
            let attempt = self
                .attempt(request, &stream_id, from_memory, alone)
                .await?;
            match attempt {
                Attempt::Done(written) => return Ok(Outcome::Written(written)),
                Attempt::Replayed(answer) => return Ok(Outcome::Replayed(answer)),
                Attempt::Unverified => from_memory = false,
                Attempt::LostRace => {
                    attempts += 1;
                    from_memory = false;
                }
                // Nothing of it was written and its decision still stands.
                Attempt::RolledBack => {
                    rollbacks += 1;
                    alone = rollbacks >= ALONE_AFTER;
                }
                Attempt::WriteAlone => alone = true,
            }
        }
        Err(CommandError::Contended)
    }

    async fn attempt<K: Kind>(
        &self,
        request: Request<'_, K>,
        stream_id: &str,
        from_memory: bool,
        alone: bool,
    ) -> Result<Attempt<K::Resource>, CommandError> {
        let Request {
            id,
            command,
            if_match,
            once,
            ..
        } = request;
        let recent = self.recent.get(&id);
        let unwritten = recent.as_ref().is_some_and(|r| r.state.is::<Unwritten>());
        let known = recent.and_then(|recent| {
            let state = recent.state.downcast::<K::Resource>().ok()?;
            Some((recent.version, state))
        });
        let remembered = match &known {
            Some((version, state)) => Some((*version, Some(state))),
            // Under an idempotency key, the earlier answer is read first (see the module doc).
            None if unwritten && once.is_none() => Some((0, None)),
            None => None,
        };
        // Decided on the state this process wrote last (or on none, for a new id),
        // unverified: any refusal, from the decision or the append, is checked against the
        // database's state first.
        if let Some((version, state)) =
            remembered.filter(|(version, _)| from_memory && if_match.is_none_or(|v| v == *version))
        {
            let decided = Decided {
                version,
                state: state.map(|state| K::Resource::clone(state)),
                unverified: true,
            };
            return match self
                .decide_and_write(None, request, stream_id, decided, alone)
                .await
            {
                Err(CommandError::Domain(_)) => Ok(Attempt::Unverified),
                other => other,
            };
        }
        let client = self.store.pool().get().await?;
        // Read outside any transaction, in one round trip: the append's expected version
        // tells whether what was read is still current, and a concurrent request under the
        // same idempotency key is caught when its answer is recorded.
        let recall = async {
            match once {
                Some(once) => idempotency::recall(&client, once.request).await,
                None => Ok(Recall::Fresh),
            }
        };
        let load = load::<K, _>(&client, stream_id, id, known);
        let (recalled, (version, state)) = futures_util::try_join!(recall, load)?;
        match recalled {
            Recall::Fresh => {}
            Recall::Answered(answer) => return Ok(Attempt::Replayed(answer)),
            Recall::OtherRequest => return Err(CommandError::IdempotencyKeyReused),
        }
        if let Some(expected) = if_match {
            if expected != version {
                // Invalid content and a missing resource are answered as such, whatever
                // version was named: a precondition only decides a request that would
                // otherwise succeed (RFC 9110 §13.2.1). A command that today's state merely
                // refuses is the 412 that tells the caller to read again.
                match K::decide(command, &state) {
                    Err(error @ (DomainError::Invalid(_) | DomainError::NotFound(_))) => {
                        return Err(error.into())
                    }
                    Ok(_) | Err(DomainError::Conflict(_)) => {}
                }
                return Err(CommandError::VersionMismatch {
                    expected,
                    current: version,
                });
            }
        }
        let decided = Decided {
            version,
            state,
            unverified: false,
        };
        self.decide_and_write(Some(client), request, stream_id, decided, alone)
            .await
    }

    /// Decides the command on the state it was read or remembered at and writes the outcome:
    /// with other requests' writes in a batch ([`GroupCommit`]), or `alone` in a pipelined
    /// transaction of its own on `client` (one from the pool if `None`).
    async fn decide_and_write<K: Kind>(
        &self,
        client: Option<deadpool_postgres::Client>,
        request: Request<'_, K>,
        stream_id: &str,
        decided: Decided<K::State>,
        alone: bool,
    ) -> Result<Attempt<K::Resource>, CommandError> {
        let Decided {
            version,
            state,
            unverified,
        } = decided;
        let Request {
            id,
            command,
            if_match,
            metadata,
            once,
            also,
        } = request;
        let events = K::decide(command, &state)?;
        let before = state.clone();
        let new_state = events.iter().fold(state, K::evolve).ok_or_else(|| {
            ProjectionError::Corrupt(format!("{stream_id}: the command leaves no resource"))
        })?;
        if K::resource_id(&new_state) != id {
            return Err(CommandError::Refused(format!(
                "the command is for {} {} but was sent to {id}",
                K::NAME,
                K::resource_id(&new_state)
            )));
        }
        let written = Written {
            resource: Versioned {
                id,
                version: version + events.len() as u64,
                state: new_state,
            },
            events: events.len(),
        };
        if events.is_empty() {
            if unverified {
                // Nothing to append, so nothing would prove the state current.
                return Ok(Attempt::Unverified);
            }
            if let Some(once) = once {
                let client = self.connection(client).await?;
                let answer = (once.answer)(&written);
                let remember = idempotency::prepare_remember(&client, once.request, answer).await?;
                if !remember.send(&client).await? {
                    return Ok(Attempt::LostRace);
                }
            }
            return Ok(Attempt::Done(written));
        }
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            let (type_name, schema_version, data) = K::encode(event)?;
            let mut new_event = NewEvent::new(type_name, data, metadata.clone());
            new_event.schema_version = schema_version;
            new_events.push(new_event);
        }
        let mut changes = Changes::default();
        match &before {
            Some(before) => K::note_unchanged(before, &written.resource.state, &mut changes),
            None => {
                changes.new_resources.insert(id);
            }
        }
        K::note_new_updates(before.as_ref(), &written.resource.state, &mut changes);
        K::add_to(&mut changes, written.resource.clone());

        if also.is_none() && !alone {
            // The batch takes a connection of its own: this one goes back to the pool first.
            drop(client);
            let job = Job {
                stream_id: stream_id.to_owned(),
                expected: version,
                events: new_events,
                changes,
                remember: once.map(|once| (once.request.clone(), (once.answer)(&written))),
            };
            return match self.batches.commit(&self.store, job).await {
                Committed::Written => {
                    self.remember_written::<K>(&written);
                    Ok(Attempt::Done(written))
                }
                Committed::Refused(e) => refused_append(e, if_match, unverified),
                Committed::IdempotencyRaceLost => Ok(Attempt::LostRace),
                Committed::RolledBack => Ok(Attempt::RolledBack),
                Committed::WriteAlone => Ok(Attempt::WriteAlone),
                Committed::Failed(e) => Err(e.into()),
            };
        }
        let client = self.connection(client).await?;
        let client = &client;
        // The write: one transaction sent as one pipeline (see eventstore::pipeline), so every
        // statement is prepared first. The shared lock comes before any write, so that a
        // replay waiting for the exclusive lock never waits on a transaction that holds back
        // the sealer; the events come next, as the transaction's first write (the sealer's
        // order needs it); then the read models, the caller's own statement, the answer for
        // the idempotency key, and `COMMIT`.
        let append = match self
            .store
            .prepare_pipelined_append(client, stream_id, version, &new_events)
            .await
        {
            Ok(append) => append,
            Err(e) => return refused_append(e, if_match, unverified),
        };
        let writes = Writes::of(&changes)?.prepare(client).await?;
        let lock = client.prepare_cached(READ_MODEL_WRITE_SQL).await?;
        let also = match also {
            Some(also) => Some((client.prepare_cached(also.statement).await?, also.params)),
            None => None,
        };
        let remember = match once {
            Some(once) => Some(
                idempotency::prepare_remember(client, once.request, (once.answer)(&written))
                    .await?,
            ),
            None => None,
        };
        let (transaction, begin) = OpenTransaction::begin(client);
        let (begun, locked, appended, wrote, also_wrote, remembered, committed) = futures_util::join!(
            begin,
            client.execute(&lock, &[&PROJECTIONS_LOCK]),
            append.send(client),
            writes.send(client),
            async {
                match &also {
                    Some((statement, params)) => client.execute(statement, params).await,
                    None => Ok(0),
                }
            },
            async {
                match &remember {
                    Some(remember) => remember.send(client).await,
                    None => Ok(true),
                }
            },
            // Every outcome below other than `Done` comes from a statement's error, which
            // makes this a rollback.
            transaction.commit_in_pipeline(),
        );
        // The first failure is the cause; the statements after it failed only because it
        // aborted the transaction.
        let outcome = (|| {
            begun?;
            locked?;
            if let Err(e) = appended {
                return refused_append(e, if_match, unverified);
            }
            wrote?;
            also_wrote?;
            // A concurrent request under the same key recorded its answer first: this
            // write is dropped and the next attempt answers with that one.
            if !remembered? {
                return Ok(Attempt::LostRace);
            }
            Ok(Attempt::Done(written))
        })();
        if let Ok(Attempt::Done(written)) = &outcome {
            committed?;
            self.store.notify_appended();
            self.remember_written::<K>(written);
        }
        outcome
    }

    /// `client`, or else one from the pool.
    async fn connection(
        &self,
        client: Option<deadpool_postgres::Client>,
    ) -> Result<deadpool_postgres::Client, CommandError> {
        match client {
            Some(client) => Ok(client),
            None => Ok(self.store.pool().get().await?),
        }
    }

    /// Keeps the state a committed write left, for the next write to the same resource.
    fn remember_written<K: Kind>(&self, written: &Written<K::Resource>) {
        let resource = &written.resource;
        let recent = Recent {
            version: resource.version,
            weight: K::weight(&resource.state),
            state: Arc::new(resource.state.clone()),
        };
        self.recent.insert(resource.id, recent);
    }
}

/// The state a command is decided on, at `version`. `unverified`: it is what this process
/// wrote last, not read now, so a refusal that a newer state might not give is
/// [`Attempt::Unverified`].
struct Decided<S> {
    version: u64,
    state: S,
    unverified: bool,
}

/// What a refused append means for the command: decide it again on the newer state, or
/// give up.
fn refused_append<R>(
    error: AppendError,
    if_match: Option<u64>,
    unverified: bool,
) -> Result<Attempt<R>, CommandError> {
    match error {
        // The stream moved past the state this process wrote last.
        AppendError::WrongExpectedVersion { .. }
        | AppendError::StreamMoved { .. }
        | AppendError::Contended { .. }
            if unverified =>
        {
            Ok(Attempt::Unverified)
        }
        AppendError::WrongExpectedVersion { current, .. } => match if_match {
            Some(expected) => Err(CommandError::VersionMismatch { expected, current }),
            None => Ok(Attempt::LostRace),
        },
        // The next attempt reads the newer state; under If-Match, that is the 412.
        AppendError::StreamMoved { .. } | AppendError::Contended { .. } => Ok(Attempt::LostRace),
        AppendError::Invalid(reason) => Err(CommandError::Refused(reason)),
        AppendError::EventIdReused { event_id } => {
            Err(CommandError::Refused(format!("event id {event_id} reused")))
        }
        AppendError::Store(e) => Err(e.into()),
    }
}

/// The resource's current version and state: its read-model row (a snapshot written by the
/// same `evolve`) folded forward with any events of its stream the row does not hold yet
/// (appended by another writer and not folded by the builder yet). A write then costs the
/// same for a long timeline as for a short one; the append's expected version still guards
/// against a stale snapshot.
pub(crate) async fn load<K: Kind, C: deadpool_postgres::GenericClient>(
    client: &C,
    stream_id: &str,
    id: Uuid,
    known: Option<(u64, Arc<K::Resource>)>,
) -> Result<(u64, K::State), ProjectionError> {
    // One round trip (see eventstore::pipeline). The events are read first, after the version
    // the row held at that moment; the row is read second, at that version or a later one
    // (the builder may have moved it in between): either way the events cover everything
    // after the row, and those it holds already are skipped by the fold.
    let newer = client
        .prepare_cached(&format!(
            "SELECT {} FROM events e \
              WHERE e.stream_id = $1 \
                AND e.stream_version > coalesce((SELECT version FROM {} WHERE id = $2), 0) \
              ORDER BY e.stream_version LIMIT $3",
            eventstore::EVENT_COLUMNS,
            K::TABLE
        ))
        .await?;
    // The state is left out when the row holds the version whose state is known.
    let snapshot = client
        .prepare_cached(&format!(
            "SELECT r.version, CASE WHEN r.version = $2 THEN NULL ELSE r.state END AS state, \
                    CASE WHEN r.version = $2 THEN NULL ELSE {} END AS timeline \
               FROM {} r WHERE r.id = $1",
            <K::Resource as crate::queries::StoredState>::TIMELINE,
            K::TABLE
        ))
        .await?;
    let page = i64::try_from(eventstore::MAX_READ_BATCH).unwrap_or(i64::MAX);
    let known_version = known
        .as_ref()
        .and_then(|(version, _)| i64::try_from(*version).ok())
        .unwrap_or(-1);
    let newer_params: [&(dyn ToSql + Sync); 3] = [&stream_id, &id, &page];
    let snapshot_params: [&(dyn ToSql + Sync); 2] = [&id, &known_version];
    let (newer, snapshot) = futures_util::try_join!(
        client.query(&newer, &newer_params),
        client.query_opt(&snapshot, &snapshot_params),
    )?;
    let (start, snapshot) = match snapshot {
        Some(row) => {
            let version = u64::try_from(row.try_get::<_, i64>("version")?)
                .map_err(|_| ProjectionError::Corrupt(format!("negative version of {id}")))?;
            let state = match (crate::queries::stored_state(&row, id)?, known) {
                (Some(stored), _) => stored,
                (None, Some((_, known))) => Arc::unwrap_or_clone(known),
                (None, None) => {
                    return Err(ProjectionError::Corrupt(format!("no stored state of {id}")))
                }
            };
            (version, Some(state))
        }
        None => (0, None),
    };
    let mut events = newer
        .iter()
        .map(eventstore::RecordedEvent::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // A full page, or a row that went back (a replay swapped the table in between): read
    // every event after the row, in pages.
    if events.len() == eventstore::MAX_READ_BATCH
        || events.first().is_some_and(|e| e.stream_version > start + 1)
    {
        events = read_stream_after(client, stream_id, start).await?;
    }
    let refs: Vec<_> = events.iter().collect();
    crate::builder::fold_stream::<K>(id, start, snapshot, &refs)
}

/// Every event of a stream after version `after`, in order (read in pages).
async fn read_stream_after<C: deadpool_postgres::GenericClient>(
    client: &C,
    stream_id: &str,
    after: u64,
) -> Result<Vec<eventstore::RecordedEvent>, ProjectionError> {
    let mut events = Vec::new();
    loop {
        let from = after + events.len() as u64 + 1;
        let page = eventstore::read_stream_forward_with(
            client,
            stream_id,
            from,
            eventstore::MAX_READ_BATCH,
        )
        .await?;
        let full = page.len() == eventstore::MAX_READ_BATCH;
        events.extend(page);
        if !full {
            return Ok(events);
        }
    }
}

/// Every event of a stream, in order (read in pages).
pub(crate) async fn read_whole_stream<C: deadpool_postgres::GenericClient>(
    client: &C,
    stream_id: &str,
) -> Result<Vec<eventstore::RecordedEvent>, ProjectionError> {
    read_stream_after(client, stream_id, 0).await
}
