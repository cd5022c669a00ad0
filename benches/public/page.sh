#!/usr/bin/env bash
# Load benchmark of the status page, with its baseline measured in the same run: GET / from
# a release `crier serve` against nginx serving the same bytes from a file, with wrk, as they
# are and gzipped (what browsers ask for; nginx serves the same gzipped bytes); the
# conditional GET a reloading browser makes (If-None-Match: 304); and the first rendering
# after a notice (each round publishes an update, then times the next GET /, which renders
# the page again: 30 services with their 90-day uptime folded from the history, 23
# incidents).
#
# The page is the one benches/public/summary.sh reads (benches/lib.sh seed_public_page).
#
# Usage: benches/public/page.sh [seconds per run, default 10] [connections, default 64]
#        [rounds of first renderings, default 30]
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

SECONDS_PER_RUN="${1:-10}"
CONNECTIONS="${2:-64}"
ROUNDS="${3:-30}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=crier_bench_page
PORT=18094
NGINX_PORT=18095
ADMIN="bench-Admin-Secret-0123456789-QxWzKv"
WORK="$(mktemp -d)"
BASE="http://127.0.0.1:$PORT"

trap stop_everything EXIT

fresh_release_database
start_crier "$PORT" CRIER_PUBLIC_URL="https://status.contoso.example" \
    CRIER_SMTP_URL="smtp://127.0.0.1:9" CRIER_PAGE_NAME="Contoso service status"
seed_public_page
sleep 1.5

# First renderings after a notice: the update is acknowledged, then the page is asked for.
OPEN=$(curl -sf "$BASE/v1/incidents?state=open&limit=1" | python3 -c "import json,sys; print(json.load(sys.stdin)['items'][0]['id'])")
: >"$WORK/first.txt"
for round in $(seq 1 "$ROUNDS"); do
    post "/v1/incidents/$OPEN/updates" "$KEY" "{\"status\":\"monitoring\",\"message\":\"Round $round: still rolling back.\"}" >/dev/null
    curl -s -o "$WORK/after.html" -w '%{time_total}\n' "$BASE/" >>"$WORK/first.txt"
    grep -q "Round $round: still rolling back." "$WORK/after.html" || { echo "round $round: the page did not show the notice" >&2; exit 1; }
done
: >"$WORK/warm.txt"
for _ in $(seq 1 "$ROUNDS"); do
    curl -s -o /dev/null -w '%{time_total}\n' "$BASE/" >>"$WORK/warm.txt"
done

measure_against_nginx / index.html
read -r PLAIN_C_RPS PLAIN_C_P99 PLAIN_N_RPS PLAIN_N_P99 PLAIN_RATIO PLAIN_E_RPS PLAIN_E_P99 \
    <<<"$C_RPS $C_P99 $N_RPS $N_P99 $RATIO $E_RPS $E_P99"
# What a browser sends: gzip accepted (nginx: the same gzipped bytes, gzip_static).
measure_against_nginx / index.html gzip
CSS=$(curl -sf "$BASE/assets/page.css" | wc -c)
JS=$(curl -sf "$BASE/assets/live.js" | wc -c)

echo
echo "$(nproc) cores; ${SECONDS_PER_RUN} s per run; ${CONNECTIONS} connections; GET / $(wc -c <"$WORK/index.html") bytes (+ page.css $CSS, live.js $JS)"
printf '%-48s %12s %10s\n' "measurement" "requests/s" "p99"
printf '%-48s %12s %10s\n' "GET / (crier)" "$PLAIN_C_RPS" "$PLAIN_C_P99"
printf '%-48s %12s %10s\n' "nginx, same bytes from a file (baseline)" "$PLAIN_N_RPS" "$PLAIN_N_P99"
printf '%-48s %12s %10s\n' "GET / with If-None-Match: 304 (crier)" "$PLAIN_E_RPS" "$PLAIN_E_P99"
printf '%-48s %12s %10s\n' "GET / gzipped (crier)" "$C_RPS" "$C_P99"
printf '%-48s %12s %10s\n' "nginx, the same gzipped bytes (baseline)" "$N_RPS" "$N_P99"
echo "GET / gzipped: $(wc -c <"$WORK/www/index.html.gz") bytes"
python3 - "$PLAIN_RATIO" "$RATIO" "$WORK/first.txt" "$WORK/warm.txt" <<'PY'
import statistics, sys
ratio, gzipped = float(sys.argv[1]), float(sys.argv[2])
in_order = [float(x) * 1000 for x in open(sys.argv[3])]
first = sorted(in_order)
warm = sorted(float(x) * 1000 for x in open(sys.argv[4]))
print(f"ratio crier/nginx {ratio:.2f} (median of the paired rounds; target >= 0.6: {'met' if ratio >= 0.6 else 'NOT met'})")
print(f"ratio gzipped crier/nginx {gzipped:.2f} (median of the paired rounds; target >= 0.6: {'met' if gzipped >= 0.6 else 'NOT met'})")
print(f"first GET / after a notice ({len(first)} rounds): median {statistics.median(first):.1f} ms, "
      f"max {first[-1]:.1f} ms (target < 50: {'met' if first[-1] < 50 else 'NOT met'}); "
      f"a GET from memory: median {statistics.median(warm):.1f} ms")
print("first GET / after each notice, in order (ms): " + ", ".join(f"{ms:.0f}" for ms in in_order))
PY
echo "crier resident memory after the runs: $((RSS / 1024)) MiB"
