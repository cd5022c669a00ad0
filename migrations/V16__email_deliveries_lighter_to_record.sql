-- Recording an email attempt was most of what a fan-out cost PostgreSQL (cargo bench --bench
-- email: about 124 µs of statements an email, at 100,000 subscribers). Three changes, none of
-- a row's meaning:
--
-- * email_deliveries keeps room on each page (fillfactor 70), so that the claim, which
--   changes only the lease and the attempt count, is a HOT update: no new entry in any of
--   the table's three indexes for each email claimed.
-- * The deliveries waiting behind another of their queue (next_attempt_at 'infinity') have
--   an index of their own, so that releasing a queue's next delivery once one finished
--   probes an index that is nearly always empty, not the queue index, whose entries for
--   the fan-out's finished deliveries stay until vacuum. The index of due deliveries no
--   longer holds them (they are never due), so that it can never stand in for that one.
-- * email_attempts no longer has a foreign key to email_deliveries: only the sender's
--   recorder writes attempts, each for a delivery it claimed, and the key's check was a
--   trigger and an index probe per attempt. Deliveries are never deleted.
ALTER TABLE email_deliveries SET (fillfactor = 70);
DROP INDEX email_deliveries_due;
CREATE INDEX email_deliveries_due ON email_deliveries (next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at < 'infinity';
CREATE INDEX email_deliveries_waiting
    ON email_deliveries (ordering_key, subscriber_id, position)
    WHERE state = 'pending' AND next_attempt_at = 'infinity';
ALTER TABLE email_attempts DROP CONSTRAINT email_attempts_subscriber_id_position_fkey;
