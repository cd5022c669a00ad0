-- Webhooks.
--
-- rm_webhooks is a read model like the others (rebuilt by `crier replay`): registrations as
-- the admin API lists them, read-your-writes.
--
-- The rest is the dispatcher's working state, not history and not a read model:
--
-- * webhook_secrets: each endpoint's signing secret. It is in no event, so that no export
--   of the history carries it; it is written in the transaction of the registration.
-- * webhook_endpoints: the endpoints as the dispatcher's fan-out met them in the global log,
--   so that a notice at position p goes exactly to the endpoints registered before p and
--   not ended before p, whenever the fan-out gets to it (what a notice is matched by; the
--   URL is read from rm_webhooks when sending).
-- * webhook_deliveries: one per (endpoint, notice), with the CloudEvent body rendered once
--   (every retry sends the same bytes under the same webhook-id). Written by the fan-out in
--   the transaction that moves its checkpoint (subscription `webhooks`), so a crash neither
--   loses nor doubles one. A delivery is pending until delivered, failed (out of attempts)
--   or cancelled (its endpoint ended).
-- * webhook_attempts: every attempt, appended once it is over, never changed.

CREATE TABLE rm_webhooks (
    id              uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    tenant          text,
    active          boolean     NOT NULL,
    created_at      timestamptz NOT NULL,
    state           jsonb       NOT NULL
);
CREATE INDEX rm_webhooks_recent ON rm_webhooks (created_at DESC, id DESC);

CREATE TABLE webhook_secrets (
    webhook_id      uuid        PRIMARY KEY,
    secret          text        NOT NULL
);

CREATE TABLE webhook_endpoints (
    webhook_id          uuid        PRIMARY KEY,
    -- Empty: every notice type, every service.
    event_types         text[]      NOT NULL,
    service_ids         uuid[]      NOT NULL,
    tenant              text,
    registered_position bigint      NOT NULL,
    ended_position      bigint
);

CREATE TABLE webhook_deliveries (
    webhook_id      uuid        NOT NULL,
    position        bigint      NOT NULL,
    -- The webhook-id header: the notice's event id, the same on every retry.
    message_id      uuid        NOT NULL,
    event_type      text        NOT NULL,
    -- Deliveries of one key (the notice's resource stream) go out one at a time, in
    -- position order: a delivery behind a pending one of its key waits with
    -- next_attempt_at = 'infinity' until that one is over.
    ordering_key    text        NOT NULL,
    body            text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- A process sending it holds it until then; after that, another may retry it.
    leased_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (webhook_id, position)
);
-- What a claim reads: each endpoint's due deliveries, soonest first.
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (webhook_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_queue
    ON webhook_deliveries (webhook_id, ordering_key, position) WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    webhook_id      uuid        NOT NULL,
    position        bigint      NOT NULL,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer     NOT NULL,
    -- NULL: no answer (connection refused, timeout, refused address).
    status_code     smallint,
    error           text,
    PRIMARY KEY (webhook_id, position, attempt),
    FOREIGN KEY (webhook_id, position) REFERENCES webhook_deliveries
);
CREATE TRIGGER webhook_attempts_append_only
    BEFORE UPDATE OR DELETE ON webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();

-- No webhook exists before this migration: the fan-out starts at today's head rather than
-- reading the whole history once for nothing.
INSERT INTO subscription_checkpoints (subscription, position)
SELECT 'webhooks', coalesce(max(position), 0) FROM event_log
ON CONFLICT (subscription) DO NOTHING;
