#!/usr/bin/env bash
# The load benchmark in one command (not part of the tests). Builds the release binaries
# (mp-auth and the load generator, crates/mp-auth-bench),
# makes sure MariaDB runs, creates a fresh bench database, starts the WeChat simulator,
# the gRPC server (and the HTTP gateway when the binary has it), seeds the returning
# users, runs the matrix and the database limit run beside it, and prints the tables
# (each row the median of $RUNS runs). Exits non-zero if any run leaves duplicate users.
#
#   scripts/bench.sh                 # full matrix, median of 3
#   RUNS=1 REQUESTS=5000 scripts/bench.sh   # quick pass
#
# Knobs (environment): RUNS (3), REQUESTS per run (20000), WARMUP (1000),
# CONCURRENCIES ("16 64 256"), FLOWS ("legacy code"), TARGETS ("grpc http"),
# VERIFY_CONCURRENCIES ("16 64 256"), VERIFY_REQUESTS (100000) and VERIFY_TOKENS (distinct users, 1000)
# for the VerifyToken rows (more than 16384 tokens defeat its cache of verified signatures),
# REFRESH_CONCURRENCIES ("64"; the session-refresh rows, "" to skip them),
# HANG_UP_EVERY (2: the disconnect rows, c=64, where every 2nd client hangs up
# HANG_UP_AFTER_MS (5) after sending its login; "" to skip them), SLOW_WECHAT (1: the
# "WeChat +20 ms" rows; 0 to skip them),
# POOL_SIZE (server and limit-run pool; default: the server's default),
# OUT (results directory, target/bench/<timestamp>), KEEP_DB=1 (keep the database),
# SIM_PORT / GRPC_PORT / GATEWAY_PORT / METRICS_PORT (19400 / 15051 / 18080 / 19090-19091),
# MP_AUTH_TEST_MYSQL_URL (mysql://mp_auth_test:mp_auth_test@127.0.0.1:3306),
# SKIP_BUILD=1 (use the release binaries as they are), KEEP_LOGS=1 (leave the processes'
# logs plain; by default they are gzipped on exit),
# SERVER_THREADS / GATEWAY_THREADS (the processes' tokio worker threads; default: one per core),
# GATEWAY_BIN (another build's mp-auth binary to run the gateway from; default: this build's).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-20000}
WARMUP=${WARMUP:-1000}
CONCURRENCIES=${CONCURRENCIES-"16 64 256"}
VERIFY_CONCURRENCIES=${VERIFY_CONCURRENCIES-"16 64 256"}
VERIFY_REQUESTS=${VERIFY_REQUESTS:-100000}
VERIFY_TOKENS=${VERIFY_TOKENS:-1000}
REFRESH_CONCURRENCIES=${REFRESH_CONCURRENCIES-64}
HANG_UP_EVERY=${HANG_UP_EVERY-2}
HANG_UP_AFTER_MS=${HANG_UP_AFTER_MS:-5}
SLOW_WECHAT=${SLOW_WECHAT:-1}
FLOWS=${FLOWS:-"legacy code"}
TARGETS=${TARGETS-"grpc http"}
SIM_PORT=${SIM_PORT:-19400}
GRPC_PORT=${GRPC_PORT:-15051}
GATEWAY_PORT=${GATEWAY_PORT:-18080}
METRICS_PORT=${METRICS_PORT:-19090}
MYSQL_SERVER=${MP_AUTH_TEST_MYSQL_URL:-mysql://mp_auth_test:mp_auth_test@127.0.0.1:3306}
MYSQL_SERVER=${MYSQL_SERVER%/}
OUT=${OUT:-target/bench/$(date +%Y%m%d-%H%M%S)}
APP_ID=wx_bench_app
APP_SECRET=bench-secret-$RANDOM$RANDOM
POPULATION=$(( (REQUESTS + 1) / 2 ))

log() { echo "bench: $*" >&2; }
mkdir -p "$OUT"

# --- build -------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building the release binaries"
    cargo build --release --quiet -p mp-auth -p mp-auth-bench
fi
BIN=${CARGO_TARGET_DIR:-target}/release/mp-auth
# Another build's gateway against this build's server (to compare gateway builds alone).
GATEWAY_BIN=${GATEWAY_BIN:-$BIN}
BENCH=${CARGO_TARGET_DIR:-target}/release/mp-auth-bench

# --- database ----------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    scripts/test-env.sh
fi
# mysql://user:password@host:port
creds=${MYSQL_SERVER#mysql://}
DB_USER=${creds%%:*}
rest=${creds#*:}
DB_PASSWORD=${rest%%@*}
hostport=${rest#*@}
DB_HOST=${hostport%%:*}
DB_PORT=${hostport#*:}
sql() { mariadb -h"$DB_HOST" -P"$DB_PORT" -u"$DB_USER" -p"$DB_PASSWORD" -N -e "$1"; }
DB_NAME=mp_auth_bench_$(date +%s)_$$
sql "CREATE DATABASE \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
DATABASE_URL=$MYSQL_SERVER/$DB_NAME
# The server listening on the database's port (other mariadbd processes, e.g. a test's
# private servers, may run beside it); pidof when ss cannot tell.
MARIADB_PID=$(ss -Hltnp "sport = :$DB_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
if [ -z "$MARIADB_PID" ]; then
    MARIADB_PID=$(pidof mariadbd || pidof mysqld || true)
    MARIADB_PID=${MARIADB_PID%% *}
fi

# --- processes ---------------------------------------------------------------------
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_DB:-0}" != 1 ]; then
        sql "DROP DATABASE IF EXISTS \`$DB_NAME\`" 2>/dev/null || true
    fi
    # A full matrix logs ~550 MB (a JSON line per login and per gateway request).
    if [ "${KEEP_LOGS:-0}" != 1 ]; then
        for f in "$OUT"/server.log "$OUT"/gateway.log "$OUT"/simulator.log; do
            if [ -f "$f" ]; then gzip -1 -f "$f" || true; fi
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on port $1 after 30 s; see $OUT/*.log.gz"
    exit 1
}

"$BIN" wechat-sim --listen "127.0.0.1:$SIM_PORT" --app "$APP_ID:$APP_SECRET" \
    --session-refresh-secs 3600 >"$OUT/simulator.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
wait_port "$SIM_PORT"

export DATABASE_URL
export MP_AUTH_APPS="[{app_id=\"$APP_ID\",app_secret=\"$APP_SECRET\"}]"
export MP_AUTH_WECHAT__BASE_URL="http://127.0.0.1:$SIM_PORT"
# Production-like tokens: ES256 with a key made for this run.
"$BIN" keys generate --out "$OUT/signing-key" >/dev/null
export MP_AUTH_TOKEN__SIGNING_KEY_FILE="$OUT/signing-key.pem"
# The VerifyToken rows' caller: an API key with tokens:verify (the server keeps its SHA-256).
BENCH_API_KEY="mpk_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
export BENCH_API_KEY
BENCH_KEY_SHA256=$(printf %s "$BENCH_API_KEY" | sha256sum | cut -d' ' -f1)
export MP_AUTH_CALLERS="[{name=\"bench\",key_sha256=\"$BENCH_KEY_SHA256\",permissions=[\"tokens:verify\"]}]"
export MP_AUTH_SESSION_KEYS__ENCRYPTION_KEY="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
if [ -n "${POOL_SIZE:-}" ]; then export MP_AUTH_DATABASE__POOL_SIZE=$POOL_SIZE; fi

# Production-like: JSON logs at info (one line per login) and Prometheus metrics on.
# The per-session refresh limit is off: the refresh rows rotate each of their few
# hundred sessions many times a minute (a real client refreshes every ~2 hours).
MP_AUTH_SESSIONS__REFRESHES_PER_MINUTE=0 \
MP_AUTH_ADMIN__METRICS_LISTEN="127.0.0.1:$METRICS_PORT" \
    env ${SERVER_THREADS:+TOKIO_WORKER_THREADS=$SERVER_THREADS} "$BIN" serve --listen "127.0.0.1:$GRPC_PORT" --migrate >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_port "$GRPC_PORT"

WATCH=(--pid "server=$SERVER_PID" --pid "simulator=$SIM_PID")
if [ -n "$MARIADB_PID" ]; then WATCH+=(--pid "mariadb=$MARIADB_PID"); fi

GATEWAY_PID=
if "$GATEWAY_BIN" --help | grep -qE '^\s+gateway\b'; then
    MP_AUTH_GATEWAY__LISTEN="127.0.0.1:$GATEWAY_PORT" \
    MP_AUTH_GATEWAY__BACKEND_URL="http://127.0.0.1:$GRPC_PORT" \
    MP_AUTH_GATEWAY__RATE_LIMIT_PER_SEC=0 \
    MP_AUTH_ADMIN__METRICS_LISTEN="127.0.0.1:$((METRICS_PORT + 1))" \
        env ${GATEWAY_THREADS:+TOKIO_WORKER_THREADS=$GATEWAY_THREADS} "$GATEWAY_BIN" gateway >"$OUT/gateway.log" 2>&1 &
    GATEWAY_PID=$!
    PIDS+=("$GATEWAY_PID")
    wait_port "$GATEWAY_PORT"
    WATCH+=(--pid "gateway=$GATEWAY_PID")
else
    log "this binary has no gateway subcommand: measuring gRPC only"
    TARGETS=${TARGETS//http/}
fi

COMMON=(--simulator "http://127.0.0.1:$SIM_PORT" --grpc "http://127.0.0.1:$GRPC_PORT"
    --gateway "http://127.0.0.1:$GATEWAY_PORT" --app-id "$APP_ID" --database-url "$DATABASE_URL"
    --population "$POPULATION" --warmup "$WARMUP" --runs "$RUNS")
RUN=(--requests "$REQUESTS" --no-seed)
TABLE=$OUT/results.md
LIMIT_TABLE=$OUT/limit.md
VERIFY_TABLE=$OUT/verify.md

log "seeding $POPULATION returning users"
"$BENCH" "${COMMON[@]}" --requests 0 --concurrency 64 >"$OUT/seed.txt"

# Every row starts from the same database: what the previous row added (its new users,
# their identities, every session) is deleted, so later rows do not pay for a database
# that has outgrown MariaDB's buffer pool (a full matrix adds ~1.5 million rows).
# TRIM_DB=0 keeps everything.
trim_db() {
    [ "${TRIM_DB:-1}" = 1 ] || return 0
    sql "USE \`$DB_NAME\`;
         DELETE FROM sessions;
         DELETE i FROM wechat_identities i JOIN users u ON i.user_id = u.id
             WHERE u.phone LIKE '+8615%';
         DELETE FROM users WHERE phone LIKE '+8615%'"
}

# --- the matrix --------------------------------------------------------------------
for target in $TARGETS; do
    for flow in $FLOWS; do
        for c in $CONCURRENCIES; do
            name=$target-$flow-c$c
            log "$name"
            "$BENCH" "${COMMON[@]}" "${RUN[@]}" "${WATCH[@]}" --target "$target" --flow "$flow" \
                --concurrency "$c" --json "$OUT/$name.json" --table "$TABLE" >"$OUT/$name.txt"
            trim_db
        done
    done
done

# --- session refresh: one conditional UPDATE per rotation ---------------------------
for target in $TARGETS; do
    for c in $REFRESH_CONCURRENCIES; do
        name=$target-refresh-c$c
        log "$name"
        "$BENCH" "${COMMON[@]}" "${RUN[@]}" "${WATCH[@]}" --target "$target" --flow refresh \
            --concurrency "$c" --json "$OUT/$name.json" --table "$TABLE" >"$OUT/$name.txt"
        trim_db
    done
done

# --- clients that hang up mid-request: every login must still be recorded ------------
# The check (in mp-auth-bench): once the server is quiet, the successful logins it
# counted (mp_auth_logins_total) all have their session row; the row's errors cell
# says how many clients hung up and how many logins finished after their caller left.
for every in $HANG_UP_EVERY; do
    for target in $TARGETS; do
        name=$target-legacy-c64-hangup
        log "$name"
        "$BENCH" "${COMMON[@]}" "${RUN[@]}" "${WATCH[@]}" --target "$target" --flow legacy \
            --concurrency 64 --hang-up-every "$every" --hang-up-after-ms "$HANG_UP_AFTER_MS" \
            --metrics "http://127.0.0.1:$METRICS_PORT/metrics" \
            --json "$OUT/$name.json" --table "$TABLE" >"$OUT/$name.txt"
        trim_db
    done
done

# --- WeChat 20 ms slower, c=256 ----------------------------------------------------
fault() { curl -fsS -X "$1" "http://127.0.0.1:$SIM_PORT/_sim/faults" "${@:2}" >/dev/null; }
[ "$SLOW_WECHAT" = 1 ] || TARGETS_SLOW=""
for target in ${TARGETS_SLOW-$TARGETS}; do
    name=$target-legacy-c256-wechat20ms
    log "$name"
    fault POST -H 'content-type: application/json' \
        -d '{"endpoint":"*","latency_ms":20,"count":null}'
    "$BENCH" "${COMMON[@]}" "${RUN[@]}" "${WATCH[@]}" --target "$target" --flow legacy \
        --concurrency 256 --label "${target/http/gateway} legacy c=256 WeChat +20 ms" \
        --json "$OUT/$name.json" --table "$TABLE" >"$OUT/$name.txt"
    trim_db
    fault DELETE
done

# --- the limit run: the login transaction alone -------------------------------------
LIMIT_WATCH=()
if [ -n "$MARIADB_PID" ]; then LIMIT_WATCH+=(--pid "mariadb=$MARIADB_PID"); fi
"$BENCH" "${COMMON[@]}" --limit-run --requests 0 --concurrency 64 >>"$OUT/seed.txt"
for c in $CONCURRENCIES; do
    name=limit-c$c
    log "$name"
    "$BENCH" "${COMMON[@]}" "${RUN[@]}" "${LIMIT_WATCH[@]}" --limit-run \
        --concurrency "$c" --json "$OUT/$name.json" --table "$LIMIT_TABLE" >"$OUT/$name.txt"
    trim_db
done

# --- VerifyToken: online verification with revocation checking ---
for c in $VERIFY_CONCURRENCIES; do
    name=verify-c$c
    log "$name"
    "$BENCH" "${COMMON[@]}" "${WATCH[@]}" --verify-run --tokens "$VERIFY_TOKENS" --requests "$VERIFY_REQUESTS" \
        --no-seed --concurrency "$c" --json "$OUT/$name.json" --table "$VERIFY_TABLE" \
        >"$OUT/$name.txt"
done

show() { if [ -f "$2" ]; then echo; echo "## $1"; echo; cat "$2"; fi; }

# Each service row beside the limit run at the same concurrency, as a percentage.
RATIO_TABLE=$OUT/ratio.md
if [ -f "$TABLE" ] && [ -f "$LIMIT_TABLE" ]; then
    awk -F'|' '
        FNR == 1 { file++ }
        $2 ~ /c=[0-9]+/ && $2 !~ /hangs up/ {
            match($2, /c=[0-9]+/); c = substr($2, RSTART, RLENGTH)
            if (file == 1) { limit[c] = $3 + 0 } else { rows[++n] = $2; tput[n] = $3 + 0; conc[n] = c }
        }
        END {
            print "| case | logins/s | limit run tx/s (same c) | % of limit run |"
            print "|---|---:|---:|---:|"
            for (i = 1; i <= n; i++) if (limit[conc[i]] > 0)
                printf "|%s| %d | %d | %.0f %% |\n", rows[i], tput[i], limit[conc[i]], 100 * tput[i] / limit[conc[i]]
        }' "$LIMIT_TABLE" "$TABLE" >"$RATIO_TABLE"
fi
show "Service (median of $RUNS runs, $REQUESTS requests each, half returning users)" "$TABLE"
show "Limit run: Store::record_login alone (median of $RUNS runs)" "$LIMIT_TABLE"
show "Against the limit run" "$RATIO_TABLE"
show "VerifyToken (median of $RUNS runs, $VERIFY_REQUESTS verifications each; the logins/s column is verifications/s)" "$VERIFY_TABLE"
echo
echo "Details: $OUT"
