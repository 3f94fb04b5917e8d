#!/usr/bin/env bash
# The test suite: every test on the default adapter (lavapipe in CI), then the
# GPU kernel suite again in portable mode (WebGPU baseline limits, no
# optional features) and on wgpu's GL backend; the wasm build, and the web
# pages in headless Chromium (web/test.sh).
set -euo pipefail
cd "$(dirname "$0")"
export RUST_BACKTRACE=1
# Mesa warns on every device open without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== all tests, default adapter =="
cargo test --release --all-targets

echo "== GPU kernel, model and fixture tests, portable mode (WebGPU baseline limits, no f16, no subgroups) =="
DELTALLM_PORTABLE=1 cargo test --release --test kernels --test model --test sequence --test delta_model --test routing --test quant_model --test fixtures --test bench

echo "== GPU kernel and DeltaLLM model tests, GL backend =="
WGPU_BACKEND=gl cargo test --release --test kernels --test bench --test delta_model

echo "== the engine and its browser bindings compile for wasm32 =="
# Installs the wasm32 target and the pinned wasm-bindgen-cli when missing.
bash web/tools.sh >/dev/null
cargo check -p deltallm-web --target wasm32-unknown-unknown

# The web page and the benchmark page in headless Chromium on SwiftShader's
# WebGPU, tokens compared with the native engine's (needs /usr/bin/chromium
# and Node; .ci/run installs Chromium). DELTALLM_SKIP_BROWSER=1 skips them.
if [ "${DELTALLM_SKIP_BROWSER:-0}" = 1 ]; then
    echo "== browser tests skipped (DELTALLM_SKIP_BROWSER=1) =="
else
    bash web/test.sh
fi
