#!/usr/bin/env bash
# Builds a JavaScript connector with jco (pinned in package.json), against the
# repository's contract, world `connector-core`:
#   build.sh          connector.js (the host's `http`) with QuickJS, 19 MB.
#                     `--backend qjs --backend-qjs-disable-async`: the default
#                     QuickJS runtime needs component-model async, which the
#                     host refuses.
#   build.sh fetch    fetch.js (the web's fetch(), sent through wasi:http) with
#                     jco's default engine, StarlingMonkey, 13 MB, no flags.
#   OUT=…   the component to write
#   WIT=… WORLD=… SRC=…  another contract and source (make check-authors
#                  builds connector.js against wit/v0.1.0, world `connector`)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="${WIT:-$here/../../../wit}"
world="${WORLD:-connector-core}"
src="${SRC:-connector.js}"
out="${OUT:-$here/js-connector.wasm}"
cd "$here"
# jco 1.35.0 reads WIT through preview2-shim, and 0.26 no longer preopens "/":
# package.json overrides it to 0.25.0 (a clean `npm ci` applies the override).
[ -d node_modules/@bytecodealliance/jco ] || npm ci --no-audit --no-fund --loglevel=error
if [ "${1:-}" = fetch ]; then
  npx jco componentize fetch.js --wit "$wit" --world-name connector-core -o "$out"
else
  npx jco componentize "$src" --wit "$wit" --world-name "$world" \
    --backend qjs --backend-qjs-disable-async -o "$out"
fi
