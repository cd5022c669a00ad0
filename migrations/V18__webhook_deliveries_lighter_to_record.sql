-- Recording a webhook attempt cost PostgreSQL more than sending it (cargo bench --bench
-- webhooks, pg_stat_statements: about 0.37 ms of statements a delivery). The changes V16
-- made to email deliveries, for the same reasons, none of a row's meaning:
--
-- * webhook_deliveries keeps room on each page (fillfactor 70), so that the claim, which
--   changes only the lease and the attempt count, is a HOT update: no new entry in any of
--   the table's indexes for each delivery claimed.
-- * The deliveries waiting behind another of their queue (next_attempt_at 'infinity') have
--   an index of their own, so that releasing a queue's next delivery once one finished
--   probes an index that is nearly always empty. The index of due deliveries no longer
--   holds them (they are never due).
-- * webhook_attempts no longer has a foreign key to webhook_deliveries: only the sender's
--   recorder writes attempts, each for a delivery it claimed, and the key's check was a
--   trigger and an index probe per attempt. Deliveries are never deleted.
ALTER TABLE webhook_deliveries SET (fillfactor = 70);
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at < 'infinity';
CREATE INDEX webhook_deliveries_waiting
    ON webhook_deliveries (webhook_id, ordering_key, position)
    WHERE state = 'pending' AND next_attempt_at = 'infinity';
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_webhook_id_position_fkey;
