#!/usr/bin/env bash
# The browser tests: the page and the benchmark page in Debian's headless Chromium on SwiftShader's WebGPU, driven
# by playwright-core (web/tests/*.test.mjs). Needs the wasm build (web/www/pkg, made by web/build.sh when missing),
# the native binary target/release/deltallm (the reference tokens; both built here), /usr/bin/chromium and Node 20.
# Screenshots go to ${TEST_OUT:-web/test-output}/.
set -euo pipefail
cd "$(dirname "$0")/.."

# Always (re)build: a stale pkg or binary would test old code. Both are quick when up to date.
echo "== building the wasm (web/build.sh) =="
bash web/build.sh
echo "== building the native reference binary =="
cargo build --release --bin deltallm
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "no Chromium at ${CHROMIUM:-/usr/bin/chromium}: apt-get install -y chromium" >&2
  exit 1
fi

echo "== node dependencies (npm ci) =="
(cd web && npm ci --no-audit --no-fund --loglevel=error)

export TEST_OUT="${TEST_OUT:-web/test-output}"
mkdir -p "$TEST_OUT"
# Mesa and Chromium warn without it; the native reference opens a Vulkan device too.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

# A free port, so parallel runs and a developer's own server do not collide.
PORT="${WEB_TEST_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
echo "== serving web/www on 127.0.0.1:$PORT =="
# In its own process group, so stopping it also stops the server process the script starts.
setsid bash web/serve.sh --no-build "$PORT" > "$TEST_OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill -- -"$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if curl -sf -o /dev/null "http://127.0.0.1:$PORT/index.html"; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "the server stopped:" >&2; cat "$TEST_OUT/serve.log" >&2; exit 1
  fi
  sleep 0.2
done
export DELTALLM_WEB_URL="http://127.0.0.1:$PORT/"

echo "== browser tests (Chromium, SwiftShader WebGPU) =="
# One file at a time: SwiftShader is a CPU renderer and the machine's cores are few.
node --test --test-concurrency=1 web/tests/
