-- The global log as one row per seal instead of one row per event.
--
-- A seal (one transaction of the sealer, see V1 and ARCHITECTURE.md) links a run of
-- consecutive positions. `log_seals` keeps that run in one row: its first position, the
-- `(transaction_id, seq)` of each event it links, in order, the link before it, and each
-- event's link. Position `first_position + i - 1` is the i-th element of the arrays, and
-- its `prev_hash` is the (i-1)-th hash, or the row's `prev_hash` for the first.
--
-- Why: an `event_log` row per event cost the sealer a heap tuple and two index entries per
-- event, most of what sealing costs the appenders (docs/PERFORMANCE.md, "one row per
-- seal"); a row per seal costs one tuple and two index entries per seal, and reads as fast.
--
-- What changes for guarantees: nothing the chain covers. The database no longer keeps a
-- `seq` unique across the log (arrays cannot carry a unique index); the single sealer never
-- links an event twice, and `crier verify` checks that the linked pairs strictly increase,
-- which a repeated event would break.

CREATE TABLE log_seals (
    first_position      bigint   PRIMARY KEY,
    transaction_ids     xid8[]   NOT NULL,
    seqs                bigint[] NOT NULL,
    -- The link of `first_position - 1` (the genesis hash for position 1).
    prev_hash           bytea    NOT NULL,
    hashes              bytea[]  NOT NULL,
    -- Derived, so that they cannot disagree with the arrays: what the sealer resumes from
    -- and what reverse lookups (an event's position from its pair) search by. `seqs` counts
    -- the positions; `crier verify` checks that the other arrays are as long.
    last_position       bigint   GENERATED ALWAYS AS (first_position + cardinality(seqs) - 1) STORED,
    last_transaction_id xid8     GENERATED ALWAYS AS (transaction_ids[cardinality(seqs)]) STORED,
    last_seq            bigint   GENERATED ALWAYS AS (seqs[cardinality(seqs)]) STORED
);

-- The arrays are read whole and do not compress (hashes) or barely pay for it: stored
-- out of line uncompressed, a seal's write does not try to compress them.
ALTER TABLE log_seals
    ALTER COLUMN transaction_ids SET STORAGE EXTERNAL,
    ALTER COLUMN seqs SET STORAGE EXTERNAL,
    ALTER COLUMN hashes SET STORAGE EXTERNAL;

CREATE UNIQUE INDEX log_seals_last_pair ON log_seals (last_transaction_id, last_seq);

CREATE TRIGGER log_seals_append_only
    BEFORE UPDATE OR DELETE ON log_seals
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER log_seals_no_truncate
    BEFORE TRUNCATE ON log_seals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

-- The links sealed so far, copied as they are: nothing is recomputed, so a forged link
-- stays forged and `crier verify` still finds it. A seal holds a run of rows in which each
-- position follows the one before and each `prev_hash` is the hash before it (a seal
-- stores only its first `prev_hash`), cut every 1000 positions: a hole, or a `prev_hash`
-- that does not match, starts a new seal and stays there for verify to name. `event_log`
-- keeps its rows and is no longer written or read.
WITH linked AS (
    SELECT l.*,
           CASE WHEN position = lag(position) OVER w + 1 AND prev_hash = lag(hash) OVER w
                THEN 0 ELSE 1 END AS starts_run
      FROM event_log l
    WINDOW w AS (ORDER BY position)
), runs AS (
    SELECT linked.*, sum(starts_run) OVER (ORDER BY position) AS run FROM linked
), parts AS (
    SELECT runs.*, (row_number() OVER (PARTITION BY run ORDER BY position) - 1) / 1000 AS part
      FROM runs
)
INSERT INTO log_seals (first_position, transaction_ids, seqs, prev_hash, hashes)
SELECT min(position),
       array_agg(transaction_id ORDER BY position),
       array_agg(seq ORDER BY position),
       (array_agg(prev_hash ORDER BY position))[1],
       array_agg(hash ORDER BY position)
  FROM parts
 GROUP BY run, part;

-- At most `max_links` links after `after_position`, in position order: the log as one row
-- per event, for the store's readers and for an auditor's SQL. PostgreSQL inlines it into
-- the calling query (where a join with `events` keeps its order, so that the caller's
-- ORDER BY costs no sort). It trusts the seals to follow one another: `crier verify` checks
-- that they do.
-- The arrays are named once per seal in the FROM item and nowhere per row: a per-row
-- reference would fetch a seal's arrays from TOAST again for every event.
CREATE FUNCTION log_links(after_position bigint, max_links bigint)
RETURNS TABLE ("position" bigint, transaction_id xid8, seq bigint, prev_hash bytea, hash bytea)
LANGUAGE sql STABLE AS $$
    SELECT s.first_position + l.ord - 1, l.transaction_id, l.seq, l.prev_hash, l.hash
      FROM log_seals s,
           unnest(s.transaction_ids, s.seqs, s.hashes, array_prepend(s.prev_hash, s.hashes))
               WITH ORDINALITY AS l(transaction_id, seq, hash, prev_hash, ord)
     WHERE s.first_position >= coalesce((SELECT max(first_position) FROM log_seals
                                          WHERE first_position <= after_position + 1), 1)
       AND s.first_position - after_position <= max_links
       AND l.ord <= s.last_position - s.first_position + 1
       AND s.first_position + l.ord - 1 > after_position
     ORDER BY 1
     LIMIT max_links
$$;
