# Shell helpers shared by the HTTP load benchmarks (sourced, not run).
# They expect WORK (a scratch directory), CONNECTIONS and SECONDS_PER_RUN to be set.

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
