-- The key that subscribed each address (none when anyone did, without a key), so that the
-- email outbox ends a subscription at the position where that key is revoked: a revoked
-- key's subscriptions receive nothing after its revocation, as its webhooks do (V11).
-- Subscriptions met before this migration take it from their latest request.
ALTER TABLE email_recipients ADD COLUMN registered_by text;
UPDATE email_recipients r SET registered_by = latest.author
  FROM (SELECT DISTINCT ON (stream_id) stream_id, data->>'author' AS author
          FROM events WHERE event_type = 'subscriber.requested'
         ORDER BY stream_id, stream_version DESC) latest
 WHERE latest.stream_id = 'subscriber-' || r.subscriber_id
   AND latest.author IS DISTINCT FROM 'anonymous';
CREATE INDEX email_recipients_registered_by ON email_recipients (registered_by)
    WHERE registered_by IS NOT NULL AND ended_position IS NULL;
