#!/usr/bin/env bash
# Wheels that the GPU machine (Python 3.12, x86-64, no network) lacks, into .whl/ (git-ignored):
#     bash bench/gpu/fetch_wheels.sh
# gymnasium and its one dependency (vlmrl_fast imports it); deepspeed built here without its compiled
# ops (DS_BUILD_OPS=0: pure Python, ops JIT-compile there if a config needs one) and the packages of its
# that the machine does not have. Versions are pinned: the set that ran on the H200 in session 5.
# Then carry ".whl" and "dist" with the device tool and run `bash bench/gpu/device.sh $OUT` there.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
dest="$here/.whl"
mkdir -p "$dest"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" gymnasium==1.4.0 farama-notifications==0.0.6 hjson==3.1.0 annotated-types==0.8.0 \
    typing-inspection==0.4.5 pydantic==2.14.4 pydantic-core==2.50.5 typing-extensions==4.16.0
src="$(mktemp -d)"
"$py" -m pip download -q --no-deps --no-binary=:all: -d "$src" deepspeed==0.19.8
tar -xzf "$src"/deepspeed-0.19.8.tar.gz -C "$src"
# deepspeed's setup.py imports torch: build with this environment's torch, not an isolated one.
(cd "$src/deepspeed-0.19.8" && DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" .)
ls "$dest"
