#!/usr/bin/env bash
# Prepares what the MariaDB Galera cluster tests (tests/it/cluster.rs) and
# scripts/bench-galera.sh need, on a fresh Debian machine, as root. Idempotent:
# installs only what is missing, starts nothing.
#
# The tests start their own private 3-node clusters on loopback (free ports below
# the ephemeral range, temp datadirs owned by `mysql`, `mariadbd --no-defaults`
# as the `mysql` user: rsync state transfer fails as root) and kill them by PID.
# What they need from the machine:
#   - mariadbd / mariadb-install-db / mariadb (scripts/test-env.sh installs them)
#   - the Galera 4 provider: /usr/lib/galera/libgalera_smm.so (package galera-4)
#   - rsync (state transfer to a joining node) and ss or lsof (the SST script
#     looks up its rsync daemon with them)
#   - a `mysql` system user (created by the mariadb-server package)
set -euo pipefail

PROVIDER=/usr/lib/galera/libgalera_smm.so

log() { echo "galera-env: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs packages)"
    exit 1
fi

missing=()
[ -e "$PROVIDER" ] || missing+=(galera-4)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
if ! command -v ss >/dev/null 2>&1 && ! command -v lsof >/dev/null 2>&1; then
    missing+=(iproute2)
fi

if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if [ ! -e "$PROVIDER" ]; then
    log "$PROVIDER is missing after installing galera-4"
    exit 1
fi
if ! id mysql >/dev/null 2>&1; then
    log "no 'mysql' user: run scripts/test-env.sh first (installs mariadb-server)"
    exit 1
fi
for tool in mariadbd mariadb-install-db mariadb wsrep_sst_rsync; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        log "$tool not found: run scripts/test-env.sh first (installs mariadb-server)"
        exit 1
    fi
done

log "Galera ready: provider $PROVIDER ($(dpkg-query -W -f='${Version}' galera-4 2>/dev/null || echo unknown))"
