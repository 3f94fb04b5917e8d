#!/usr/bin/env bash
# Build the wasm engine and its JS glue into web/www/pkg/ (deltallm_web.js,
# deltallm_web_bg.wasm). Installs wasm-bindgen-cli at the exact version of
# the wasm-bindgen crate when it is missing or differs.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130   # = the wasm-bindgen pin in web/Cargo.toml
PROFILE=wasm-release           # the root Cargo.toml: release + opt-level s + LTO
TARGET=wasm32-unknown-unknown

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once; takes a few minutes)" >&2
    # --locked pins the CLI's own dependencies; fall back to a fresh
    # resolution when the registry lacks one of the locked versions.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked \
        || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

cargo build -p deltallm-web --profile "$PROFILE" --target "$TARGET"
wasm-bindgen --target web --out-dir web/www/pkg "target/$TARGET/$PROFILE/deltallm_web.wasm"
ls -l web/www/pkg/deltallm_web_bg.wasm | awk '{printf "web/www/pkg/deltallm_web_bg.wasm: %.1f MB\n", $5 / 1e6}'
