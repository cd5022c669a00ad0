-- The verifier each API key is matched by (the SHA-256 of its secret), kept outside the
-- history: no event and no export carries a digest from which a secret that a person chose
-- (the bootstrap admin key's) could be guessed offline. Written in the transaction of the
-- key's creation, like a webhook's secret. Not a read model: replay leaves it alone, as no
-- event holds what it holds. One verifier per secret, so that processes starting together
-- with one bootstrap secret make one key.
CREATE TABLE api_key_verifiers (
    key_id          uuid        PRIMARY KEY,
    secret_sha256   text        NOT NULL UNIQUE CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    created_at      timestamptz NOT NULL DEFAULT now()
);

INSERT INTO api_key_verifiers (key_id, secret_sha256)
SELECT id, secret_sha256 FROM rm_api_keys
ON CONFLICT DO NOTHING;

DROP INDEX rm_api_keys_secret;
ALTER TABLE rm_api_keys DROP COLUMN secret_sha256;
UPDATE rm_api_keys SET state = state - 'secret_sha256';
