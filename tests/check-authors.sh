#!/usr/bin/env bash
# `make check-authors`: what a connector author does, with the real toolchains,
# from a directory outside the checkout with only the host binary on PATH.
# Slow the first time (it installs cargo-component and wasm-tools from
# crates.io, componentize-py and pytest from PyPI, jco from npm); run it after
# changing the contract (wit/), the SDK (guests/sdk), the templates
# (host/templates) or the examples.
#
#   1. `nuntiq-host new x --lang L --cursor C` for every language and cursor:
#      its own tests pass (cargo test / pytest / npm test), it builds (cargo
#      wasm / build.py / npm run build), `inspect` shows its metadata, and it
#      runs against its fixtures; it names contract wit/connector.wit's version
#      and no other (its files and its component's imports); the Rust ones pass `wasm-tools component
#      targets`, and one also builds with `cargo component build`;
#   2. `nuntiq-host wit --out wit` feeds componentize-py and jco: the Python
#      and JavaScript examples build against it and run against the mock API
#      (and against contract 0.1.0, as connectors written before 0.2.0 were);
#   3. guests/acme builds with `cargo component build` and runs;
#   4. a run with three retries is recorded and replays in under a second,
#      without network flags.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/target/author-tools"
mkdir -p "$tools"
step() { printf '\n== %s\n' "$*"; }
# The contract this checkout defines: every new connector and example names it and no other.
contract=$(sed -n 's/^package nuntiq:connector@\(.*\);$/\1/p' wit/connector.wit)
[ -n "$contract" ] || { echo "FAILED: wit/connector.wit names no package nuntiq:connector@VERSION" >&2; exit 1; }

step "toolchains"
command -v cargo-component > /dev/null || cargo install --locked cargo-component --version 0.21.1
command -v wasm-tools > /dev/null || cargo install --locked wasm-tools
for t in wasm32-wasip1 wasm32-wasip2; do
  rustup target list --installed | grep -qx $t || rustup target add $t
done
[ -x "$tools/python-venv/bin/pytest" ] || {
  python3 -m venv "$tools/python-venv"
  "$tools/python-venv/bin/pip" install --quiet componentize-py==0.25.1 pytest==8.3.4
}
cargo component --version
wasm-tools --version
node --version

# Outside the checkout, with the host binary alone on PATH (plus the language toolchains).
tmp=$(mktemp -d)
trap 'kill $mock 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/work"
cp target/release/nuntiq-host "$tmp/bin/"
export PATH="$tmp/bin:$tools/python-venv/bin:$PATH"
export CARGO_TARGET_DIR="$tmp/target"
command -v nuntiq-host | grep -qx "$tmp/bin/nuntiq-host"
nuntiq-host --version
cd "$tmp/work"

# Runs a plugin and checks the envelope says success; prints it.
run_ok() {
  local out
  out=$(nuntiq-host run-plugin "$@" 2> "$tmp/err.log") || { cat "$tmp/err.log" >&2; echo "$out" >&2; echo "FAILED: $*" >&2; exit 1; }
  echo "$out"
  echo "$out" | grep -q '"success":true'
}

step "nuntiq-host new, every language and cursor"
for lang in rust python js; do
  for cursor in timestamp numeric-id opaque; do
    name="c-$lang-$cursor"
    echo "-- $name"
    nuntiq-host new "$name" --lang "$lang" --cursor "$cursor" > /dev/null
    ! grep -rq "$root" "$name" || { echo "FAILED: $name names the checkout $root" >&2; exit 1; }
    case $lang in
      rust)
        (cd "$name" && cargo test --quiet 2>&1 | grep -E "^test result" && cargo wasm --quiet)
        wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/${name//-/_}.wasm"
        wasm-tools component targets "$name/sdk/wit" "$wasm" --world connector
        ;;
      python)
        (cd "$name" && python -m pytest -q 2>&1 | tail -1 && python build.py)
        wasm="$name/connector.wasm"
        wasm-tools component targets "$name/wit" "$wasm" --world connector
        ;;
      js)
        # StarlingMonkey writes wasi:http 0.2.10, which the host links by the semver rule but
        # `component targets` (exact versions) does not match: inspect is the check here.
        (cd "$name" && npm install --no-audit --no-fund --loglevel=error && npm test 2>&1 | grep -E "^# (pass|fail)" \
          && npm run build --silent)
        wasm="$name/connector.wasm"
        ;;
    esac
    nuntiq-host inspect "$wasm" | grep -E "^(name|version|world|compatible)"
    nuntiq-host inspect "$wasm" | grep -q "^name        $name"
    nuntiq-host inspect "$wasm" | grep -q "^compatible  yes"
    "$root/guests/examples/one-contract.sh" nuntiq-host "$wasm" "$contract"
    other=$(grep -rIhoE "nuntiq:connector(/[a-z-]+)?@[0-9]+\.[0-9]+\.[0-9]+" "$name" --exclude-dir=node_modules \
      | grep -v "@$contract\$" || true)
    [ -z "$other" ] || { echo "FAILED: $name names a contract other than $contract: $other" >&2; exit 1; }
    out=$(run_ok "$wasm" "$name/settings.example.json" --fixtures "$name/fixtures" --db "$tmp/$name.db" \
      --param since_override=2024-01-01T00:00:00Z)
    echo "$out" | grep -q '"inserted":3' && echo "$out" | grep -q '"rejected":1' \
      || { echo "FAILED: $name did not store 3 suppliers and set 1 row aside: $out" >&2; exit 1; }
    nuntiq-host runs --db "$tmp/$name.db" | grep -q "plugin $name 0.1.0"
  done
done

step "a new Rust connector with cargo component build --release"
(cd c-rust-timestamp && cargo component build --release --quiet)
wasm="$CARGO_TARGET_DIR/wasm32-wasip1/release/c_rust_timestamp.wasm"
wasm-tools component targets c-rust-timestamp/sdk/wit "$wasm" --world connector
run_ok "$wasm" c-rust-timestamp/settings.example.json --fixtures c-rust-timestamp/fixtures --db "$tmp/cc.db"

step "the mock Acme API"
"$root/target/release/acme-mock" serve --suppliers 200 --url-file "$tmp/url" > "$tmp/mock.log" 2>&1 &
mock=$!
for _ in $(seq 100); do [ -s "$tmp/url" ] && break; sleep 0.05; done
url=$(cat "$tmp/url")
cat > acme.json <<JSON
{"customer_number": "10000001", "secrets": {"acme_token": "test-bearer-token-here"},
 "config": {"connector_name": "acme_eu", "api_url": "$url/v2", "page_size": 50}, "job_params": {"lookback_days": 7}}
JSON

step "nuntiq-host wit --out wit feeds componentize-py and jco: the examples"
nuntiq-host wit --out wit
"$root/guests/examples/check.sh" nuntiq-host "$url" "$tmp/work" "$tools" "$tmp/work/wit"

step "guests/acme with cargo component build --release"
(cd "$root/guests/acme" && cargo component build --release --quiet)
acme="$CARGO_TARGET_DIR/wasm32-wasip1/release/acme.wasm"
nuntiq-host inspect "$acme" | grep -E "^(name|world|compatible)"
wasm-tools component targets wit "$acme" --world connector
wasm-tools component targets wit "$root/dist/acme.wasm" --world connector
run_ok "$acme" acme.json --db "$tmp/acme.db" --allow-host "$url"

step "a run with three retries, recorded and replayed"
curl -fsS -X POST "$url/_mock/faults" -d '[{"action": "status", "status": 503, "retry_after": "1", "times": 3}]' > /dev/null
recorded_start=$(date +%s.%N)
run_ok "$root/dist/acme.wasm" acme.json --db "$tmp/record.db" --allow-host "$url" --record retried.json \
  | grep -q '"http_retries":3'
recorded=$(echo "$(date +%s.%N) - $recorded_start" | bc)
kill $mock
replay_start=$(date +%s.%N)
# No network flags: the replay never reaches the network (and the mock is gone).
run_ok "$root/dist/acme.wasm" acme.json --db "$tmp/replay.db" --replay retried.json | grep -q '"http_retries":3'
replayed=$(echo "$(date +%s.%N) - $replay_start" | bc)
echo "recorded in ${recorded} s, replayed in ${replayed} s"
[ "$(echo "$replayed < 1" | bc)" = 1 ] || { echo "FAILED: the replay took ${replayed} s" >&2; exit 1; }
diff <(nuntiq-host suppliers export --db "$tmp/record.db") <(nuntiq-host suppliers export --db "$tmp/replay.db")

printf '\ncheck-authors: every template and toolchain builds a connector that runs, from outside the checkout\n'
