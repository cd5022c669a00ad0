# Shell helpers shared by the HTTP load benchmarks (sourced, not run).
# They expect WORK (a scratch directory), PGURL, DB (the benchmark's database), ADMIN (the
# bootstrap admin secret), and for wrk_run CONNECTIONS and SECONDS_PER_RUN, to be set.

CRIER_PIDS=()

# fresh_release_database: builds the release binary (unless $CRIER_BENCH_BINARY names the
# build to serve) and drops $DB (crier creates it).
fresh_release_database() {
    if [ -z "${CRIER_BENCH_BINARY:-}" ]; then
        cargo build --release --quiet --bin crier
    fi
    psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}

# start_crier PORT [NAME=VALUE...]: a release `crier serve` (or $CRIER_BENCH_BINARY) on
# 127.0.0.1:PORT against $PGURL/$DB (bootstrap key $ADMIN, no write rate limit, plus the
# settings given), logging to $WORK/crier-PORT.log; returns once it is ready. Its pid joins
# CRIER_PIDS. It logs warnings only, as nginx logs no access (start_nginx), unless
# CRIER_BENCH_ACCESS_LOG=1: then both log every request, as each does by default.
start_crier() {
    local port=$1
    shift
    env DATABASE_URL="$PGURL/$DB" CRIER_BOOTSTRAP_ADMIN_KEY="$ADMIN" CRIER_WRITE_RATE_LIMIT=0 \
        RUST_LOG="$(bench_log_level)" "$@" "${CRIER_BENCH_BINARY:-target/release/crier}" serve \
        --listen "127.0.0.1:$port" \
        >"$WORK/crier-$port.log" 2>&1 &
    CRIER_PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return
        sleep 0.2
    done
    echo "crier on port $port did not become ready" >&2
    exit 1
}

# logging_each_request: whether CRIER_BENCH_ACCESS_LOG=1 asks both servers to log every
# request, as each does by default (crier's RUST_LOG, nginx's access_log).
logging_each_request() {
    [[ "${CRIER_BENCH_ACCESS_LOG:-0}" == 1 ]]
}

# bench_log_level: crier's RUST_LOG for a benchmark: its default (`info`, an access line a
# request) when logging_each_request, `warn` otherwise.
bench_log_level() {
    if logging_each_request; then echo info; else echo warn; fi
}

# stop_everything: the cleanup of an EXIT trap: crier processes, nginx, $DB and $WORK.
stop_everything() {
    for pid in "${CRIER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f "$WORK/nginx.pid" ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}

# post PATH KEY BODY: a JSON POST to the crier under test at $BASE.
post() {
    curl -sf -X POST "$BASE$1" -H "Authorization: Bearer $2" -H 'Content-Type: application/json' -d "$3"
}

# json_field NAME: one field of the JSON object on stdin.
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# start_nginx PORT FILE: nginx serving FILE (under its own name, from $WORK/www) on
# 127.0.0.1:PORT, the baseline for reads; its pid file is $WORK/nginx.pid. Once it runs, a
# further call only adds FILE.
start_nginx() {
    mkdir -p "$WORK/www"
    cp "$2" "$WORK/www/"
    [[ -f "$WORK/nginx.pid" ]] && return
    cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
    access_log $(nginx_access_log);
    default_type application/json;
    client_body_temp_path $WORK;
    proxy_temp_path $WORK;
    fastcgi_temp_path $WORK;
    uwsgi_temp_path $WORK;
    scgi_temp_path $WORK;
    gzip_static on;
    server { listen 127.0.0.1:$1; root $WORK/www; }
}
CONF
    nginx -c "$WORK/nginx.conf"
}

# nginx_access_log: off, or when logging_each_request nginx's default: a line a request,
# written to a file as it is served.
nginx_access_log() {
    if logging_each_request; then echo "$WORK/access.log"; else echo off; fi
}

# nginx_pids: the pids of the nginx started by start_nginx, its workers included.
nginx_pids() {
    local master
    master=$(cat "$WORK/nginx.pid" 2>/dev/null) || return 0
    # Unquoted: one word per pid.
    # shellcheck disable=SC2046
    echo "$master" $(pgrep -P "$master")
}

# wrk_run LABEL WRK-ARGS...: prints "LABEL requests/s p99 non-2xx cpu-ticks requests", the
# ticks being what the processes in CPU_PIDS used during the run (0 with none).
wrk_run() {
    local label="$1"
    shift
    local before
    before=$(cpu_ticks "${CPU_PIDS[@]}")
    wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$@" >"$WORK/$label.txt"
    local rps p99 errors requests ticks
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$label.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/$label.txt")
    errors=$(awk '/Non-2xx/ {print $5}' "$WORK/$label.txt")
    requests=$(awk '/requests in/ {print $1}' "$WORK/$label.txt")
    ticks=$(($(cpu_ticks "${CPU_PIDS[@]}") - before))
    echo "$label $rps $p99 ${errors:-0} $ticks ${requests:-0}"
}

# cpu_ticks PID...: the user and system time the processes have used, in clock ticks (0
# with none). CPU_PIDS is an array, empty unless a caller sets it around a wrk_run.
CPU_PIDS=()
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# The page the public benchmarks read: 30 services in 5 groups, 3 unresolved incidents
# with 4 updates each (a restart-your-clients action), 20 resolved ones, an active and an
# upcoming maintenance. Sets KEY (a publisher key) and SERVICES.
seed_public_page() {
    KEY=$(post /v1/api-keys "$ADMIN" '{"name":"bench publisher","role":"publisher"}' | json_field key)
    : >"$WORK/services"
    for group in "Microsoft 365" "Azure" "Dynamics" "Power Platform" "Developer"; do
        for n in 1 2 3 4 5 6; do
            post /v1/services "$ADMIN" "{\"name\":\"$group service $n\",\"group\":\"$group\",\"description\":\"What users of $group use, part $n.\"}" | json_field id >>"$WORK/services"
        done
    done
    mapfile -t SERVICES <"$WORK/services"
    incident() { # index, final status
        local id
        id=$(post /v1/incidents "$KEY" "{\"title\":\"Users cannot reach service $1\",\"impact\":\"major\",\"message\":\"We are investigating reports of failures.\",\"affected_services\":[{\"service_id\":\"${SERVICES[$1]}\",\"status\":\"partial_outage\"},{\"service_id\":\"${SERVICES[$(($1 + 1))]}\",\"status\":\"degraded_performance\"}]}" | json_field id)
        for status in identified monitoring "$2"; do
            post "/v1/incidents/$id/updates" "$KEY" "{\"status\":\"$status\",\"message\":\"A configuration change is being rolled back region by region; we will update within the hour.\",\"client_action\":{\"kind\":\"restart_client\",\"message\":\"If a user is still experiencing impact, they need to restart their clients to recover.\"}}" >/dev/null
        done
    }
    for i in $(seq 0 19); do incident "$i" resolved; done
    for i in 20 23 26; do incident "$i" monitoring; done
    START=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
    END=$(date -u -d '+3 hour' +%Y-%m-%dT%H:%M:%SZ)
    NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    post /v1/maintenances "$KEY" "{\"title\":\"Database upgrade\",\"message\":\"Planned upgrade.\",\"affected_services\":[\"${SERVICES[3]}\"],\"starts_at\":\"$START\",\"ends_at\":\"$END\"}" >/dev/null
    ACTIVE=$(post /v1/maintenances "$KEY" "{\"title\":\"Network maintenance\",\"message\":\"Planned.\",\"affected_services\":[\"${SERVICES[7]}\"],\"starts_at\":\"$NOW\",\"ends_at\":\"$END\"}" | json_field id)
    post "/v1/maintenances/$ACTIVE/updates" "$KEY" '{"status":"in_progress","message":"Started."}' >/dev/null
}

# Measures crier's GET of PATH against nginx serving the same bytes (kept in $WORK/FILE),
# and crier's answer to the If-None-Match a reloading client sends, with wrk. The two sides
# run in $CRIER_BENCH_ROUNDS paired rounds (default 3) that take turns going first, as the
# write rounds of benches/api/load.sh do, so that a machine drifting between runs moves both
# sides of a round's ratio alike. Sets C_RPS C_P99 and N_RPS N_P99, each side's run of median
# requests/s; RATIO, the median of the rounds' ratios; E_RPS E_P99 (the 304s); and RSS
# (crier's, in KiB, after); CPU_RATIO, the median of the rounds' server CPU per request,
# nginx's over crier's (which tells crier's work from how wrk and the server shared the two
# cores, when a ratio of requests/s misses). With a third argument `gzip`, every request (of
# both sides) takes gzip, as a browser's does, and nginx serves the bytes crier gzipped from
# FILE.gz (gzip_static); without it, every request asks for the bytes as they are.
crier_round() {
    CPU_PIDS=("${CRIER_PIDS[0]}")
    wrk_run crier "$@" >>"$WORK/c_rounds.txt"
    CPU_PIDS=()
}
nginx_round() {
    read -ra CPU_PIDS < <(nginx_pids)
    wrk_run nginx "$@" >>"$WORK/n_rounds.txt"
    CPU_PIDS=()
}
measure_against_nginx() {
    local path=$1 file=$2 etag round rounds=${CRIER_BENCH_ROUNDS:-3}
    local accept=(-H "Accept-Encoding: identity")
    curl -sf "$BASE$path" -o "$WORK/$file"
    etag=$(curl -sf -D - -o /dev/null "$BASE$path" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
    start_nginx "$NGINX_PORT" "$WORK/$file"
    if [[ "${3:-}" == gzip ]]; then
        accept=(-H "Accept-Encoding: gzip")
        curl -sf "${accept[@]}" "$BASE$path" -o "$WORK/www/$file.gz"
    fi
    : >"$WORK/c_rounds.txt"
    : >"$WORK/n_rounds.txt"
    for round in $(seq 0 $((rounds - 1))); do
        if [ $((round % 2)) -eq 0 ]; then
            crier_round "${accept[@]}" "$BASE$path"
            nginx_round "${accept[@]}" "http://127.0.0.1:$NGINX_PORT/$file"
        else
            nginx_round "${accept[@]}" "http://127.0.0.1:$NGINX_PORT/$file"
            crier_round "${accept[@]}" "$BASE$path"
        fi
    done
    wrk_run crier_304 "${accept[@]}" -H "If-None-Match: $etag" "$BASE$path" >"$WORK/c304.txt"
    read -r C_RPS C_P99 N_RPS N_P99 RATIO CPU_RATIO < <(python3 - "$WORK/c_rounds.txt" "$WORK/n_rounds.txt" "$path" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
crier = [line.split() for line in open(sys.argv[1])]
nginx = [line.split() for line in open(sys.argv[2])]
tick_us = 1e6 / float(sys.argv[4])
def cpu_us(run):  # server CPU per request, microseconds
    return float(run[4]) * tick_us / max(float(run[5]), 1.0)
ratios = [float(c[1]) / float(n[1]) for c, n in zip(crier, nginx)]
cpu_ratios = [cpu_us(n) / max(cpu_us(c), 1e-9) for c, n in zip(crier, nginx)]
for k, (c, n, r) in enumerate(zip(crier, nginx, ratios)):
    print(f"  {sys.argv[3]} round {k}: crier {float(c[1]):.0f}/s, nginx {float(n[1]):.0f}/s, ratio {r:.2f};"
          f" server CPU per request: crier {cpu_us(c):.1f} us, nginx {cpu_us(n):.1f} us", file=sys.stderr)
def median_run(runs):
    return sorted(runs, key=lambda run: float(run[1]))[(len(runs) - 1) // 2]
c, n = median_run(crier), median_run(nginx)
print(c[1], c[2], n[1], n[2], f"{statistics.median(ratios):.2f}", f"{statistics.median(cpu_ratios):.2f}")
PY
    )
    read -r _ E_RPS E_P99 _ _ _ <"$WORK/c304.txt"
    RSS=$(awk '/VmRSS/ {print $2}' "/proc/${CRIER_PIDS[0]}/status")
}
