#!/usr/bin/env bash
# One command for a GPU machine (no network, its own python with torch + triton):
#     bash bench/gpu/run.sh OUT_DIR [run.py options]
# Unpacks the abi3 wheel from dist/ (a wheel is a zip: the same files as `pip install
# --no-deps`, without needing pip) into a temporary folder and runs bench/gpu/run.py
# against it; without a wheel, run.py loads the kernels from this checkout.
set -euo pipefail
out="${1:?usage: bash bench/gpu/run.sh OUT_DIR [options]}"
shift
mkdir -p "$out"
out="$(cd "$out" && pwd)"
here="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-python3}"
wheel="$(ls "$here"/dist/vlmrl_fast-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$wheel" ]; then
    site="$(mktemp -d)"
    "$py" -m zipfile -e "$wheel" "$site"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "using $wheel"
fi
cd /tmp  # so the checkout's python/ folder is not picked up by accident
exec "$py" "$here/bench/gpu/run.py" --out "$out" "$@"
