#!/usr/bin/env bash
# Load benchmark of the publishing API, with its baselines measured in the same run:
#
#   writes: POST /v1/incidents/{id}/updates (random incident of 200) against pgbench inserting
#           a row of the same size in autocommit, with as many clients;
#   reads:  GET /v1/incidents/{id} against nginx serving the same bytes from a file.
#
# Usage: benches/api/load.sh [seconds per run, default 10] [connections, default 16]
#        (CRIER_BENCH_ROUNDS: write rounds, default 3)
# Needs wrk, nginx and pgbench (Debian: apt-get install wrk nginx-light postgresql-client).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

SECONDS_PER_RUN="${1:-10}"
CONNECTIONS="${2:-16}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=crier_bench_api
PORT=18090
NGINX_PORT=18091
ADMIN="bench-Admin-Secret-0123456789-QxWzKv"
WORK="$(mktemp -d)"
BASE="http://127.0.0.1:$PORT"

trap stop_everything EXIT

fresh_release_database
start_crier "$PORT"


SERVICE=$(post /v1/services "$ADMIN" '{"name":"Microsoft Teams"}' | json_field id)
KEY=$(post /v1/api-keys "$ADMIN" '{"name":"bench publisher","role":"publisher"}' | json_field key)
for i in $(seq 1 200); do
    post /v1/incidents "$KEY" "{\"title\":\"Bench incident $i\",\"impact\":\"major\",\"message\":\"Investigating.\",\"affected_services\":[{\"service_id\":\"$SERVICE\",\"status\":\"partial_outage\"}],\"regions\":[\"europe\"]}" |
        json_field id
done >"$WORK/ids"
# The incident the read runs fetch: a typical timeline of five updates, not one of those the
# write run grows.
READ_ID=$(post /v1/incidents "$KEY" "{\"title\":\"Users cannot sign in to Teams\",\"impact\":\"major\",\"message\":\"We are investigating reports of sign-in failures.\",\"affected_services\":[{\"service_id\":\"$SERVICE\",\"status\":\"major_outage\"}],\"regions\":[\"europe\"]}" | json_field id)
for status in identified monitoring monitoring resolved; do
    post "/v1/incidents/$READ_ID/updates" "$KEY" "{\"status\":\"$status\",\"message\":\"A certificate rotation broke token refresh; the change is being rolled back region by region.\",\"client_action\":{\"kind\":\"restart_client\",\"message\":\"If a user is still experiencing impact, they need to restart their clients to recover.\"}}" >/dev/null
done


# Writes, in rounds that take turns going first (crier first in even rounds, pgbench in odd
# ones), each pairing a crier run with a pgbench run seconds apart: the ratio reported is
# the median of the rounds' ratios, as in the event-store bench, so that a machine that
# drifts between rounds moves both sides of each ratio alike.
ROUNDS="${CRIER_BENCH_ROUNDS:-3}"
psql "$PGURL/$DB" -qc "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, stream text, data jsonb)"
cat >"$WORK/insert.sql" <<'SQL'
INSERT INTO bench_insert (stream, data) VALUES ('incident-' || :client_id, '{"status":"monitoring","message":"Mitigation progressing in Europe, step 1.","author":"bench publisher","update_id":"5c7b6a52-51b8-4a53-9f34-4d59a7b07a60","at":"2026-11-24T10:00:00Z"}');
SQL
crier_writes() {
    CRIER_BENCH_IDS="$WORK/ids" CRIER_BENCH_KEY="$KEY" \
        wrk_run crier_updates -s benches/api/post_update.lua "$BASE" >>"$WORK/w_rounds.txt"
}
pgbench_writes() {
    pgbench -n -c "$CONNECTIONS" -j 2 -T "$SECONDS_PER_RUN" -f "$WORK/insert.sql" "$PGURL/$DB" \
        >"$WORK/pgbench.txt" 2>&1
    awk '/^tps/ {print $3}' "$WORK/pgbench.txt" >>"$WORK/pg_rounds.txt"
}
: >"$WORK/w_rounds.txt"
: >"$WORK/pg_rounds.txt"
for round in $(seq 0 $((ROUNDS - 1))); do
    if [ $((round % 2)) -eq 0 ]; then crier_writes; pgbench_writes; else pgbench_writes; crier_writes; fi
done
read -r W_RPS W_P99 W_ERR PG_TPS W_RATIO < <(python3 - "$WORK/w_rounds.txt" "$WORK/pg_rounds.txt" <<'PY'
import statistics, sys
crier = [line.split() for line in open(sys.argv[1])]
pg = [float(line) for line in open(sys.argv[2])]
ratios = [float(c[1]) / p for c, p in zip(crier, pg)]
for n, (c, p, r) in enumerate(zip(crier, pg, ratios)):
    print(f"  round {n}: crier {float(c[1]):.0f}/s (p99 {c[2]}), pgbench {p:.0f}/s, ratio {r:.2f}", file=sys.stderr)
def millis(text):
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float("nan")
p99 = statistics.median(millis(c[2]) for c in crier)
errors = sum(int(c[3]) for c in crier)
print(f"{statistics.median(float(c[1]) for c in crier):.2f} {p99:.2f}ms {errors} "
      f"{statistics.median(pg):.2f} {statistics.median(ratios):.2f}")
PY
)
PG_P99="n/a"

# Reads: the same incident's bytes from crier and from nginx.
curl -sf "$BASE/v1/incidents/$READ_ID" -o "$WORK/incident.json"
start_nginx "$NGINX_PORT" "$WORK/incident.json"
wrk_run crier_reads "$BASE/v1/incidents/$READ_ID" >"$WORK/r.txt"
wrk_run nginx_reads "http://127.0.0.1:$NGINX_PORT/incident.json" >"$WORK/n.txt"

read -r _ R_RPS R_P99 R_ERR _ <"$WORK/r.txt"
read -r _ N_RPS N_P99 N_ERR _ <"$WORK/n.txt"
UPDATES=$(psql "$PGURL/$DB" -Atc "SELECT count(*) FROM events WHERE event_type = 'incident.update_posted'")

echo
echo "$(nproc) cores; ${SECONDS_PER_RUN} s per run; ${ROUNDS} write rounds; ${CONNECTIONS} connections; incident body $(wc -c <"$WORK/incident.json") bytes"
printf '%-42s %12s %10s %8s\n' "measurement" "requests/s" "p99" "non-2xx"
printf '%-42s %12s %10s %8s\n' "POST /v1/incidents/{id}/updates (crier)" "$W_RPS" "$W_P99" "$W_ERR"
printf '%-42s %12s %10s %8s\n' "pgbench single-row insert (baseline)" "$PG_TPS" "$PG_P99" "-"
printf '%-42s %12s %10s %8s\n' "GET /v1/incidents/{id} (crier)" "$R_RPS" "$R_P99" "$R_ERR"
printf '%-42s %12s %10s %8s\n' "nginx, same bytes from a file (baseline)" "$N_RPS" "$N_P99" "$N_ERR"
python3 - "$W_RATIO" "$R_RPS" "$N_RPS" <<'PY'
import sys
w, r, n = map(float, sys.argv[1:])
print(f"ratios: updates/pgbench inserts {w:.2f} (median of the rounds' ratios); reads/nginx {r / n:.2f}")
PY
echo "update events stored: $UPDATES"
