#!/usr/bin/env bash
# How much of pgbench's single-row insert rate the SQL of a write allows, without crier:
# a model of `POST /v1/incidents/{id}/updates`'s transaction (the shared projections lock,
# the append, the resource's row upserted, the update's row) at the same sizes, run by
# pgbench with as many clients as benches/api/load.sh uses, in two shapes:
#
#   pipelined: BEGIN, four statements and COMMIT sent as one pipeline (as a lone write);
#   one statement: the same writes as one data-modifying statement in autocommit;
#   eight per transaction: eight such writes (to eight streams) in one pipelined transaction,
#   by a client for every eight connections (as crier's group commit sends writes that
#   arrive together); counted in writes, eight a transaction;
#
# against the single-row insert load.sh compares crier with, in turns, two rounds each.
# Usage: benches/api/write_sql_model.sh [seconds per run, default 8] [clients, default 64]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

SECONDS_PER_RUN="${1:-8}"
CLIENTS="${2:-64}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=crier_bench_write_model
WORK="$(mktemp -d)"
trap stop_everything EXIT
PGOPTIONS="-c client_min_messages=warning" psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql "$PGURL/postgres" -qc "CREATE DATABASE $DB"
psql "$PGURL/$DB" -q <<'SQL'
CREATE TABLE model_events (seq bigserial PRIMARY KEY, stream text NOT NULL, version int NOT NULL,
    event_id uuid NOT NULL UNIQUE, data jsonb NOT NULL, UNIQUE (stream, version));
CREATE TABLE model_resources (id text PRIMARY KEY, version int NOT NULL, status text, state json NOT NULL);
CREATE TABLE model_updates (update_id uuid PRIMARY KEY, resource_id text NOT NULL, seq int NOT NULL,
    body text NOT NULL);
CREATE INDEX ON model_updates (resource_id, seq);
CREATE TABLE single_insert (id bigserial PRIMARY KEY, stream text, data jsonb);
SQL
EVENT='{"status":"monitoring","message":"Mitigation progressing in Europe, step 1.","author":"bench publisher","update_id":"5c7b6a52-51b8-4a53-9f34-4d59a7b07a60","at":"2026-11-24T10:00:00Z"}'
STATE='{"title":"Bench incident","impact":"major","status":"monitoring","regions":["europe"],"affected_services":[{"service_id":"5c7b6a52-51b8-4a53-9f34-4d59a7b07a61","status":"partial_outage"}]}'
BODY='{"id":"5c7b6a52-51b8-4a53-9f34-4d59a7b07a60","status":"monitoring","message":"Mitigation progressing in Europe, step 1.","author":"bench publisher","created_at":"2026-11-24T10:00:00Z"}'
cat >"$WORK/pipelined.sql" <<SQL
\set v random(1, 1000000000)
\startpipeline
BEGIN;
SELECT pg_advisory_xact_lock_shared(1);
INSERT INTO model_events (stream, version, event_id, data) VALUES ('incident-' || :client_id, :v, gen_random_uuid(), '$EVENT');
INSERT INTO model_resources (id, version, status, state) VALUES ('incident-' || :client_id, :v, 'monitoring', '$STATE') ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, state = excluded.state;
INSERT INTO model_updates (update_id, resource_id, seq, body) VALUES (gen_random_uuid(), 'incident-' || :client_id, :v, '$BODY');
COMMIT;
\endpipeline
SQL
cat >"$WORK/one_statement.sql" <<SQL
\set v random(1, 1000000000)
WITH lock AS (SELECT pg_advisory_xact_lock_shared(1)),
appended AS (INSERT INTO model_events (stream, version, event_id, data) SELECT 'incident-' || :client_id, :v, gen_random_uuid(), '$EVENT' FROM lock RETURNING seq),
resource AS (INSERT INTO model_resources (id, version, status, state) SELECT 'incident-' || :client_id, :v, 'monitoring', '$STATE' FROM appended ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, state = excluded.state RETURNING 1)
INSERT INTO model_updates (update_id, resource_id, seq, body) SELECT gen_random_uuid(), 'incident-' || :client_id, :v, '$BODY' FROM resource;
SQL
{
    echo '\set v random(1, 1000000000)'
    echo '\startpipeline'
    echo 'BEGIN;'
    echo 'SELECT pg_advisory_xact_lock_shared(1);'
    for n in 1 2 3 4 5 6 7 8; do
        echo "INSERT INTO model_events (stream, version, event_id, data) VALUES ('incident-' || :client_id || '-$n', :v, gen_random_uuid(), '$EVENT');"
        echo "INSERT INTO model_resources (id, version, status, state) VALUES ('incident-' || :client_id || '-$n', :v, 'monitoring', '$STATE') ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, state = excluded.state;"
        echo "INSERT INTO model_updates (update_id, resource_id, seq, body) VALUES (gen_random_uuid(), 'incident-' || :client_id || '-$n', :v, '$BODY');"
    done
    echo 'COMMIT;'
    echo '\endpipeline'
} >"$WORK/eight.sql"
cat >"$WORK/single.sql" <<SQL
INSERT INTO single_insert (stream, data) VALUES ('incident-' || :client_id, '$EVENT');
SQL
run() {
    pgbench -n -M prepared -c "${2:-$CLIENTS}" -j 2 -T "$SECONDS_PER_RUN" -f "$WORK/$1.sql" "$PGURL/$DB" 2>&1 |
        awk '/^tps/ {printf "%.0f", $3}'
}
echo "$(nproc) cores; $SECONDS_PER_RUN s per run; $CLIENTS clients"
for round in 1 2; do
    single=$(run single); pipelined=$(run pipelined); one=$(run one_statement)
    eight=$(run eight $(( (CLIENTS + 7) / 8 )))
    python3 - "$round" "$single" "$pipelined" "$one" "$eight" <<'PY'
import sys
r, single, pipelined, one, eight = sys.argv[1], *map(float, sys.argv[2:])
eight *= 8
print(f"round {r}: single insert {single:.0f}/s; write model pipelined {pipelined:.0f}/s "
      f"({pipelined / single:.2f}), as one statement {one:.0f}/s ({one / single:.2f}), "
      f"eight per transaction {eight:.0f} writes/s ({eight / single:.2f})")
PY
done
