#!/usr/bin/env bash
# The scale-out measurement on MariaDB Galera (not part of the tests; results in
# docs/scale-out.md). Starts a private 3-node Galera cluster on loopback, the WeChat
# simulator and three `mp-auth serve` replicas (replica i on node i), then drives the
# same load through 1, 2 and 3 replicas with the load generator (crates/mp-auth-bench,
# several --grpc URLs: its workers go to the replicas in turn). The cluster always
# has three nodes: every write is certified by, and applied on, all of them.
#
# Per row: logins/s, latency, the logins each replica served (from its /metrics, so
# the spread is what the replicas saw, not what the client meant to send), and CPU
# per login of the replicas, the Galera nodes and the whole machine. A reference row
# runs one replica on the single MariaDB server of scripts/test-env.sh (no Galera).
# On a 2-core machine everything shares the same two cores: adding replicas measures
# their overhead, not a speed-up.
#
#   scripts/bench-galera.sh                        # median of 3 runs per row
#   RUNS=1 REQUESTS=4000 scripts/bench-galera.sh   # quick pass
#
# Knobs (environment): RUNS (3), REQUESTS per run (10000), WARMUP (500),
# CONCURRENCY (64), FLOW (legacy|code), REPLICAS ("1 2 3"), REFERENCE (1: the
# single-server row too), BASE_PORT (21000; the run uses BASE_PORT..BASE_PORT+69,
# below the ephemeral range), OUT (target/bench/galera-<timestamp>), KEEP_LOGS=1
# (leave the processes' logs plain; by default they are gzipped on exit).
# Run as root on a fresh machine (installs MariaDB and Galera; the nodes run as `mysql`).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-10000}
WARMUP=${WARMUP:-500}
CONCURRENCY=${CONCURRENCY:-64}
FLOW=${FLOW:-legacy}
REPLICAS=${REPLICAS:-"1 2 3"}
REFERENCE=${REFERENCE:-1}
BASE_PORT=${BASE_PORT:-21000}
OUT=${OUT:-target/bench/galera-$(date +%Y%m%d-%H%M%S)}
APP_ID=wx_bench_app
APP_SECRET=bench-secret-$RANDOM$RANDOM
DB_NAME=mp_auth_bench
DB_USER=mp_auth
DB_PASSWORD=bench-$RANDOM$RANDOM
POPULATION=$(( (REQUESTS + 1) / 2 ))
NODES=3
SIM_PORT=$((BASE_PORT + 40))
GRPC_PORT=$((BASE_PORT + 50))    # replica i: GRPC_PORT + i (3: the reference replica)
METRICS_PORT=$((BASE_PORT + 60)) # replica i: METRICS_PORT + i
PROVIDER=/usr/lib/galera/libgalera_smm.so

log() { echo "bench-galera: $*" >&2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# --- machine -------------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    scripts/test-env.sh
    scripts/galera-env.sh
fi
[ -e "$PROVIDER" ] || { log "no Galera provider: run scripts/galera-env.sh as root"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed to summarise the JSON reports"; exit 1; }

log "building the release binaries"
cargo build --release --quiet -p mp-auth -p mp-auth-bench
BIN=$(pwd)/${CARGO_TARGET_DIR:-target}/release/mp-auth
BENCH=$(pwd)/${CARGO_TARGET_DIR:-target}/release/mp-auth-bench

# --- processes, torn down by PID ----------------------------------------------------
PIDS=()
GALERA_DIR=$(mktemp -d /tmp/mpgalbench.XXXXXX)
cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$GALERA_DIR"
    # As in bench.sh: a JSON line per login adds up; KEEP_LOGS=1 leaves them plain.
    if [ "${KEEP_LOGS:-0}" != 1 ]; then
        for f in "$OUT"/*.log; do
            if [ -f "$f" ]; then gzip -1 -f "$f" || true; fi
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_mysql=()
if [ "$(id -u)" -eq 0 ]; then
    as_mysql=(--user=mysql)
    chmod 755 "$GALERA_DIR"
    chown mysql:mysql "$GALERA_DIR"
fi

node_dir() { echo "$GALERA_DIR/n$1"; }
node_port() { echo $((BASE_PORT + 10 * $1)); }
node_sql() { mariadb --no-defaults --socket="$(node_dir "$1")/sock" -uroot -N -B -e "$2"; }
node_state() { node_sql "$1" "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | cut -f2; }

start_node() {
    local i=$1
    shift
    local dir peers="" p
    dir=$(node_dir "$i")
    p=$(node_port "$i")
    for n in $(seq 0 $((NODES - 1))); do peers+="${peers:+,}127.0.0.1:$(($(node_port "$n") + 1))"; done
    /usr/sbin/mariadbd --no-defaults "${as_mysql[@]}" --datadir="$dir/data" --port="$p" \
        --socket="$dir/sock" --pid-file="$dir/pid" --log-error="$dir/error.log" \
        --bind-address=127.0.0.1 --skip-name-resolve --max-connections=500 \
        --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
        --binlog-format=ROW --innodb-autoinc-lock-mode=2 --default-storage-engine=InnoDB \
        --wsrep-on=ON --wsrep-provider="$PROVIDER" --wsrep-cluster-name="mpgalbench$$" \
        --wsrep-cluster-address="gcomm://$peers" --wsrep-node-name="n$i" --wsrep-node-address=127.0.0.1 \
        --wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:$((p + 1));ist.recv_addr=127.0.0.1:$((p + 2));base_port=$((p + 1));gcache.size=128M" \
        --wsrep-sst-receive-address="127.0.0.1:$((p + 3))" --wsrep-sst-method=rsync \
        "$@" </dev/null >/dev/null 2>&1 &
    PIDS+=($!)
    NODE_PIDS[i]=$!
}

wait_synced() {
    for _ in $(seq 1 1200); do
        [ "$(node_state "$1")" = Synced ] && return 0
        kill -0 "${NODE_PIDS[$1]}" 2>/dev/null || break
        sleep 0.1
    done
    log "node $1 did not reach Synced; its log:"
    tail -30 "$(node_dir "$1")/error.log" >&2
    exit 1
}

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on port $1 after 30 s; see $OUT/*.log.gz"
    exit 1
}

declare -a NODE_PIDS
log "starting a $NODES-node Galera cluster in $GALERA_DIR"
for i in $(seq 0 $((NODES - 1))); do
    mkdir -p "$(node_dir "$i")/data"
    if [ ${#as_mysql[@]} -gt 0 ]; then chown -R mysql:mysql "$(node_dir "$i")"; fi
done
mariadb-install-db --no-defaults --datadir="$(node_dir 0)/data" "${as_mysql[@]}" \
    --auth-root-authentication-method=normal --skip-test-db >/dev/null
start_node 0 --wsrep-new-cluster
wait_synced 0
node_sql 0 "CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
            GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'127.0.0.1';
            CREATE DATABASE $DB_NAME CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
for i in $(seq 1 $((NODES - 1))); do start_node "$i"; done
for i in $(seq 1 $((NODES - 1))); do wait_synced "$i"; done
log "cluster Synced: $(node_sql 0 "SHOW STATUS LIKE 'wsrep_cluster_size'" | cut -f2) nodes"

"$BIN" wechat-sim --listen "127.0.0.1:$SIM_PORT" --app "$APP_ID:$APP_SECRET" \
    --session-refresh-secs 3600 >"$OUT/simulator.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
wait_port "$SIM_PORT"

export MP_AUTH_APPS="[{app_id=\"$APP_ID\",app_secret=\"$APP_SECRET\"}]"
export MP_AUTH_WECHAT__BASE_URL="http://127.0.0.1:$SIM_PORT"
export MP_AUTH_TOKEN__HS256_SECRET="bench-signing-secret-0123456789-abcdefghijklmnop"
export MP_AUTH_SESSION_KEYS__ENCRYPTION_KEY="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

url_of_node() { echo "mysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$(node_port "$1")/$DB_NAME"; }

# Production-like replicas: JSON logs at info, metrics on (they count the logins).
declare -a SERVER_PIDS
start_replica() { # index database-url [serve flags]
    local i=$1 url=$2
    shift 2
    DATABASE_URL=$url MP_AUTH_ADMIN__METRICS_LISTEN="127.0.0.1:$((METRICS_PORT + i))" \
        "$BIN" serve --listen "127.0.0.1:$((GRPC_PORT + i))" "$@" >"$OUT/server$i.log" 2>&1 &
    PIDS+=($!)
    SERVER_PIDS[i]=$!
    wait_port $((GRPC_PORT + i))
}
start_replica 0 "$(url_of_node 0)" --migrate
for i in $(seq 1 $((NODES - 1))); do start_replica "$i" "$(url_of_node "$i")"; done

logins_of() { # replica index -> successful logins so far
    curl -fsS "http://127.0.0.1:$((METRICS_PORT + $1))/metrics" |
        awk '/^mp_auth_logins_total\{/ && /outcome="success"/ { n += $NF } END { printf "%d\n", n }'
}

WATCH=(--pid "simulator=$SIM_PID")
for i in $(seq 0 $((NODES - 1))); do
    WATCH+=(--pid "server$i=${SERVER_PIDS[$i]}" --pid "node$i=${NODE_PIDS[$i]}")
done
COMMON=(--simulator "http://127.0.0.1:$SIM_PORT" --app-id "$APP_ID" --flow "$FLOW"
    --population "$POPULATION" --warmup "$WARMUP" --runs "$RUNS" --concurrency "$CONCURRENCY")

log "seeding $POPULATION returning users"
"$BENCH" "${COMMON[@]}" --grpc "http://127.0.0.1:$GRPC_PORT" --requests 0 >"$OUT/seed.txt"

ROWS=()
for n in $REPLICAS; do
    urls=""
    for i in $(seq 0 $((n - 1))); do urls+="${urls:+,}http://127.0.0.1:$((GRPC_PORT + i))"; done
    before=()
    for i in $(seq 0 $((NODES - 1))); do before+=("$(logins_of "$i")"); done
    log "$n replica(s): $urls"
    "$BENCH" "${COMMON[@]}" "${WATCH[@]}" --grpc "$urls" --no-seed --requests "$REQUESTS" \
        --database-url "$(url_of_node 0)" --label "$n" --json "$OUT/replicas-$n.json" \
        >"$OUT/replicas-$n.txt"
    spread=""
    for i in $(seq 0 $((NODES - 1))); do
        spread+="${spread:+ / }$(( $(logins_of "$i") - before[i] ))"
    done
    echo "$spread" >"$OUT/replicas-$n.spread"
    ROWS+=("replicas-$n")
done

# --- reference: one replica on the single MariaDB server ------------------------------
if [ "$REFERENCE" = 1 ]; then
    MYSQL_SERVER=${MP_AUTH_TEST_MYSQL_URL:-mysql://mp_auth_test:mp_auth_test@127.0.0.1:3306}
    MYSQL_SERVER=${MYSQL_SERVER%/}
    REF_DB=mp_auth_bench_galera_ref_$$
    mariadb --protocol=tcp -h127.0.0.1 -P3306 -ump_auth_test -pmp_auth_test \
        -e "CREATE DATABASE $REF_DB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    trap 'mariadb --protocol=tcp -h127.0.0.1 -P3306 -ump_auth_test -pmp_auth_test -e "DROP DATABASE IF EXISTS $REF_DB" || true; cleanup' EXIT
    start_replica 3 "$MYSQL_SERVER/$REF_DB" --migrate
    SINGLE_PID=$(ss -Hltnp 'sport = :3306' 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
    log "reference: 1 replica on the single MariaDB server"
    "$BENCH" "${COMMON[@]}" --grpc "http://127.0.0.1:$((GRPC_PORT + 3))" --requests 0 >>"$OUT/seed.txt"
    before=$(logins_of 3)
    "$BENCH" "${COMMON[@]}" --pid "simulator=$SIM_PID" --pid "server3=${SERVER_PIDS[3]}" \
        ${SINGLE_PID:+--pid "node0=$SINGLE_PID"} --grpc "http://127.0.0.1:$((GRPC_PORT + 3))" \
        --no-seed --requests "$REQUESTS" --database-url "$MYSQL_SERVER/$REF_DB" \
        --label "1 (single MariaDB, no Galera)" --json "$OUT/reference.json" >"$OUT/reference.txt"
    echo "$(( $(logins_of 3) - before ))" >"$OUT/reference.spread"
    ROWS+=("reference")
fi

# --- the table ------------------------------------------------------------------------
python3 - "$OUT" "${ROWS[@]}" <<'PY' | tee "$OUT/results.md"
import json, sys
out, rows = sys.argv[1], sys.argv[2:]
print("| replicas | logins/s | p50 ms | p99 ms | logins served per replica (0 / 1 / 2) | "
      "CPU µs/login: replicas | database nodes | all watched | other load (cores) | errors | dup |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|")
for row in rows:
    m = json.load(open(f"{out}/{row}.json"))["median"]
    procs = m["processes"]
    cpu = lambda prefix: sum(p["cpu_us_per_login"] for p in procs if p["name"].startswith(prefix))
    errors = " ".join(f"{k}={v}" for k, v in sorted(m["errors"].items())) or "0"
    spread = open(f"{out}/{row}.spread").read().strip()
    print(f"| {m['label']} | {m['logins_per_s']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
          f"{spread} | {cpu('server'):.0f} | {cpu('node'):.0f} | {cpu(''):.0f} | "
          f"{m['other_cores']:.2f} | {errors} | {m.get('duplicate_phones', '-')} |")
PY
log "details: $OUT"
