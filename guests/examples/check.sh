#!/usr/bin/env bash
# Part of `make check-authors`: builds the Python and JavaScript examples and
# runs each on the host against the mock API; arguments: HOST URL WORK TOOLS.
set -euo pipefail
host=$1 url=$2
work=$(cd "$3" && pwd) tools=$(mkdir -p "$4" && cd "$4" && pwd)
here="$(cd "$(dirname "$0")" && pwd)"
cat > "$work/example.json" <<JSON
{"customer_number": "10000001", "secrets": {"acme_token": "test-bearer-token-here"},
 "config": {"connector_name": "acme_eu", "api_url": "$url/v2", "page_size": 50}, "job_params": {"lookback_days": 7}}
JSON
for lang in python js; do
  echo "-- $lang"
  out="$tools/$lang-connector.wasm"
  VENV="$tools/python-venv" OUT="$out" "$here/$lang/build.sh"
  "$host" inspect "$out" | grep -E "^(world|compatible)"
  wasm-tools component targets "$here/../../wit" "$out" --world connector
  envelope=$("$host" run-plugin "$out" "$work/example.json" --db "$work/$lang.db" --allow-host "$url")
  echo "$envelope"
  echo "$envelope" | grep -q '"success":true'
done
