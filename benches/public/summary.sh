#!/usr/bin/env bash
# Load benchmark of the public reads served from memory, with their baseline measured in the
# same run: GET /api/v2/summary.json (Statuspage API) and the Atom and RSS feeds from a
# release `crier serve` against nginx serving the same bytes from a file, with wrk, in
# paired rounds (CRIER_BENCH_ROUNDS, default 3; see measure_against_nginx in
# benches/lib.sh). summary.json also with gzip accepted, as browsers ask for it (nginx serving
# the same gzipped bytes). Also the conditional GET a polling client makes (If-None-Match
# with the current ETag: 304).
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

# Each read in turn: its rows, its ratio as the median of its paired rounds, and the server's
# CPU per request against nginx's in the same rounds (the rounds' lines, on stderr, give both
# in microseconds). On two cores shared with wrk, requests/s also measures how the scheduler
# split the cores; CPU per request is much less sensitive to that split.
report() { # label, target
    printf '%-48s %12s %10s\n' "GET $1 (crier)" "$C_RPS" "$C_P99"
    printf '%-48s %12s %10s\n' "nginx, same bytes from a file (baseline)" "$N_RPS" "$N_P99"
    printf '%-48s %12s %10s\n' "GET $1 with If-None-Match: 304 (crier)" "$E_RPS" "$E_P99"
    python3 - "$1" "$RATIO" "$2" "${CRIER_BENCH_ROUNDS:-3}" <<'PY'
import sys
path, ratio, target, rounds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
verdict = "met" if ratio >= target else "NOT met"
print(f"ratio {path} crier/nginx {ratio:.2f} (median of {rounds} paired rounds; target >= {target}: {verdict})")
PY
    echo "server CPU per request $1, nginx/crier $CPU_RATIO (median of the rounds; 1 or more: crier spends no more CPU on a request than nginx)"
}
echo "$(nproc) cores; ${SECONDS_PER_RUN} s per run; ${CONNECTIONS} connections"
printf '%-48s %12s %10s\n' "measurement" "requests/s" "p99"
measure_against_nginx /api/v2/summary.json summary.json
echo "summary.json: $(wc -c <"$WORK/summary.json") bytes"
report /api/v2/summary.json 0.9
# What browsers and most HTTP clients send: gzip accepted (nginx: the same gzipped bytes).
measure_against_nginx /api/v2/summary.json summary.json gzip
echo "summary.json gzipped: $(wc -c <"$WORK/www/summary.json.gz") bytes"
report "/api/v2/summary.json gzipped" 0.9
measure_against_nginx /v1/feed.atom feed.atom
echo "feed.atom: $(wc -c <"$WORK/feed.atom") bytes"
report /v1/feed.atom 0.9
measure_against_nginx /v1/feed.rss feed.rss
echo "feed.rss: $(wc -c <"$WORK/feed.rss") bytes"
report /v1/feed.rss 0.9
echo "crier resident memory after the runs: $((RSS / 1024)) MiB"
