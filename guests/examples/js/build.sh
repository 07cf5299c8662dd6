#!/usr/bin/env bash
# Builds the JavaScript connector (connector.js) into js-connector.wasm with
# jco (pinned in package.json), against the repository's contract, world
# `connector-core`. Two flags matter on this host:
#   --backend qjs --backend-qjs-disable-async   QuickJS without component-model
#       async, which the host does not run (the default QuickJS runtime needs it);
#   (StarlingMonkey, jco's default backend, instead needs
#    `--disable http fetch-event` unless the host links wasi:http.)
#   OUT=…   the component to write
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../../wit"
out="${OUT:-$here/js-connector.wasm}"
cd "$here"
# jco 1.35.0 reads WIT through preview2-shim, and 0.26 no longer preopens "/":
# package.json overrides it to 0.25.0 (a clean `npm ci` applies the override).
[ -d node_modules/@bytecodealliance/jco ] || npm ci --no-audit --no-fund --loglevel=error
npx jco componentize connector.js --wit "$wit" --world-name connector-core \
  --backend qjs --backend-qjs-disable-async -o "$out"
