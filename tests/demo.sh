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
echo "Done. Inspect more with: $HOST state show --db $DEMO/nuntiq.db --json"
