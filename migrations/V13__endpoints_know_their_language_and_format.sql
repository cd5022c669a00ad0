-- The language an endpoint's notices are rendered in (NULL: the default language) and the
-- format of its bodies (a CloudEvent, or a Slack or Teams message), as its registration
-- says: the outbox renders each delivery's body from them. Endpoints met before took
-- CloudEvents in the default language.
ALTER TABLE webhook_endpoints ADD COLUMN language text;
ALTER TABLE webhook_endpoints ADD COLUMN format text NOT NULL DEFAULT 'cloudevents';
