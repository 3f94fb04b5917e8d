#!/usr/bin/env bash
# The test suite: every test on the default adapter (lavapipe in CI), then the
# GPU kernel suite again in portable mode (WebGPU baseline limits, no
# optional features) and on wgpu's GL backend.
set -euo pipefail
cd "$(dirname "$0")"
export RUST_BACKTRACE=1
# Mesa warns on every device open without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== all tests, default adapter =="
cargo test --release --all-targets

echo "== GPU kernel, model and fixture tests, portable mode (WebGPU baseline limits, no f16, no subgroups) =="
DELTALLM_PORTABLE=1 cargo test --release --test kernels --test model --test delta_model --test routing --test quant_model --test fixtures --test bench

echo "== GPU kernel and DeltaLLM model tests, GL backend =="
WGPU_BACKEND=gl cargo test --release --test kernels --test bench --test delta_model
