#!/usr/bin/env bash
# Start (or find running) a throw-away PostgreSQL server on 127.0.0.1 for the multi-worker sweep test.
# Idempotent: a second call finds the running server and only prints its URL.
# The last line of the output is the SQLAlchemy/Optuna URL, e.g.
#   postgresql+psycopg://postgres@127.0.0.1:5433/mltrade_test
# Settings (environment): MLTRADE_PG_DIR (data dir, default /tmp/mltrade-pg), MLTRADE_PG_PORT (5433),
# MLTRADE_PG_DB (mltrade_test). Stop it with: pg_ctl -D "$MLTRADE_PG_DIR/data" stop
set -euo pipefail

PGDIR="${MLTRADE_PG_DIR:-/tmp/mltrade-pg}"
PORT="${MLTRADE_PG_PORT:-5433}"
DB="${MLTRADE_PG_DB:-mltrade_test}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  echo "start_postgres: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2
  exit 1
fi

# run the server as the unprivileged postgres user when we are root (initdb refuses root)
if [ "$(id -u)" -eq 0 ]; then
  PGUSER_OS=postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  PGUSER_OS="$(id -un)"
  as_pg() { "$@"; }
fi

mkdir -p "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown "$PGUSER_OS" "$PGDIR"
DATA="$PGDIR/data"
if [ ! -s "$DATA/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-instructions >"$PGDIR/initdb.log" 2>&1 \
    || { cat "$PGDIR/initdb.log" >&2; exit 1; }
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$PGDIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c max_connections=100" start >/dev/null \
    || { tail -n 20 "$PGDIR/server.log" >&2; exit 1; }
fi

PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAq)
for _ in $(seq 1 30); do
  as_pg "${PSQL[@]}" -c "select 1" >/dev/null 2>&1 && break
  sleep 1
done
if [ "$(as_pg "${PSQL[@]}" -c "select 1 from pg_database where datname = '$DB'")" != "1" ]; then
  as_pg "${PSQL[@]}" -c "create database $DB" >/dev/null
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/$DB"
