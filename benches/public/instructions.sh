#!/usr/bin/env bash
# The user-space instructions crier spends on one public read, counted by callgrind: a
# figure that does not move with what else the machine is doing, for comparing builds
# taken in turns when the requests/s of benches/public/summary.sh are lost in noise.
#
# Each binary serves the page seed_public_page makes (benches/lib.sh) with one worker under
# `valgrind --tool=callgrind`, instrumented only while wrk (one thread, 8 connections)
# reads gzipped summary.json for SECONDS. Documents are rendered again once a second
# whatever the load (documents.rs), and under valgrind that render weighs as much as
# thousands of requests, so its instructions (`statuspage::render`, inclusive) are taken
# out. Printed per run: requests, instructions per request, and the ratio to the first
# binary's first run.
#
# Callgrind counts a `rep stosb` byte by byte: the two memsets of actix-http's header-index
# arrays count about 6,000 instructions a request and cost the CPU far less.
#
# With CRIER_BENCH_ACCESS_LOG=1, crier runs at its default log level (an access line a
# request) instead of warnings only.
#
# Usage: benches/public/instructions.sh [--rounds N] [--seconds S] [BINARY...]
#   default: target/release/crier, 2 rounds, 10 s. Binaries take turns within each round.
# Needs valgrind and wrk (Debian: apt-get install valgrind wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/lib.sh
source benches/lib.sh

ROUNDS=2
SECONDS_PER_RUN=10
BINARIES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        *) BINARIES+=("$(realpath "$1")"); shift ;;
    esac
done
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("$PWD/target/release/crier")

PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DB=crier_bench_instructions
PORT=18094
ADMIN="bench-Admin-Secret-0123456789-QxWzKv"
WORK="$(mktemp -d)"
BASE="http://127.0.0.1:$PORT"
trap stop_everything EXIT

# The page, made once by the first binary; each run serves it from the same database.
psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
CRIER_BENCH_BINARY="${BINARIES[0]}" start_crier "$PORT"
seed_public_page
kill "${CRIER_PIDS[0]}"
wait "${CRIER_PIDS[0]}" 2>/dev/null || true

inclusive() { # annotation, function: its inclusive instructions
    awk -v f="$2" 'index($0, f) { gsub(",", "", $1); print $1; exit }' "$1"
}

first=""
printf '%-60s %9s %14s %6s\n' "binary" "requests" "instr/request" "ratio"
for round in $(seq 1 "$ROUNDS"); do
    for binary in "${BINARIES[@]}"; do
        out="$WORK/callgrind.out"
        rm -f "$out"*
        env DATABASE_URL="$PGURL/$DB" CRIER_BOOTSTRAP_ADMIN_KEY="$ADMIN" RUST_LOG="$(bench_log_level)" \
            CRIER_WORKERS=1 valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$out" "$binary" serve --listen "127.0.0.1:$PORT" \
            >"$WORK/valgrind.log" 2>&1 &
        pid=$!
        CRIER_PIDS=("$pid")
        for _ in $(seq 1 300); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.5; done
        # Warm: the first requests render the documents and fill the pools.
        wrk -t1 -c8 -d3s -H 'Accept-Encoding: gzip' "$BASE/api/v2/summary.json" >/dev/null
        callgrind_control -i on "$pid" >/dev/null 2>&1
        requests=$(wrk -t1 -c8 -d"${SECONDS_PER_RUN}s" -H 'Accept-Encoding: gzip' \
            "$BASE/api/v2/summary.json" | awk '/requests in/ {print $1}')
        callgrind_control -i off "$pid" >/dev/null 2>&1
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        callgrind_annotate --inclusive=yes "$out" >"$WORK/annotation.txt" 2>/dev/null
        total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$WORK/annotation.txt")
        render=$(inclusive "$WORK/annotation.txt" "api::statuspage::render::{{closure}} [")
        per_request=$(((total - ${render:-0}) / requests))
        [[ -n "$first" ]] || first=$per_request
        printf '%-60s %9s %14s %6s\n' "$binary (round $round)" "$requests" "$per_request" \
            "$(python3 -c "print(f'{$per_request / $first:.3f}')")"
    done
done
psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
