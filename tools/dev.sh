#!/usr/bin/env bash
# Starts Gatehouse locally with demo tenants: a Postgres cluster in .local/,
# migrations, tenants acme (shared) and globex (silo), and the server on
# GATEHOUSE_ADDR (default 127.0.0.1:8080). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh

ensure_go
bin=$(pg_bindir)
port=${GATEHOUSE_DEV_PG_PORT:-54329}
root="$PWD/.local"
data="$root/pg"
mkdir -p "$root"

# Postgres refuses to run as root: run the cluster as the postgres user.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(runuser -u postgres --)
  chown postgres: "$root"
  if ! "${as_pg[@]}" test -w "$root"; then
    echo "the postgres user cannot reach $root: move the checkout somewhere it can (e.g. not under /root)" >&2
    exit 1
  fi
fi

if [ ! -f "$data/PG_VERSION" ]; then
  echo "creating a Postgres cluster in $data"
  "${as_pg[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
fi
if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  "${as_pg[@]}" "$bin/pg_ctl" start -w -D "$data" -l "$root/postgres.log" \
    -o "-p $port -k $root -c listen_addresses=127.0.0.1 -c wal_level=logical" >/dev/null
  trap '"${as_pg[@]}" "$bin/pg_ctl" stop -D "$data" -m fast >/dev/null' EXIT
fi
export GATEHOUSE_DATABASE_URL="postgres://postgres@127.0.0.1:$port/gatehouse?sslmode=disable"
"$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
  "select 1 from pg_database where datname = 'gatehouse'" | grep -q 1 ||
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "create database gatehouse"

mkdir -p .cache/bin
go build -o .cache/bin/gatehouse ./cmd/gatehouse
echo "GATEHOUSE_DATABASE_URL=$GATEHOUSE_DATABASE_URL"
.cache/bin/gatehouse dev
