#!/usr/bin/env bash
# Prepares the MariaDB the integration tests use, on a fresh Debian machine, as root.
# Idempotent: installs mariadb-server only when missing, starts the server only when it
# does not answer, and (re)creates the test user with all privileges.
#
# Afterwards: TCP 127.0.0.1:3306, user mp_auth_test / password mp_auth_test
# (tests read MP_AUTH_TEST_MYSQL_URL, default mysql://mp_auth_test:mp_auth_test@127.0.0.1:3306).
set -euo pipefail

TEST_USER=mp_auth_test
TEST_PASSWORD=mp_auth_test

log() { echo "test-env: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs and starts MariaDB)"
    exit 1
fi

have_mariadbd() { command -v mariadbd >/dev/null 2>&1 || test -x /usr/sbin/mariadbd; }

if ! have_mariadbd; then
    log "installing mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q mariadb-server >/dev/null; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -q >/dev/null
        apt-get install -y -q mariadb-server >/dev/null
    fi
fi

MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

install -d -o mysql -g mysql -m 0755 /run/mysqld

answers() { mariadb-admin --protocol=socket -uroot ping >/dev/null 2>&1; }

if ! answers; then
    # A fresh package has an initialised datadir; initialise it if someone removed it.
    if [ ! -d /var/lib/mysql/mysql ]; then
        log "initialising the data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    log "starting mariadbd"
    start-stop-daemon --start --oknodo --background \
        --pidfile /run/mysqld/mysqld.pid \
        --exec "$MARIADBD" -- --user=mysql
    for _ in $(seq 1 300); do
        answers && break
        sleep 0.1
    done
    if ! answers; then
        log "mariadbd did not answer within 30 s; see /var/log/mysql/error.log or journal"
        exit 1
    fi
fi

mariadb --protocol=socket -uroot <<SQL
CREATE USER IF NOT EXISTS '${TEST_USER}'@'127.0.0.1' IDENTIFIED BY '${TEST_PASSWORD}';
CREATE USER IF NOT EXISTS '${TEST_USER}'@'localhost' IDENTIFIED BY '${TEST_PASSWORD}';
ALTER USER '${TEST_USER}'@'127.0.0.1' IDENTIFIED BY '${TEST_PASSWORD}';
ALTER USER '${TEST_USER}'@'localhost' IDENTIFIED BY '${TEST_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '${TEST_USER}'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '${TEST_USER}'@'localhost';
FLUSH PRIVILEGES;
SET GLOBAL max_connections = GREATEST(@@GLOBAL.max_connections, 1000);
SQL

log "MariaDB ready: mysql://${TEST_USER}:${TEST_PASSWORD}@127.0.0.1:3306"
