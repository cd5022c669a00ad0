#!/usr/bin/env bash
# Horizontal scale on one database: the write load of benches/api/load.sh spread
# over 1, then 3, `crier serve` processes in the same run, against pgbench inserting a
# same-sized row with as many clients; plus the database connections each process holds.
#
# Usage: benches/api/scale.sh [seconds per run, default 10] [connections, default 16]
# Needs wrk and pgbench. Every process shares this machine's cores with PostgreSQL, so the
# figure shows what more processes cost or gain here, not what more machines would give.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

SECONDS_PER_RUN="${1:-10}"
TOTAL_CONNECTIONS="${2:-16}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=crier_bench_scale
FIRST_PORT=18190
ADMIN="bench-Admin-Secret-0123456789-QxWzKv"
WORK="$(mktemp -d)"

trap stop_everything EXIT

fresh_release_database

for n in 0 1 2; do start_crier $((FIRST_PORT + n)); done
BASE="http://127.0.0.1:$FIRST_PORT"
SERVICE=$(post /v1/services "$ADMIN" '{"name":"Microsoft Teams"}' | json_field id)
KEY=$(post /v1/api-keys "$ADMIN" '{"name":"bench publisher","role":"publisher"}' | json_field key)
for i in $(seq 1 200); do
    post /v1/incidents "$KEY" "{\"title\":\"Bench incident $i\",\"impact\":\"major\",\"message\":\"Investigating.\",\"affected_services\":[{\"service_id\":\"$SERVICE\",\"status\":\"partial_outage\"}]}" |
        json_field id
done >"$WORK/ids"

# writes_over N: the update load over the first N processes at once, summed.
writes_over() {
    local processes=$1 label
    CONNECTIONS=$((TOTAL_CONNECTIONS / processes))
    for n in $(seq 0 $((processes - 1))); do
        label="w${processes}_$n"
        CRIER_BENCH_IDS="$WORK/ids" CRIER_BENCH_KEY="$KEY" \
            wrk_run "$label" -s benches/api/post_update.lua "http://127.0.0.1:$((FIRST_PORT + n))" \
            >"$WORK/$label.sum" &
    done
    wait
    cat "$WORK"/w"${processes}"_*.sum | awk '{rps += $2; if ($3 > p99) p99 = $3; err += $4} END {printf "%.0f %s %d\n", rps, p99, err}'
}

read -r ONE_RPS ONE_P99 ONE_ERR < <(writes_over 1)
read -r THREE_RPS THREE_P99 THREE_ERR < <(writes_over 3)
CONNS=$(psql "$PGURL/postgres" -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")

psql "$PGURL/$DB" -qc "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, stream text, data jsonb)"
cat >"$WORK/insert.sql" <<'SQL'
INSERT INTO bench_insert (stream, data) VALUES ('incident-' || :client_id, '{"status":"monitoring","message":"Mitigation progressing in Europe, step 1.","author":"bench publisher","update_id":"5c7b6a52-51b8-4a53-9f34-4d59a7b07a60","at":"2026-11-24T10:00:00Z"}');
SQL
pgbench -n -c "$TOTAL_CONNECTIONS" -j 2 -T "$SECONDS_PER_RUN" -f "$WORK/insert.sql" "$PGURL/$DB" >"$WORK/pgbench.txt" 2>&1
PG_TPS=$(awk '/^tps/ {print $3}' "$WORK/pgbench.txt")

echo
echo "$(nproc) cores; ${SECONDS_PER_RUN} s per run; ${TOTAL_CONNECTIONS} connections in all"
printf '%-46s %12s %10s %8s\n' "measurement" "requests/s" "worst p99" "non-2xx"
printf '%-46s %12s %10s %8s\n' "POST updates, 1 process" "$ONE_RPS" "$ONE_P99" "$ONE_ERR"
printf '%-46s %12s %10s %8s\n' "POST updates, 3 processes (summed)" "$THREE_RPS" "$THREE_P99" "$THREE_ERR"
printf '%-46s %12s %10s %8s\n' "pgbench single-row insert (baseline)" "$PG_TPS" "-" "-"
python3 - "$ONE_RPS" "$THREE_RPS" "$PG_TPS" <<'PY'
import sys
one, three, pg = map(float, sys.argv[1:])
print(f"ratios: 1 process/pgbench {one / pg:.3f}; 3 processes/pgbench {three / pg:.3f}; 3/1 {three / one:.2f}")
PY
echo "database connections held by the 3 processes after the load: $CONNS"
