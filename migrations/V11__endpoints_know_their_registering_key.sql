-- The key that registered each endpoint, so that the outbox ends an endpoint at the position
-- where that key is revoked: a revoked key's webhooks receive nothing after its revocation,
-- whatever else fails. Endpoints met before this migration take it from their registration.
ALTER TABLE webhook_endpoints ADD COLUMN registered_by text;
UPDATE webhook_endpoints e SET registered_by = w.state->>'created_by'
  FROM rm_webhooks w WHERE w.id = e.webhook_id;
CREATE INDEX webhook_endpoints_registered_by ON webhook_endpoints (registered_by)
  WHERE ended_position IS NULL;
