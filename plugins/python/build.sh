#!/bin/sh
# Build the Python plugin (app.py) into a component against ../../wit (world `connected-plugin`):
#
#     plugins/python/build.sh [OUT_DIR]     # default: plugins/target/python
#
# writes OUT_DIR/email-py.wasm (app.py, with spool_http.py for its requests). componentize-py is pinned in requirements.txt and installed
# into a venv here (.venv/) when missing or when requirements.txt changed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../target/python}
if ! command -v python3 >/dev/null 2>&1; then
    echo "error: \`python3\` not found on PATH: the Python plugin (plugins/python) is built with componentize-py from a venv; install Python 3.10 or later with its venv module" >&2
    exit 1
fi
venv=$here/.venv
if [ ! -x "$venv/bin/componentize-py" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    python3 -m venv "$venv" || {
        echo "error: \`python3 -m venv\` failed: install Python's venv module (Debian: python3-venv)" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi
mkdir -p "$out"
"$venv/bin/componentize-py" -d "$here/../../wit" -w connected-plugin componentize -p "$here" app -o "$out/email-py.wasm"
