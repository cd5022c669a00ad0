-- Email subscribers.
--
-- rm_subscribers is a read model like the others (rebuilt by `crier replay` from the
-- `subscriber-<uuid>` streams). Its state, like the events, holds the address only sealed.
--
-- The rest is not history and not a read model:
--
-- * subscriber_keys: each subscriber's own key (the address is sealed under it, the links
--   of its emails are signed with it) and the digest of its address that finds an existing
--   subscription. Ending a subscription deletes the row in the transaction of its
--   `subscriber.erased` event: from then on no copy of the history, export or read model
--   can give the address back, and the chain still verifies.
-- * email_recipients: the subscribers as the email outbox met them in the global log, so a
--   notice at position p goes exactly to those confirmed before p and not ended before p.
-- * email_notices: a notice rendered once per (position, audience, language): subject,
--   text and HTML. The address and the links are added per message when it is sent.
-- * email_deliveries: one per (subscriber, confirmation request or notice), written by the
--   outbox in the transaction that moves its checkpoint (subscription `email`); leases,
--   retries and per-incident order as webhook_deliveries.
-- * email_attempts: every attempt, appended once it is over, never changed; an SMTP reply
--   is kept by its codes only (a server's text may quote the address).

CREATE TABLE rm_subscribers (
    id              uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    tenant          text,
    status          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    state           jsonb       NOT NULL
);
CREATE INDEX rm_subscribers_recent ON rm_subscribers (created_at DESC, id DESC);

CREATE TABLE subscriber_keys (
    subscriber_id   uuid        PRIMARY KEY,
    key             bytea       NOT NULL,
    address_digest  bytea       NOT NULL UNIQUE
);

CREATE TABLE email_recipients (
    subscriber_id       uuid        PRIMARY KEY,
    tenant              text,
    service_ids         uuid[]      NOT NULL,
    language            text,
    sealed_address      text,
    -- The latest request: its confirmation link is signed with this time.
    requested_at        timestamptz NOT NULL,
    requested_position  bigint      NOT NULL,
    confirmed_position  bigint,
    ended_position      bigint
);
CREATE INDEX email_recipients_active ON email_recipients (tenant, language)
    WHERE confirmed_position IS NOT NULL AND ended_position IS NULL;

CREATE TABLE email_notices (
    position        bigint      NOT NULL,
    -- '' for the public rendering, else the tenant whose subscribers it is for.
    audience        text        NOT NULL,
    language        text        NOT NULL,
    event_id        uuid        NOT NULL,
    -- The notice's resource stream: its emails form one thread per subscriber.
    thread          text        NOT NULL,
    opens_thread    boolean     NOT NULL,
    subject         text        NOT NULL,
    text_body       text        NOT NULL,
    html_body       text        NOT NULL,
    PRIMARY KEY (position, audience, language)
);

CREATE TABLE email_deliveries (
    subscriber_id   uuid        NOT NULL,
    position        bigint      NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('confirmation', 'notice')),
    -- The email_notices row of a notice.
    audience        text,
    language        text,
    ordering_key    text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    leased_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (subscriber_id, position)
);
CREATE INDEX email_deliveries_due ON email_deliveries (next_attempt_at) WHERE state = 'pending';
-- A subscriber's queue of one resource's notices, and every pending one of a resource.
CREATE INDEX email_deliveries_queue
    ON email_deliveries (ordering_key, subscriber_id, position) WHERE state = 'pending';

CREATE TABLE email_attempts (
    subscriber_id   uuid        NOT NULL,
    position        bigint      NOT NULL,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer     NOT NULL,
    -- NULL: no reply (refused connection, timeout).
    reply_code      smallint,
    error           text,
    PRIMARY KEY (subscriber_id, position, attempt),
    FOREIGN KEY (subscriber_id, position) REFERENCES email_deliveries
);
CREATE TRIGGER email_attempts_append_only
    BEFORE UPDATE OR DELETE ON email_attempts
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();

-- No subscriber exists before this migration: the outbox starts at today's head.
INSERT INTO subscription_checkpoints (subscription, position)
SELECT 'email', coalesce(max(last_position), 0) FROM log_seals
ON CONFLICT (subscription) DO NOTHING;
