#!/usr/bin/env bash
# Runs every check and test of Gatehouse, installing what is missing first.
# Extra arguments go to `go test` (e.g. -run TestIsolation, -bench .).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh

ensure_go
pg_bindir >/dev/null  # the tests start their own throwaway clusters
# ... and their own Vault servers, from the cached binary.
GATEHOUSE_VAULT_BIN=$(tool vault)
# ... their own mail catchers and SpiceDB servers.
GATEHOUSE_MAILPIT_BIN=$(tool mailpit)
GATEHOUSE_SPICEDB_BIN=$(tool spicedb)
export GATEHOUSE_VAULT_BIN GATEHOUSE_MAILPIT_BIN GATEHOUSE_SPICEDB_BIN
# The OpenID Connect provider's tests with unmodified clients: headless
# Chromium, and Node.js with openid-client.
GATEHOUSE_CHROMIUM_BIN=$(chromium_bin)
GATEHOUSE_NODE_MODULES=$(node_modules)
GATEHOUSE_NODE_BIN=$(node_bin)
export GATEHOUSE_CHROMIUM_BIN GATEHOUSE_NODE_MODULES GATEHOUSE_NODE_BIN

echo "== generated code is current (sqlc diff)"
"$(tool sqlc)" diff

echo "== go.mod and go.sum are tidy"
go mod tidy -diff

echo "== gofmt"
unformatted=$(gofmt -l $(find . -name '*.go' -not -path './.cache/*' -not -path './.local/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test"
go test -race -count=1 "$@" ./...
