#!/usr/bin/env bash
# The toolchain pieces the wasm build needs, each installed only when missing:
# the wasm32-unknown-unknown target (rustup) and wasm-bindgen-cli at the exact
# version of the wasm-bindgen crate pinned in web/Cargo.toml (cargo install,
# into $CARGO_HOME/bin). Called by web/build.sh, test.sh and .ci/run, so a
# fresh machine needs nothing installed by hand.
#   bash web/tools.sh          # prints the wasm-bindgen it will use
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=0.2.130   # = the wasm-bindgen pin in web/Cargo.toml
TARGET=wasm32-unknown-unknown
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

die() { echo "web/tools.sh: error: $*" >&2; exit 1; }

if ! grep -q "wasm-bindgen = \"=$WASM_BINDGEN_VERSION\"" web/Cargo.toml; then
    die "web/Cargo.toml no longer pins wasm-bindgen = \"=$WASM_BINDGEN_VERSION\"; update WASM_BINDGEN_VERSION here to match"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "web/tools.sh: installing the $TARGET target (rustup target add)" >&2
    rustup target add "$TARGET" >&2 || die "'rustup target add $TARGET' failed (is the Rust distribution server reachable?)"
fi

# wasm-bindgen on PATH, else in cargo's bin folder (a fresh CARGO_HOME need not be on PATH).
bindgen_version() { "$1" --version 2>/dev/null | awk '{print $2}'; }
bindgen="$(command -v wasm-bindgen || echo "$CARGO_BIN/wasm-bindgen")"
if [ "$(bindgen_version "$bindgen")" != "$WASM_BINDGEN_VERSION" ]; then
    bindgen="$CARGO_BIN/wasm-bindgen"
fi
if [ "$(bindgen_version "$bindgen")" != "$WASM_BINDGEN_VERSION" ]; then
    echo "web/tools.sh: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once; takes a few minutes)" >&2
    # --locked pins the CLI's own dependencies; fall back to a fresh
    # resolution when the registry lacks one of the locked versions.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked >&2 \
        || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" >&2 \
        || die "'cargo install wasm-bindgen-cli --version $WASM_BINDGEN_VERSION' failed"
    bindgen="$CARGO_BIN/wasm-bindgen"
    [ "$(bindgen_version "$bindgen")" = "$WASM_BINDGEN_VERSION" ] \
        || die "$bindgen is not wasm-bindgen $WASM_BINDGEN_VERSION after installing it"
fi
echo "$bindgen"
