-- The append-only event store.
--
-- `events` holds every event as its writer appended it. Writers never wait for one another
-- except on the same stream (the unique (stream_id, stream_version) index decides races).
--
-- `event_log` gives each committed event its global `position` and links it into the
-- SHA-256 hash chain. A single sealer at a time (advisory lock) fills it in the order
-- (transaction_id, seq), reading only events of transactions older than every running one,
-- so a position, once visible, never gets an event before it. See ARCHITECTURE.md.
--
-- The store validates lengths and ranges before writing. There are no CHECK constraints on
-- these tables on purpose: PostgreSQL re-parses every CHECK expression on each INSERT, which
-- cost about a fifth of single-event append throughput. What the database must guarantee
-- it does: unique stream versions, unique event ids, and no UPDATE, DELETE or TRUNCATE.

CREATE TABLE events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- SHA-256 of the event's content (see ARCHITECTURE.md), computed by the writer, so that
    -- the sealer links events without decoding their JSON.
    content_hash    bytea       NOT NULL,
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_unique UNIQUE (event_id)
);

-- The sealer's scan: committed events in (transaction_id, seq) order after its checkpoint.
CREATE INDEX events_transaction_order ON events (transaction_id, seq);

CREATE TABLE event_log (
    position        bigint      PRIMARY KEY,
    -- No foreign key: it would lock every referenced event row as it is sealed (a heap
    -- write per event). The sealer is the only writer, and verify checks every link.
    seq             bigint      NOT NULL UNIQUE,
    transaction_id  xid8        NOT NULL,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL
);

-- Durable checkpoints of subscribers (projections, webhook dispatch, ...). Not history:
-- a checkpoint moves forward, so this table is updated in place.
CREATE TABLE subscription_checkpoints (
    subscription    text        PRIMARY KEY,
    position        bigint      NOT NULL CHECK (position >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- History is append-only, enforced by the database for every role, the owner included.
CREATE FUNCTION refuse_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'crier: % on % is refused: the event history is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER event_log_append_only
    BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER event_log_no_truncate
    BEFORE TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

