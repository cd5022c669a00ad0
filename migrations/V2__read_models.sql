-- Read models: what every reader uses, derived from the events and rebuildable from them
-- (`crier replay`). Nothing here is history: rows are replaced as resources change.
--
-- Each resource row keeps `version` (its stream version) and `state` (the domain state
-- after that version, as serialised by crates/domain). Writers only ever move a row to a
-- higher version, so applying an event twice is a no-op. The other columns are derived from
-- `state` for filtering and ordering.
--
-- Tenancy: every row that carries a notice knows its audience: `public`, or the `tenants`
-- allowed to see it. Readers filter with `public OR $tenant = ANY(tenants)`.
--
-- A service's status is not stored: it is the worst `rm_service_impacts` row the reader may
-- see, so concurrent incidents on one service never overwrite each other's effect, and a
-- private incident never shows in the public status.

CREATE TABLE rm_services (
    id              uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    name            text        NOT NULL,
    group_name      text,
    created_at      timestamptz NOT NULL,
    retired         boolean     NOT NULL,
    state           jsonb       NOT NULL
);

CREATE TABLE rm_incidents (
    id              uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    status          text        NOT NULL,
    is_open         boolean     NOT NULL,
    started_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    regions         text[]      NOT NULL,
    service_ids     uuid[]      NOT NULL,
    public          boolean     NOT NULL,
    tenants         text[]      NOT NULL,
    state           jsonb       NOT NULL
);
CREATE INDEX rm_incidents_recent ON rm_incidents (started_at DESC, id DESC);

CREATE TABLE rm_maintenances (
    id              uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    status          text        NOT NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    regions         text[]      NOT NULL,
    service_ids     uuid[]      NOT NULL,
    public          boolean     NOT NULL,
    tenants         text[]      NOT NULL,
    state           jsonb       NOT NULL
);
CREATE INDEX rm_maintenances_window ON rm_maintenances (starts_at DESC, id DESC);

-- Every update of every incident and maintenance, as the feeds list them (newest first).
CREATE TABLE rm_updates (
    resource_id     uuid        NOT NULL,
    update_id       uuid        NOT NULL,
    resource_kind   text        NOT NULL,
    title           text        NOT NULL,
    status          text        NOT NULL,
    message         text        NOT NULL,
    created_at      timestamptz NOT NULL,
    public          boolean     NOT NULL,
    tenants         text[]      NOT NULL,
    PRIMARY KEY (resource_kind, resource_id, update_id)
);
CREATE INDEX rm_updates_recent ON rm_updates (created_at DESC, update_id DESC);

-- What each open incident and active maintenance does to each service it affects.
CREATE TABLE rm_service_impacts (
    service_id      uuid        NOT NULL,
    source_id       uuid        NOT NULL,
    source_kind     text        NOT NULL,
    status          text        NOT NULL,
    severity        smallint    NOT NULL,
    public          boolean     NOT NULL,
    tenants         text[]      NOT NULL,
    PRIMARY KEY (service_id, source_kind, source_id)
);
CREATE INDEX rm_service_impacts_source ON rm_service_impacts (source_kind, source_id);

-- API keys, matched by the SHA-256 of the secret a request presents (never the secret).
-- Not unique: a forged history with two keys of one hash must not stop the builder; a
-- request matching more than one live key is refused.
CREATE TABLE rm_api_keys (
    id              uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    secret_sha256   text        NOT NULL,
    role            text        NOT NULL,
    tenant          text,
    revoked         boolean     NOT NULL,
    state           jsonb       NOT NULL
);
CREATE INDEX rm_api_keys_secret ON rm_api_keys (secret_sha256);

-- The global position up to which the projection builder has folded the log. One row,
-- moved in the same transaction as the read-model rows it accounts for.
CREATE TABLE rm_checkpoint (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    position        bigint      NOT NULL CHECK (position >= 0)
);
INSERT INTO rm_checkpoint (position) VALUES (0);
