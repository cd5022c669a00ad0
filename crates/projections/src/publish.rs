//! Running a command: the one write path of the product.

use domain::DomainError;
use eventstore::{AppendError, EventStore, ExpectedVersion, Metadata, NewEvent, StoreError};
use uuid::Uuid;

use crate::idempotency::{self, IdempotentRequest, Recall, StoredAnswer};
use crate::kinds::{Kind, Versioned};
use crate::write::{write_changes, Changes};
use crate::{ProjectionError, PROJECTIONS_LOCK};

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
}

enum Attempt<R> {
    Done(Written<R>),
    Replayed(StoredAnswer),
    /// Another writer appended to the stream between our read and our append.
    LostRace,
}

impl Publisher {
    pub fn new(store: &EventStore) -> Self {
        Publisher {
            store: store.clone(),
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
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
        for _ in 0..MAX_ATTEMPTS {
            match self
                .attempt::<K>(id, command, if_match, metadata, once.as_ref(), also)
                .await?
            {
                Attempt::Done(written) => return Ok(Outcome::Written(written)),
                Attempt::Replayed(answer) => return Ok(Outcome::Replayed(answer)),
                Attempt::LostRace => continue,
            }
        }
        Err(CommandError::Contended)
    }

    async fn attempt<K: Kind>(
        &self,
        id: Uuid,
        command: &K::Command,
        if_match: Option<u64>,
        metadata: &Metadata,
        once: Option<&Once<'_, K::Resource>>,
        also: Option<&AlsoWrite<'_>>,
    ) -> Result<Attempt<K::Resource>, CommandError> {
        let stream_id = K::stream_id(id);
        let mut client = self.store.pool().get().await?;
        let mut transaction = client.transaction().await?;
        // Taken before this transaction writes anything, so that a replay waiting for the
        // exclusive lock never waits on a transaction that holds back the sealer. The reads
        // are sent with it in one pipeline: the server runs them in order, after the lock.
        let lock = async {
            let statement = transaction
                .prepare_cached("SELECT pg_advisory_xact_lock_shared($1)")
                .await?;
            transaction
                .execute(&statement, &[&PROJECTIONS_LOCK])
                .await
                .map_err(ProjectionError::from)
        };
        let recall = async {
            match once {
                Some(once) => idempotency::recall(&transaction, once.request).await,
                None => Ok(Recall::Fresh),
            }
        };
        let load = load::<K, _>(&transaction, &stream_id, id);
        let (_, recalled, (version, state)) = futures_util::try_join!(lock, recall, load)?;
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
        let events = K::decide(command, &state)?;
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
        if events.is_empty() {
            let written = Written {
                resource: Versioned {
                    id,
                    version,
                    state: new_state,
                },
                events: 0,
            };
            if let Some(once) = once {
                if !idempotency::remember(&transaction, once.request, &(once.answer)(&written))
                    .await?
                {
                    return Ok(Attempt::LostRace);
                }
                transaction.commit().await?;
            }
            return Ok(Attempt::Done(written));
        }
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            let (type_name, schema_version, data) =
                K::encode(event).map_err(ProjectionError::Corrupt)?;
            let mut new_event = NewEvent::new(type_name, data, metadata.clone());
            new_event.schema_version = schema_version;
            new_events.push(new_event);
        }
        let appended = self
            .store
            .append_in_transaction(
                &mut transaction,
                &stream_id,
                ExpectedVersion::Exact(version),
                &new_events,
            )
            .await;
        match appended {
            Ok(_) => {}
            Err(AppendError::WrongExpectedVersion { current, .. }) => {
                return match if_match {
                    Some(expected) => Err(CommandError::VersionMismatch { expected, current }),
                    None => Ok(Attempt::LostRace),
                };
            }
            Err(AppendError::Contended { .. }) => return Ok(Attempt::LostRace),
            Err(AppendError::Invalid(reason)) => return Err(CommandError::Refused(reason)),
            Err(AppendError::EventIdReused { event_id }) => {
                return Err(CommandError::Refused(format!("event id {event_id} reused")))
            }
            Err(AppendError::Store(e)) => return Err(e.into()),
        }
        let resource = Versioned {
            id,
            version: version + events.len() as u64,
            state: new_state,
        };
        let mut changes = Changes::default();
        K::add_to(&mut changes, resource.clone());
        write_changes(&transaction, &changes).await?;
        if let Some(also) = also {
            let statement = transaction.prepare_cached(also.statement).await?;
            transaction.execute(&statement, also.params).await?;
        }
        let written = Written {
            resource,
            events: events.len(),
        };
        if let Some(once) = once {
            // A concurrent request under the same key recorded its answer first: drop this
            // write (by not committing it) and answer with that one on the next attempt.
            if !idempotency::remember(&transaction, once.request, &(once.answer)(&written)).await? {
                return Ok(Attempt::LostRace);
            }
        }
        transaction.commit().await?;
        self.store.notify_appended();
        Ok(Attempt::Done(written))
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
) -> Result<(u64, K::State), ProjectionError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT id, version, state FROM {} WHERE id = $1",
            K::TABLE
        ))
        .await?;
    let (start, snapshot) = match client.query_opt(&statement, &[&id]).await? {
        Some(row) => {
            let row: Versioned<K::Resource> = crate::queries::versioned(&row)?;
            (row.version, Some(row.state))
        }
        None => (0, None),
    };
    let events = read_stream_after(client, stream_id, start).await?;
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
