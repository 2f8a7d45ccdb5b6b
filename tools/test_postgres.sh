#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the AutoDistiller storage tests.
#   source tools/test_postgres.sh && start_test_postgres && trap stop_test_postgres EXIT
# Installs Debian's postgresql package when no server binaries are found, initialises a data directory in
# a temp folder (as the unprivileged user 'nobody' when run as root: PostgreSQL refuses to run as root),
# listens on 127.0.0.1 at a free port with trust authentication, and exports SHRINK_TEST_POSTGRES_URL.

_pg_bin() {
    local dir
    for dir in "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")" /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    done
    return 1
}

_pg_as() {  # run a command as the server's user
    if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

start_test_postgres() {
    local bin port user
    if ! bin=$(_pg_bin); then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(_pg_bin) || { echo "PostgreSQL binaries not found after install" >&2; return 1; }
    fi
    SHRINK_TEST_PGDATA=$(mktemp -d /tmp/shrink-pg.XXXXXX)
    user=$( [ "$(id -u)" = 0 ] && echo nobody || id -un )
    [ "$(id -u)" = 0 ] && chown nobody "$SHRINK_TEST_PGDATA"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    _pg_as "$bin/initdb" -D "$SHRINK_TEST_PGDATA/data" -U "$user" -A trust >/dev/null
    _pg_as "$bin/pg_ctl" -D "$SHRINK_TEST_PGDATA/data" -l "$SHRINK_TEST_PGDATA/log" -w \
        -o "-h 127.0.0.1 -p $port -k $SHRINK_TEST_PGDATA" start >/dev/null
    SHRINK_TEST_PG_BIN=$bin
    export SHRINK_TEST_PGDATA SHRINK_TEST_PG_BIN
    export SHRINK_TEST_POSTGRES_URL="postgresql://$user@127.0.0.1:$port/postgres"
}

stop_test_postgres() {
    if [ -n "${SHRINK_TEST_PGDATA:-}" ]; then
        _pg_as "$SHRINK_TEST_PG_BIN/pg_ctl" -D "$SHRINK_TEST_PGDATA/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$SHRINK_TEST_PGDATA"
    fi
}
