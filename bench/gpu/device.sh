#!/usr/bin/env bash
# Every GPU check of the open issues in one command, for a GPU machine with no network:
#     bash bench/gpu/device.sh OUT_DIR                 # the kernels and the accelerate configs (~7 min)
#     STAGES=scale bash bench/gpu/device.sh OUT_DIR    # bench/gpu/scale.py alone (8 min: its own command)
# STAGES is a space-separated choice of "kernels dist scale" (default "kernels dist"; the three together
# do not fit one 10-minute command).
# Expects, beside this checkout: dist/vlmrl_fast-*.whl (`maturin build --release -o dist`) and,
# optionally, .whl/*.whl: wheels of packages that machine lacks (bench/gpu/fetch_wheels.sh: gymnasium
# and its one dependency; deepspeed built with DS_BUILD_OPS=0 plus hjson and pydantic's wheels).
# They are installed with --no-deps into a temporary folder; nothing else is installed.
# Writes OUT_DIR/env.txt (device, versions), OUT_DIR/kernels_gpu.json and OUT_DIR/pytest_gpu.txt
# (bench/gpu/run.sh: the Triton kernels) and OUT_DIR/dist_gpu.json (bench/gpu/dist_check.py: one
# PPO update per accelerate config, launched side by side); with the scale stage OUT_DIR/scale_<device>.json
# and OUT_DIR/scale_log.txt (bench/gpu/scale.py). Each stage has its own time limit,
# so one that hangs still leaves the others' results.
set -uo pipefail
out="${1:?usage: bash bench/gpu/device.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
here="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-python3}"
site="$(mktemp -d)"
wheels=("$here"/dist/vlmrl_fast-*.whl)
if compgen -G "$here/.whl/*.whl" >/dev/null; then wheels+=("$here"/.whl/*.whl); fi
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}" \
    || { echo "device.sh: installing the wheels failed" >&2; exit 1; }
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$py" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "transformers", "accelerate", "peft", "deepspeed", "gymnasium", "vlmrl_fast"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as err:
        print(name, "NOT IMPORTABLE:", type(err).__name__, err)
EOF
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

stages=" ${STAGES:-kernels dist} "
if [[ $stages == *" kernels "* ]]; then
    echo "== kernels (bench/gpu/run.sh)"
    timeout -k 10 "${KERNELS_TIMEOUT:-240}" bash "$here/bench/gpu/run.sh" "$out" >"$out/kernels_log.txt" 2>&1 || status=$?
    tail -n 25 "$out/kernels_log.txt"
fi

cd /tmp
if [[ $stages == *" dist "* ]]; then
    echo "== accelerate configs (bench/gpu/dist_check.py)"
    timeout -k 10 "${DIST_TIMEOUT:-200}" "$py" "$here/bench/gpu/dist_check.py" --out "$out" --work "$(mktemp -d)" \
        --parallel --timeout "$(( ${DIST_TIMEOUT:-200} - 20 ))" || status=$?
fi

# OUT_DIR/scale_<device>.json (rewritten after every measurement: a stage cut short keeps what it measured)
# and OUT_DIR/scale_log.txt. scale.py skips the optional stages that would end past its budget.
if [[ $stages == *" scale "* ]]; then
    echo "== real-size PPO iteration (bench/gpu/scale.py)"
    limit="${SCALE_TIMEOUT:-480}"
    timeout -k 10 "$limit" "$py" "$here/bench/gpu/scale.py" --out "$out" --budget-s "$(( limit - 45 ))" \
        ${SCALE_ARGS:-} >"$out/scale_log.txt" 2>&1 || status=$?
    grep -v -i "warn" "$out/scale_log.txt" | tail -n 25
fi
exit $status
