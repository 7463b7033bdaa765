# PostgreSQL for the catalog, indexing and search tests: a throwaway cluster on a
# local port, from Debian's packages. Source it from .ci/run before pytest:
#
#     source .ci/postgres.sh      # installs, starts, exports CLIPDEX_TEST_PG_URL
#     .venv/bin/python -m pytest -q
#     clipdex_pg_stop            # also runs on exit (trap)
#
# Needs root (apt-get, and initdb runs as the postgres user). With CI=true the
# PostgreSQL tests fail instead of skipping when the server is not reachable.

clipdex_pg_start() {
    export DEBIAN_FRONTEND=noninteractive
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
    fi
    CLIPDEX_PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [ -z "${CLIPDEX_PG_PORT:-}" ]; then  # the first free port from 54329 on
        CLIPDEX_PG_PORT=54329
        while (exec 3<>"/dev/tcp/127.0.0.1/$CLIPDEX_PG_PORT") 2>/dev/null; do
            CLIPDEX_PG_PORT=$((CLIPDEX_PG_PORT + 1))
        done
    fi
    CLIPDEX_PG_DIR=$(mktemp -d /tmp/clipdex-pg.XXXXXX)
    export CLIPDEX_PG_BIN CLIPDEX_PG_DIR CLIPDEX_PG_PORT
    chown postgres: "$CLIPDEX_PG_DIR"
    runuser -u postgres -- "$CLIPDEX_PG_BIN/initdb" -D "$CLIPDEX_PG_DIR/data" -U postgres -A trust \
        --encoding UTF8 --no-sync >/dev/null
    # fsync off: a test server, thrown away at the end. The socket lives in the temp dir.
    runuser -u postgres -- "$CLIPDEX_PG_BIN/pg_ctl" -D "$CLIPDEX_PG_DIR/data" -l "$CLIPDEX_PG_DIR/server.log" -w \
        -o "-p $CLIPDEX_PG_PORT -k $CLIPDEX_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null
    "$CLIPDEX_PG_BIN/psql" -q -h 127.0.0.1 -p "$CLIPDEX_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE clipdex LOGIN CREATEDB PASSWORD 'clipdex'" \
        -c "CREATE DATABASE clipdex_test OWNER clipdex"
    export CLIPDEX_TEST_PG_URL="postgresql+psycopg://clipdex:clipdex@127.0.0.1:$CLIPDEX_PG_PORT/clipdex_test"
}

clipdex_pg_stop() {
    if [ -n "${CLIPDEX_PG_DIR:-}" ] && [ -d "$CLIPDEX_PG_DIR" ]; then
        if [ -f "$CLIPDEX_PG_DIR/data/postmaster.pid" ]; then
            runuser -u postgres -- "$CLIPDEX_PG_BIN/pg_ctl" -D "$CLIPDEX_PG_DIR/data" -m fast -w stop >/dev/null || true
        fi
        rm -rf "$CLIPDEX_PG_DIR"
    fi
    unset CLIPDEX_PG_DIR
}

trap clipdex_pg_stop EXIT  # set first: a failed start is cleaned up too
clipdex_pg_start
