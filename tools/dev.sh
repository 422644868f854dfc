#!/usr/bin/env bash
# Starts Gatehouse locally with demo tenants: a Postgres cluster, a Vault
# server, SpiceDB and a mail catcher (Mailpit) in .local/, migrations, tenants acme
# (shared) and globex (silo), and the server on GATEHOUSE_ADDR (default
# 127.0.0.1:8080). Ctrl-C stops everything; data stays in .local/ for the
# next start. GATEHOUSE_DEV_ROOT puts a stack of its own elsewhere (the
# benchmarks' 10,000 tenants stay out of the demo's), with the ports of
# its own set by the GATEHOUSE_DEV_*_PORT variables below.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh

ensure_go
bin=$(pg_bindir)
vault_bin=$(tool vault)
mailpit_bin=$(tool mailpit)
spicedb_bin=$(tool spicedb)
port=${GATEHOUSE_DEV_PG_PORT:-54329}
root=$(realpath -m "${GATEHOUSE_DEV_ROOT:-.local}")
data="$root/pg"
mkdir -p "$root"
on_exit=()
trap 'for c in "${on_exit[@]}"; do eval "$c" || true; done' EXIT

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
    -o "-p $port -k $root -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_worker_processes=16 -c max_logical_replication_workers=8 -c wal_retrieve_retry_interval=1s" >/dev/null
  on_exit+=('"${as_pg[@]}" "$bin/pg_ctl" stop -D "$data" -m fast >/dev/null')
fi
export GATEHOUSE_DATABASE_URL="postgres://postgres@127.0.0.1:$port/gatehouse?sslmode=disable"
"$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
  "select 1 from pg_database where datname = 'gatehouse'" | grep -q 1 ||
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "create database gatehouse"

# Vault with file storage, so tenants' keys survive a restart like the
# database does. Initialised once; the unseal key and root token of this
# local Vault stay in .local/vault/init.json (readable by you only).
vdir="$root/vault"
vport=${GATEHOUSE_DEV_VAULT_PORT:-8209}
mkdir -p "$vdir"
cat >"$vdir/vault.hcl" <<EOF
storage "file" { path = "$vdir/data" }
listener "tcp" {
  address         = "127.0.0.1:$vport"
  cluster_address = "127.0.0.1:$((vport + 1))"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:$vport"
disable_mlock = true
log_level     = "warn"
EOF
export VAULT_ADDR="http://127.0.0.1:$vport"
"$vault_bin" server -config "$vdir/vault.hcl" >>"$vdir/vault.log" 2>&1 &
vault_pid=$!
on_exit+=("kill $vault_pid; wait $vault_pid 2>/dev/null")
for _ in $(seq 600); do
  rc=0; "$vault_bin" status >/dev/null 2>&1 || rc=$?
  [ "$rc" -ne 1 ] && break  # 0 unsealed, 2 sealed: it answers
  kill -0 "$vault_pid" 2>/dev/null || { echo "vault exited; see $vdir/vault.log" >&2; exit 1; }
  sleep 0.1
done
if [ ! -s "$vdir/init.json" ]; then
  (umask 077; "$vault_bin" operator init -key-shares=1 -key-threshold=1 -format=json >"$vdir/init.json")
fi
json=$(tr -d ' \n' <"$vdir/init.json")
unseal_key=$(sed -n 's/.*"unseal_keys_b64":\["\([^"]*\)".*/\1/p' <<<"$json")
export GATEHOUSE_VAULT_ADDR="$VAULT_ADDR"
# The token goes to a file of its own, so that operator commands in
# another shell can use it (GATEHOUSE_VAULT_TOKEN_FILE).
(umask 077; sed -n 's/.*"root_token":"\([^"]*\)".*/\1/p' <<<"$json" >"$vdir/token")
export GATEHOUSE_VAULT_TOKEN_FILE="$vdir/token"
"$vault_bin" operator unseal "$unseal_key" >/dev/null

# SpiceDB on a Postgres datastore in the same cluster (database spicedb),
# so relationships survive a restart. Its preshared key stays in .local/.
# Its pools take 12 of the cluster's 100 connections at most, leaving
# room for two servers at --db-max-conns 30 and operator commands (see
# the README's connection budget).
"$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
  "select 1 from pg_database where datname = 'spicedb'" | grep -q 1 ||
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "create database spicedb"
spicedb_uri="postgres://postgres@127.0.0.1:$port/spicedb?sslmode=disable"
[ -s "$root/spicedb.key" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root/spicedb.key")
"$spicedb_bin" datastore migrate head --datastore-engine postgres --datastore-conn-uri "$spicedb_uri" \
  --log-level warn >>"$root/spicedb.log" 2>&1
spicedb_port=${GATEHOUSE_DEV_SPICEDB_PORT:-50051}
"$spicedb_bin" serve --grpc-addr "127.0.0.1:$spicedb_port" --grpc-preshared-key "$(cat "$root/spicedb.key")" \
  --datastore-engine postgres --datastore-conn-uri "$spicedb_uri" --http-enabled=false --metrics-enabled=false \
  --datastore-conn-pool-read-max-open 8 --datastore-conn-pool-read-min-open 2 \
  --datastore-conn-pool-write-max-open 4 --datastore-conn-pool-write-min-open 1 \
  --telemetry-endpoint= --skip-release-check --log-level warn >>"$root/spicedb.log" 2>&1 &
spicedb_pid=$!
on_exit+=("kill $spicedb_pid; wait $spicedb_pid 2>/dev/null")
export GATEHOUSE_SPICEDB_ADDR="127.0.0.1:$spicedb_port" GATEHOUSE_SPICEDB_PLAINTEXT=true \
  GATEHOUSE_SPICEDB_KEY_FILE="$root/spicedb.key"

# Mail goes to a local catcher: read it at http://127.0.0.1:8025.
smtp_port=${GATEHOUSE_DEV_SMTP_PORT:-1025}
mail_ui=${GATEHOUSE_DEV_MAIL_UI:-127.0.0.1:8025}
"$mailpit_bin" --smtp "127.0.0.1:$smtp_port" --listen "$mail_ui" --database "$root/mailpit.db" \
  --disable-version-check --smtp-disable-rdns --quiet >>"$root/mailpit.log" 2>&1 &
mailpit_pid=$!
on_exit+=("kill $mailpit_pid; wait $mailpit_pid 2>/dev/null")
export GATEHOUSE_SMTP_URL="smtp://127.0.0.1:$smtp_port?tls=none"
# Each server takes at most 30 connections of the cluster.
export GATEHOUSE_DB_MAX_CONNS=${GATEHOUSE_DB_MAX_CONNS:-30}
# Prometheus metrics, on loopback only.
export GATEHOUSE_METRICS_ADDR=${GATEHOUSE_METRICS_ADDR:-127.0.0.1:9464}

mkdir -p .cache/bin
go build -o .cache/bin/gatehouse ./cmd/gatehouse
echo "GATEHOUSE_DATABASE_URL=$GATEHOUSE_DATABASE_URL"
echo "GATEHOUSE_VAULT_ADDR=$GATEHOUSE_VAULT_ADDR"
echo "GATEHOUSE_VAULT_TOKEN_FILE=$GATEHOUSE_VAULT_TOKEN_FILE"
echo "mail: http://$mail_ui"
.cache/bin/gatehouse dev
