#!/usr/bin/env bash
# One command for a GPU machine (no network, its own python with torch + triton):
#     bash bench/gpu/run.sh OUT_DIR [run.py options]
# Unpacks the abi3 wheel from dist/ (a wheel is a zip: the same files as `pip install
# --no-deps`, without needing pip) into a temporary folder and runs bench/gpu/run.py
# against it (without a wheel, run.py loads the kernels from this checkout), then the
# GPU-marked pytest file when pytest is there. Results: OUT_DIR/kernels_gpu.json and
# OUT_DIR/pytest_gpu.txt.
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
status=0
"$py" "$here/bench/gpu/run.py" --out "$out" "$@" || status=$?
# The GPU-marked tests too, where pytest and the package's own imports are available.
if "$py" -c "import pytest, vlmrl_fast.ops" 2>/dev/null; then
    "$py" -m pytest -q -p no:cacheprovider -m gpu "$here/tests/test_kernels_gpu.py" \
        > "$out/pytest_gpu.txt" 2>&1 || status=$?
    tail -n 3 "$out/pytest_gpu.txt"
fi
exit $status
