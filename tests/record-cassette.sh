#!/usr/bin/env bash
# Records tests/cassettes/acme.json: one Acme run against the mock API (300
# suppliers, pages of 100), every HTTP exchange kept, secrets redacted. The
# replay test and `make demo-offline` use it; re-record after the connector's
# requests change: `make cassette`.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill $mock 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/acme-mock serve --suppliers 300 --url-file "$work/url" > /dev/null 2>&1 &
mock=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url=$(cat "$work/url")
cat > "$work/settings.json" <<JSON
{"customer_number": "10000001", "secrets": {"acme_token": "test-bearer-token-here"},
 "config": {"connector_name": "acme_eu", "api_url": "$url/v2", "page_size": 100}, "job_params": {"lookback_days": 7}}
JSON
target/release/nuntiq-host run-plugin dist/acme.wasm "$work/settings.json" --db "$work/db" \
  --allow-host "$url" --record tests/cassettes/acme.json --log-level warn
