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
# and crier's answer to the If-None-Match a reloading client sends, with wrk. Sets C_RPS
# C_P99 (crier), N_RPS N_P99 (nginx), E_RPS E_P99 (304s) and RSS (crier's, in KiB, after).
measure_against_nginx() {
    local path=$1 file=$2 etag
    curl -sf "$BASE$path" -o "$WORK/$file"
    etag=$(curl -sf -D - -o /dev/null "$BASE$path" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
    start_nginx "$NGINX_PORT" "$WORK/$file"
    wrk_run crier "$BASE$path" >"$WORK/c.txt"
    wrk_run nginx "http://127.0.0.1:$NGINX_PORT/$file" >"$WORK/n.txt"
    wrk_run crier_304 -H "If-None-Match: $etag" "$BASE$path" >"$WORK/c304.txt"
    read -r _ C_RPS C_P99 _ <"$WORK/c.txt"
    read -r _ N_RPS N_P99 _ <"$WORK/n.txt"
    read -r _ E_RPS E_P99 _ <"$WORK/c304.txt"
    RSS=$(awk '/VmRSS/ {print $2}' "/proc/${CRIER_PIDS[0]}/status")
}
