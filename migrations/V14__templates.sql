-- Templates of the notices a team sends again and again: a read model like the others,
-- rebuilt by a replay from the `template-<uuid>` streams.
CREATE TABLE rm_templates (
    id         uuid        PRIMARY KEY,
    version    bigint      NOT NULL,
    tenant     text,
    deleted    boolean     NOT NULL,
    name       text        NOT NULL,
    state      jsonb       NOT NULL
);
CREATE INDEX rm_templates_by_name ON rm_templates (name, id) WHERE NOT deleted;
