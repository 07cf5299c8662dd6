#!/usr/bin/env bash
# Part of `make check-authors`: HOST WASM VERSION. Fails unless the component
# imports the contract's interfaces at VERSION and at no other version.
set -euo pipefail
host=$1 wasm=$2 version=$3
names=$("$host" inspect "$wasm" | grep -oE "nuntiq:connector/[a-z-]+@[0-9]+\.[0-9]+\.[0-9]+" | sort -u)
echo "$names" | grep -q "@$version\$" || { echo "FAILED: $wasm imports no nuntiq:connector interface @$version" >&2; exit 1; }
other=$(echo "$names" | grep -v "@$version\$" || true)
[ -z "$other" ] || { echo "FAILED: $wasm names contract versions other than $version: $other" >&2; exit 1; }
