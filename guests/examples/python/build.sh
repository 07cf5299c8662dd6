#!/usr/bin/env bash
# Builds the Python connector (app.py) into python-connector.wasm with
# componentize-py (pinned in requirements.txt), against the repository's
# contract, world `connector-core` (componentize-py adds the WASI it needs).
#   VENV=…  where componentize-py is installed (created if missing)
#   OUT=…   the component to write
#   WIT=… WORLD=…  another contract (make check-authors builds app.py against
#                  wit/v0.1.0, world `connector`, too)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="${WIT:-$here/../../../wit}"
world="${WORLD:-connector-core}"
venv="${VENV:-$here/.venv}"
out="${OUT:-$here/python-connector.wasm}"
[ -x "$venv/bin/componentize-py" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install --quiet -r "$here/requirements.txt"; }
cd "$here"
"$venv/bin/componentize-py" -d "$wit" -w "$world" componentize app -p . -o "$out"
