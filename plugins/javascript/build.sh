#!/bin/sh
# Build the JavaScript plugin (email.js) into a component against ../../wit:
#
#     plugins/javascript/build.sh [OUT_DIR]     # default: plugins/target/javascript
#
# writes OUT_DIR/email-js.wasm. ComponentizeJS is pinned in package-lock.json and installed
# with `npm ci` into node_modules/ here when missing or older than the lock file.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../target/javascript}
for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: \`$tool\` not found on PATH: the JavaScript plugin (plugins/javascript) is built with ComponentizeJS under Node.js 20 or later; install Node.js and npm" >&2
        exit 1
    fi
done
installed=$here/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ "$here/package-lock.json" -nt "$installed" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
mkdir -p "$out"
node "$here/build.mjs" "$out/email-js.wasm"
