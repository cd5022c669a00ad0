-- A notice's webhook body is the same for every endpoint that sees it as the same kind of
-- viewer, in the same language and format: with twenty endpoints a notice wrote the same
-- kilobyte or two twenty times, once in each delivery row, and the fan-out sent it to the
-- database as many times. Most of a delivery row was its body, so most of what writing a
-- batch of deliveries and recording each one's end wrote was bodies (`cargo bench --bench
-- webhooks`: the fan-out's insert was about a third of its batch).
--
-- Bodies are now written once per notice and rendering, in webhook_bodies, and each
-- delivery names its body there (body_id). Deliveries written before keep theirs in the row
-- (body set, body_id NULL); exactly one of the two is set. A body is written in the
-- transaction of the deliveries that name it and, like them, never changed or deleted: every
-- retry sends the same bytes. There is no foreign key, for the reason V18 gave for the
-- attempts: only the fan-out writes either, in one statement.
CREATE SEQUENCE webhook_body_ids AS bigint;

CREATE TABLE webhook_bodies (
    id      bigint  PRIMARY KEY DEFAULT nextval('webhook_body_ids'),
    body    text    NOT NULL
);
ALTER SEQUENCE webhook_body_ids OWNED BY webhook_bodies.id;

ALTER TABLE webhook_deliveries
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN body_id bigint,
    ADD CONSTRAINT webhook_deliveries_one_body CHECK ((body IS NULL) <> (body_id IS NULL));
