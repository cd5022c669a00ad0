-- Each event's authenticator, made by the process that appended it with a history key the
-- database never sees (`CRIER_HISTORY_KEY_FILE`): the key's 8-byte id followed by an
-- HMAC-SHA256 over the stream id and the content hash. NULL for events appended without a
-- key. Someone who can write to the database can add an event and compute its content hash,
-- but not its authenticator: `crier verify` given the key reports it at its position.
ALTER TABLE events ADD COLUMN authenticator bytea
    CHECK (authenticator IS NULL OR octet_length(authenticator) = 40);
