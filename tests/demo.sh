#!/usr/bin/env bash
# `make demo`: the Acme connector against the mock Acme API on loopback — a
# full first run, then (after the mock changes a few suppliers) an incremental
# run that fetches only those. State lives in demo/ (SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=target/release/nuntiq-host
MOCK=target/release/acme-mock
DEMO=demo
rm -rf "$DEMO"
mkdir -p "$DEMO"

"$MOCK" serve --suppliers 1200 --url-file "$DEMO/mock-url" > "$DEMO/mock.log" 2>&1 &
MOCK_PID=$!
trap 'kill $MOCK_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$DEMO/mock-url" ] && break; sleep 0.05; done
URL=$(cat "$DEMO/mock-url")

cat > "$DEMO/settings.json" <<JSON
{
  "customer_number": "10000001",
  "secrets": { "acme_token": "test-bearer-token-here" },
  "config": { "connector_name": "acme_eu", "api_url": "$URL/v2", "page_size": 200 },
  "job_params": { "lookback_days": 7 }
}
JSON

run() {
  # The mock is plain http on loopback: only the operator's --allow-host opens it.
  "$HOST" run-plugin dist/acme.wasm "$DEMO/settings.json" --db "$DEMO/nuntiq.db" --allow-host "$URL"
}

echo "== Mock Acme API at $URL/v2 (1200 suppliers, some older than the 7-day window)"
echo
echo "== Run 1: first run, bootstrap window of 7 days"
echo "\$ nuntiq-host run-plugin dist/acme.wasm $DEMO/settings.json --db $DEMO/nuntiq.db --allow-host $URL"
run
echo
echo "== The mock changes 3 suppliers and adds 2"
"$MOCK" mutate --url "$URL" --change 3 --insert 2
echo
echo "== Run 2: incremental, from the committed cursor"
run
echo
echo "== What the store holds"
"$HOST" state show --db "$DEMO/nuntiq.db"
SUPPLIERS=$("$HOST" suppliers export --db "$DEMO/nuntiq.db" | wc -l)
echo "suppliers stored: $SUPPLIERS; the last few changed:"
"$HOST" suppliers export --db "$DEMO/nuntiq.db" --format csv | grep -E 'renamed|^customer_number' | cut -d, -f2,4,7,27-31 | column -s, -t 2>/dev/null || true
echo
echo "== The same job delivering to Nuntiq: the Customer API (a local mock) as the store"
API_MOCK=target/release/nuntiq-api-mock
export NUNTIQ_API_TOKEN="demo-api-key-5d1c"   # the token never goes on the command line
"$API_MOCK" serve --token "$NUNTIQ_API_TOKEN:10000001" --url-file "$DEMO/api-url" > "$DEMO/api.log" 2>&1 &
API_PID=$!
trap 'kill $MOCK_PID $API_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$DEMO/api-url" ] && break; sleep 0.05; done
API="nuntiq+$(cat "$DEMO/api-url")/api"
echo "\$ NUNTIQ_API_TOKEN=… nuntiq-host run-plugin dist/acme.wasm $DEMO/settings.json --db $API --ledger $DEMO/ledger.db --allow-host $URL"
"$HOST" run-plugin dist/acme.wasm "$DEMO/settings.json" --db "$API" --ledger "$DEMO/ledger.db" --allow-host "$URL"
API_URL=$(cat "$DEMO/api-url")
DELIVERED=$(curl -fsS "$API_URL/_mock/suppliers?customer=10000001" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "suppliers in Nuntiq (the mock): $DELIVERED; the cursor the API committed:"
curl -fsS "$API_URL/_mock/streams" | python3 -c 'import json,sys; [print(" ", s["connector_name"], s["stream_name"], s["status"], s["committed_cursor_value"]) for s in json.load(sys.stdin)]'
echo "run history (from the ledger):"
"$HOST" runs --db "$DEMO/ledger.db" --limit 1
echo
echo "Done. Inspect more with: $HOST state show --db $DEMO/nuntiq.db --json"
