-- An incident's or a maintenance's timeline is kept in its `rm_updates` rows, one per
-- update, rather than inside the resource's state: a new update then writes one small row
-- and a state of constant size, instead of rewriting a state that grows with every update
-- (docs/PERFORMANCE.md, "Publishing API"). The resource row's `state` holds the resource
-- with an empty `updates` array; readers put the timeline back from the update rows
-- (`body`, in `seq` order), which are written in the same transaction as the state and
-- only while the resource row holds the version they come from (V2).

ALTER TABLE rm_updates
    ADD COLUMN seq  integer,  -- the update's place in its timeline, from 0
    ADD COLUMN body json;     -- the update as the state's timeline held it

UPDATE rm_updates u
   SET seq = t.ord - 1, body = t.body
  FROM rm_incidents r, json_array_elements(r.state -> 'updates') WITH ORDINALITY AS t(body, ord)
 WHERE u.resource_kind = 'incident' AND u.resource_id = r.id
   AND u.update_id = (t.body ->> 'id')::uuid;

UPDATE rm_updates u
   SET seq = t.ord - 1, body = t.body
  FROM rm_maintenances r, json_array_elements(r.state -> 'updates') WITH ORDINALITY AS t(body, ord)
 WHERE u.resource_kind = 'maintenance' AND u.resource_id = r.id
   AND u.update_id = (t.body ->> 'id')::uuid;

-- A row whose update no state lists could only come from damaged read models; it is
-- derived data, and a replay (`crier replay`) rebuilds every row from the log.
DELETE FROM rm_updates WHERE seq IS NULL;

ALTER TABLE rm_updates
    ALTER COLUMN seq SET NOT NULL,
    ALTER COLUMN body SET NOT NULL;

UPDATE rm_incidents SET state = (state::jsonb || '{"updates": []}')::json;
UPDATE rm_maintenances SET state = (state::jsonb || '{"updates": []}')::json;
