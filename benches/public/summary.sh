#!/usr/bin/env bash
# Load benchmark of the Statuspage API, with its baseline measured in
# the same run: GET /api/v2/summary.json from a release `crier serve` against nginx serving
# the same bytes from a file, with wrk. Also the conditional GET a polling widget makes
# (If-None-Match with the current ETag: 304).
#
# The page: 30 services in 5 groups, 3 unresolved incidents with 4 updates each, 20
# resolved ones, an active and an upcoming maintenance.
#
# Usage: benches/public/summary.sh [seconds per run, default 10] [connections, default 64]
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

SECONDS_PER_RUN="${1:-10}"
CONNECTIONS="${2:-64}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=crier_bench_public
PORT=18092
NGINX_PORT=18093
ADMIN="bench-Admin-Secret-0123456789-QxWzKv"
WORK="$(mktemp -d)"
BASE="http://127.0.0.1:$PORT"

trap stop_everything EXIT

fresh_release_database
start_crier "$PORT" CRIER_PUBLIC_URL="https://status.contoso.example"


seed_public_page
sleep 1.5

measure_against_nginx /api/v2/summary.json summary.json

echo
echo "$(nproc) cores; ${SECONDS_PER_RUN} s per run; ${CONNECTIONS} connections; summary.json $(wc -c <"$WORK/summary.json") bytes"
printf '%-48s %12s %10s\n' "measurement" "requests/s" "p99"
printf '%-48s %12s %10s\n' "GET /api/v2/summary.json (crier)" "$C_RPS" "$C_P99"
printf '%-48s %12s %10s\n' "nginx, same bytes from a file (baseline)" "$N_RPS" "$N_P99"
printf '%-48s %12s %10s\n' "GET with If-None-Match: 304 (crier)" "$E_RPS" "$E_P99"
python3 - "$C_RPS" "$N_RPS" <<'PY'
import sys
c, n = map(float, sys.argv[1:])
print(f"ratio crier/nginx {c / n:.2f} (target >= 0.6: {'met' if c / n >= 0.6 else 'NOT met'})")
PY
echo "crier resident memory after the runs: $((RSS / 1024)) MiB"
