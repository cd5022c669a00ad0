-- The append-only event store.
--
-- `events` holds every event as its writer appended it. Writers never wait for one another
-- except on the same stream (the unique (stream_id, stream_version) index decides races).
--
-- `event_log` gives each committed event its global `position` and links it into the
-- SHA-256 hash chain. A single sealer at a time (advisory lock) fills it in the order
-- (transaction_id, seq), reading only events of transactions older than every running one,
-- so a position, once visible, never gets an event before it. See ARCHITECTURE.md.

CREATE TABLE events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL CHECK (length(stream_id) BETWEEN 1 AND 200),
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL CHECK (length(event_type) BETWEEN 1 AND 200),
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_unique UNIQUE (event_id)
);

-- The sealer's scan: committed events in (transaction_id, seq) order after its checkpoint.
CREATE INDEX events_transaction_order ON events (transaction_id, seq);

CREATE TABLE event_log (
    position        bigint      PRIMARY KEY CHECK (position >= 1),
    seq             bigint      NOT NULL UNIQUE REFERENCES events (seq),
    transaction_id  xid8        NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (length(hash) = 32)
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

-- Appends events to one stream atomically, in one round trip.
-- p_expected: -1 any version, -2 the stream must exist, 0 the stream must not exist,
-- N >= 1 the stream must be exactly at version N.
-- Outcomes: 'appended', 'already_stored' (every event id was stored before, in this stream,
-- in this order, with the same type and data: an idempotent retry), 'event_id_reused'
-- (detail: the first event id stored before with other content or elsewhere),
-- 'wrong_expected_version'. A concurrent append to the same stream that commits first makes
-- this one fail with unique_violation (23505); the caller retries the call, which then reports
-- the new current version (or finds its events stored).
CREATE FUNCTION append_to_stream(
    p_stream_id text,
    p_expected bigint,
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions integer[],
    p_data jsonb[],
    p_metadata jsonb[]
) RETURNS TABLE (outcome text, current_version bigint, first_version bigint, detail text)
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer := cardinality(p_event_ids);
    v_current bigint;
    v_stored integer;
    v_base bigint;
    v_reused uuid;
BEGIN
    SELECT count(*), min(e.stream_version - i.ord)
      INTO v_stored, v_base
      FROM unnest(p_event_ids) WITH ORDINALITY AS i(event_id, ord)
      JOIN events e ON e.event_id = i.event_id;

    IF v_stored > 0 THEN
        SELECT i.event_id INTO v_reused
          FROM unnest(p_event_ids, p_event_types, p_data) WITH ORDINALITY AS i(event_id, event_type, data, ord)
          LEFT JOIN events e ON e.event_id = i.event_id
         WHERE e.seq IS NULL
            OR e.stream_id <> p_stream_id
            OR e.stream_version <> v_base + i.ord
            OR e.event_type <> i.event_type
            OR e.data <> i.data
         ORDER BY i.ord
         LIMIT 1;
        SELECT max(e.stream_version) INTO v_current FROM events e WHERE e.stream_id = p_stream_id;
        IF v_reused IS NULL THEN
            RETURN QUERY SELECT 'already_stored'::text, v_current, v_base + 1, NULL::text;
        ELSE
            RETURN QUERY SELECT 'event_id_reused'::text, v_current, NULL::bigint, v_reused::text;
        END IF;
        RETURN;
    END IF;

    SELECT coalesce(max(e.stream_version), 0) INTO v_current FROM events e WHERE e.stream_id = p_stream_id;
    IF (p_expected = -2 AND v_current = 0) OR (p_expected >= 0 AND p_expected <> v_current) THEN
        RETURN QUERY SELECT 'wrong_expected_version'::text, v_current, NULL::bigint, NULL::text;
        RETURN;
    END IF;

    INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, data, metadata)
    SELECT p_stream_id, v_current + i.ord, i.event_id, i.event_type, i.schema_version, i.data, i.metadata
      FROM unnest(p_event_ids, p_event_types, p_schema_versions, p_data, p_metadata)
           WITH ORDINALITY AS i(event_id, event_type, schema_version, data, metadata, ord)
     ORDER BY i.ord;

    RETURN QUERY SELECT 'appended'::text, v_current + v_count, v_current + 1, NULL::text;
END;
$$;
