#!/usr/bin/env bash
# Build (unless --no-build) and serve the page on http://127.0.0.1:PORT/
# (default 8080): web/www at /, and read-only the test fixtures at
# /fixtures/ and the downloaded models at /models/, and a stand-in Hugging
# Face hub at /hub/ (index.html?hub=http://127.0.0.1:PORT/hub; see serve.py).
#   bash web/serve.sh [--no-build] [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
port=8080
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        *) port="$arg" ;;
    esac
done
if [ "$build" = 1 ]; then
    bash web/build.sh
fi
exec python3 web/serve.py "$port"
