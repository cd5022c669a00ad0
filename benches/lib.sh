# Shell helpers shared by the HTTP load benchmarks (sourced, not run).
# They expect WORK (a scratch directory), PGURL, DB (the benchmark's database), ADMIN (the
# bootstrap admin secret), and for wrk_run CONNECTIONS and SECONDS_PER_RUN, to be set.

CRIER_PIDS=()

# fresh_release_database: builds the release binary and drops $DB (crier creates it).
fresh_release_database() {
    cargo build --release --quiet --bin crier
    psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}

# start_crier PORT [NAME=VALUE...]: a release `crier serve` on 127.0.0.1:PORT against
# $PGURL/$DB (bootstrap key $ADMIN, no write rate limit, plus the settings given), logging
# to $WORK/crier-PORT.log; returns once it is ready. Its pid joins CRIER_PIDS.
start_crier() {
    local port=$1
    shift
    env DATABASE_URL="$PGURL/$DB" CRIER_BOOTSTRAP_ADMIN_KEY="$ADMIN" CRIER_WRITE_RATE_LIMIT=0 \
        RUST_LOG=warn "$@" target/release/crier serve --listen "127.0.0.1:$port" \
        >"$WORK/crier-$port.log" 2>&1 &
    CRIER_PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return
        sleep 0.2
    done
    echo "crier on port $port did not become ready" >&2
    exit 1
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
# 127.0.0.1:PORT, the baseline for reads; its pid file is $WORK/nginx.pid.
start_nginx() {
    mkdir -p "$WORK/www"
    cp "$2" "$WORK/www/"
    cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    client_body_temp_path $WORK;
    proxy_temp_path $WORK;
    fastcgi_temp_path $WORK;
    uwsgi_temp_path $WORK;
    scgi_temp_path $WORK;
    server { listen 127.0.0.1:$1; root $WORK/www; }
}
CONF
    nginx -c "$WORK/nginx.conf"
}

# wrk_run LABEL WRK-ARGS...: prints "LABEL requests/s p99 non-2xx".
wrk_run() {
    local label="$1"
    shift
    wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$@" >"$WORK/$label.txt"
    local rps p99 errors
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$label.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/$label.txt")
    errors=$(awk '/Non-2xx/ {print $5}' "$WORK/$label.txt")
    echo "$label $rps $p99 ${errors:-0}"
}
