#!/usr/bin/env bash
# `make check-authors`: what a connector author does, with the real toolchains.
# Slow the first time (it installs cargo-component and wasm-tools from
# crates.io, componentize-py from PyPI and jco from npm); run it after changing
# the contract (wit/), the SDK (guests/sdk), the scaffold or the examples.
#
#   1. guests/acme builds with `cargo component build --release` and runs;
#   2. `nuntiq-host new` makes a crate that builds with cargo-component and runs;
#   3. each output, and dist/acme.wasm (plain cargo build), passes
#      `wasm-tools component targets wit … --world connector`;
#   4. the Python and JavaScript examples in guests/examples build and run, and
#      the Python one built against contract 0.1.0 still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
host="$root/target/release/nuntiq-host"
tools="$root/target/author-tools"
mkdir -p "$tools"

step() { printf '\n== %s\n' "$*"; }

step "toolchains"
command -v cargo-component > /dev/null || cargo install --locked cargo-component --version 0.21.1
command -v wasm-tools > /dev/null || cargo install --locked wasm-tools
rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
cargo component --version
wasm-tools --version

work=$(mktemp -d)
trap 'kill $mock 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/acme-mock serve --suppliers 200 --url-file "$work/url" > "$work/mock.log" 2>&1 &
mock=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url=$(cat "$work/url")
cat > "$work/acme.json" <<JSON
{"customer_number": "10000001", "secrets": {"acme_token": "test-bearer-token-here"},
 "config": {"connector_name": "acme_eu", "api_url": "$url/v2", "page_size": 50}, "job_params": {"lookback_days": 7}}
JSON

# Runs a plugin against the mock and checks the envelope says success.
run_ok() {
  local plugin=$1 settings=$2; shift 2
  local out
  out=$("$host" run-plugin "$plugin" "$settings" --db "$work/$(basename "$plugin").db" --allow-host "$url" "$@" 2> "$work/err.log") || {
    cat "$work/err.log" >&2; echo "$out" >&2; echo "FAILED: $plugin" >&2; exit 1; }
  echo "$out"
  echo "$out" | grep -q '"success":true'
}

targets() {
  wasm-tools component targets wit "$1" --world connector
  echo "targets wit/ world connector: ok ($1)"
}

step "guests/acme with cargo component build --release"
(cd guests/acme && cargo component build --release)
acme="$root/target/wasm32-wasip1/release/acme.wasm"
"$host" inspect "$acme" | grep -E "^(world|compatible)"
targets "$acme"
run_ok "$acme" "$work/acme.json"

step "make build's plain cargo build output"
targets "$root/dist/acme.wasm"

step "a new connector with cargo component build --release"
"$host" new author-check --dir "$work"
(cd "$work/author-check" && CARGO_TARGET_DIR="$root/target/scaffold" cargo component build --release)
scaffold="$root/target/scaffold/wasm32-wasip1/release/author_check.wasm"
targets "$scaffold"
out=$(cd "$work/author-check" && "$host" run-plugin "$scaffold" settings.example.json --fixtures fixtures --db "$work/scaffold.db")
echo "$out"
echo "$out" | grep -q '"success":true'

if [ -x guests/examples/check.sh ]; then
  step "the Python and JavaScript examples"
  guests/examples/check.sh "$host" "$url" "$work" "$tools"
fi

printf '\ncheck-authors: every toolchain builds a connector that runs\n'
