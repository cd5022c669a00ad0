-- The answers to POST requests that carried an `Idempotency-Key`, so that a retry gets the
-- original answer instead of doing the work twice. A row is written in the same
-- transaction as the events the request appended (after them), so a crash leaves either
-- both or neither.
--
-- Not history and not a read model: nothing here is derived from events, a replay leaves
-- it alone, and rows older than the retention (at least 24 hours) are deleted.
CREATE TABLE api_idempotency (
    -- The API key that sent the request: keys of different callers never collide.
    api_key_id      uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    -- SHA-256 of the method, the path and the canonical JSON body: another request under
    -- the same key is refused (422) rather than answered with this one's answer.
    request_sha256  text        NOT NULL,
    status          smallint    NOT NULL,
    -- `Location` and `ETag` of the original answer, when it had them.
    location        text,
    etag            text,
    -- The original body, byte for byte.
    body            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, idempotency_key)
);
CREATE INDEX api_idempotency_age ON api_idempotency (created_at);
