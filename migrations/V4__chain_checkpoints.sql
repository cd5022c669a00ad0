-- Signed checkpoints of the hash chain: "the link at `position` was `hash`", signed with an
-- Ed25519 key when `signed_at`. An auditor who keeps one can later prove that the history
-- still extends it (`crier verify --checkpoint`). Append-only, like the history it vouches
-- for; signed only after the chain up to `position` was recomputed.
CREATE TABLE chain_checkpoints (
    position    bigint      NOT NULL CHECK (position > 0),
    hash        bytea       NOT NULL CHECK (length(hash) = 32),
    signed_at   timestamptz NOT NULL,
    -- The raw 32-byte Ed25519 public key and the 64-byte signature of the checkpoint text
    -- (see ARCHITECTURE.md, "Signed checkpoints").
    public_key  bytea       NOT NULL CHECK (length(public_key) = 32),
    signature   bytea       NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (public_key, position)
);
CREATE INDEX chain_checkpoints_latest ON chain_checkpoints (position DESC, signed_at DESC);

CREATE TRIGGER chain_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON chain_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER chain_checkpoints_no_truncate
    BEFORE TRUNCATE ON chain_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
