#!/usr/bin/env bash
# Part of `make check-authors`: builds the Python and JavaScript examples and
# runs each on the host against the mock API; arguments: HOST URL WORK TOOLS
# [WIT] (the contract to build against: what `nuntiq-host wit --out` wrote;
# default the repository's wit/).
set -euo pipefail
host=$1 url=$2
work=$(cd "$3" && pwd) tools=$(mkdir -p "$4" && cd "$4" && pwd)
here="$(cd "$(dirname "$0")" && pwd)"
wit=$(cd "${5:-$here/../../wit}" && pwd)
# The examples import the contract they are built against, and no other version of it.
contract=$(sed -n 's/^package nuntiq:connector@\(.*\);$/\1/p' "$wit/connector.wit")
[ -n "$contract" ] || { echo "FAILED: $wit/connector.wit names no package nuntiq:connector@VERSION" >&2; exit 1; }
cat > "$work/example.json" <<JSON
{"customer_number": "10000001", "secrets": {"acme_token": "test-bearer-token-here"},
 "config": {"connector_name": "acme_eu", "api_url": "$url/v2", "page_size": 50}, "job_params": {"lookback_days": 7}}
JSON
for lang in python js; do
  echo "-- $lang"
  out="$tools/$lang-connector.wasm"
  VENV="$tools/python-venv" OUT="$out" WIT="$wit" "$here/$lang/build.sh"
  "$host" inspect "$out" | grep -E "^(world|compatible)"
  "$here/one-contract.sh" "$host" "$out" "$contract"
  wasm-tools component targets "$wit" "$out" --world connector
  envelope=$("$host" run-plugin "$out" "$work/example.json" --db "$work/$lang.db" --allow-host "$url")
  echo "$envelope"
  echo "$envelope" | grep -q '"success":true'
done
# Built against contract 0.1.0, as connectors written before 0.2.0 were: they
# keep running on this host unchanged.
echo "-- python and js against contract 0.1.0"
v01="$here/../../wit/v0.1.0"
out="$tools/python-v0_1-connector.wasm"
VENV="$tools/python-venv" OUT="$out" WIT="$v01" WORLD=connector "$here/python/build.sh"
sed 's#\(nuntiq:connector/[a-z-]*\)@[0-9.]*#\1@0.1.0#' "$here/js/connector.js" > "$here/js/connector-v0_1.js"
trap 'rm -f "$here/js/connector-v0_1.js"' EXIT
OUT="$tools/js-v0_1-connector.wasm" WIT="$v01" WORLD=connector SRC=connector-v0_1.js "$here/js/build.sh"
for lang in python js; do
  out="$tools/$lang-v0_1-connector.wasm"
  "$host" inspect "$out" | grep -E "^(world|contract|compatible)"
  "$here/one-contract.sh" "$host" "$out" 0.1.0
  envelope=$("$host" run-plugin "$out" "$work/example.json" --db "$work/$lang-v0_1.db" --allow-host "$url")
  echo "$envelope"
  echo "$envelope" | grep -q '"success":true'
  diff <("$host" suppliers export --db "$work/$lang.db") <("$host" suppliers export --db "$work/$lang-v0_1.db")
done
echo "0.1.0 connectors: the same store as their 0.3 builds"

# fetch() through wasi:http. StarlingMonkey writes wasi:http 0.2.10, which the
# host links by the semver rule but `component targets` (exact versions) does
# not match against the world's 0.2.12, so inspect is the check here.
echo "-- js fetch()"
out="$tools/js-fetch-connector.wasm"
OUT="$out" WIT="$wit" "$here/js/build.sh" fetch
"$host" inspect "$out" | grep -E "^(world|compatible)"
"$host" inspect "$out" | grep -q "^compatible  yes"
"$here/one-contract.sh" "$host" "$out" "$contract"
envelope=$("$host" run-plugin "$out" "$work/example.json" --db "$work/js-fetch.db" --allow-host "$url")
echo "$envelope"
echo "$envelope" | grep -q '"success":true'
echo "$envelope" | grep -q '"http_requests":[1-9]'
# The same suppliers as the `http` connector stored.
diff <("$host" suppliers export --db "$work/js.db") <("$host" suppliers export --db "$work/js-fetch.db")
echo "js fetch(): the same store as js/connector.js"
