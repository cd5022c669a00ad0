#!/usr/bin/env bash
# The real PostgreSQL stopped under write load and started again, by hand: this
# stops the local cluster for 3 s, so run it on a machine where nothing else needs it.
# (tests/end_to_end/faults.rs does the same in CI with a TCP proxy cut, which other tests survive.)
#
# Usage: benches/api/pg_outage.sh
# Needs wrk and pg_ctlcluster (Debian's postgresql-common), run as a user that may use it.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
CLUSTER="$(ls /etc/postgresql | head -n 1) main"
DB=crier_bench_outage
PORT=18290
ADMIN="bench-Admin-Secret-0123456789-QxWzKv"
WORK="$(mktemp -d)"
BASE="http://127.0.0.1:$PORT"

restart_postgres_and_stop_everything() {
    # shellcheck disable=SC2086
    pg_ctlcluster --skip-systemctl-redirect $CLUSTER start 2>/dev/null || true
    stop_everything
}
trap restart_postgres_and_stop_everything EXIT

fresh_release_database
start_crier "$PORT"
CRIER_PID=${CRIER_PIDS[0]}
SERVICE=$(post /v1/services "$ADMIN" '{"name":"Microsoft Teams"}' | json_field id)
KEY=$(post /v1/api-keys "$ADMIN" '{"name":"bench publisher","role":"publisher"}' | json_field key)
for i in $(seq 1 20); do
    post /v1/incidents "$KEY" "{\"title\":\"Outage $i\",\"impact\":\"major\",\"message\":\"Investigating.\",\"affected_services\":[{\"service_id\":\"$SERVICE\",\"status\":\"partial_outage\"}]}" |
        json_field id
done >"$WORK/ids"

CRIER_BENCH_IDS="$WORK/ids" CRIER_BENCH_KEY="$KEY" \
    wrk -t2 -c8 -d16s -s benches/api/post_update.lua "$BASE" >"$WORK/wrk.txt" &
WRK_PID=$!
sleep 4
# shellcheck disable=SC2086
pg_ctlcluster --skip-systemctl-redirect $CLUSTER stop -m fast
echo "PostgreSQL stopped"
curl -s -o /dev/null -w "during: GET /v1/incidents %{http_code}, " "$BASE/v1/incidents"
curl -s -D - -o /dev/null "$BASE/v1/incidents" | tr -d '\r' | awk -F': ' 'tolower($1) == "retry-after" {printf "Retry-After %s, ", $2}'
curl -s -o /dev/null -w "/healthz %{http_code}\n" "$BASE/healthz"
sleep 3
# shellcheck disable=SC2086
pg_ctlcluster --skip-systemctl-redirect $CLUSTER start
STARTED=$(date +%s.%N)
for _ in $(seq 1 600); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz")" == 200 ]] && break
    sleep 0.05
done
READY=$(date +%s.%N)
wait "$WRK_PID"
echo "PostgreSQL started; crier ready again $(python3 -c "print(f'{$READY - $STARTED:.2f}')") s later, without a restart: $(kill -0 "$CRIER_PID" && echo "process $CRIER_PID still serving")"
grep -E "requests in|Non-2xx|Socket errors" "$WORK/wrk.txt"
echo "updates stored: $(psql "$PGURL/$DB" -Atc "SELECT count(*) FROM events WHERE event_type = 'incident.update_posted'")"
echo "answers by status (crier's /metrics):"
curl -s "$BASE/metrics" | awk '/^crier_http_requests_total/ {match($0, /status="[0-9]+"/); n[substr($0, RSTART + 8, 3)] += $NF} END {for (s in n) print "  " s ": " n[s]}' | sort
