#!/usr/bin/env bash
# Build the wasm engine and its JS glue into web/www/pkg/ (deltallm_web.js,
# deltallm_web_bg.wasm). web/tools.sh installs the wasm32 target and
# wasm-bindgen-cli at the exact version of the wasm-bindgen crate when they
# are missing or differ.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=wasm-release           # the root Cargo.toml: release + opt-level s + LTO
TARGET=wasm32-unknown-unknown

# The wasm32 target and the pinned wasm-bindgen-cli, installed when missing.
WASM_BINDGEN="$(bash web/tools.sh)"

cargo build -p deltallm-web --profile "$PROFILE" --target "$TARGET"
"$WASM_BINDGEN" --target web --out-dir web/www/pkg "target/$TARGET/$PROFILE/deltallm_web.wasm"
ls -l web/www/pkg/deltallm_web_bg.wasm | awk '{printf "web/www/pkg/deltallm_web_bg.wasm: %.1f MB\n", $5 / 1e6}'
