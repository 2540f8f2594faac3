# The two commands of the README: `make test` and `make train`.
# Both create .venv/ on first use and install the locked dependency set of requirements/
# (uv pip install --require-hashes: every package pinned and hash-checked); pyproject.toml
# keeps the version ranges for `pip install vlmrl-fast`. `make lock` regenerates the locks.

VENV     := .venv
PY       := $(VENV)/bin/python
UV       := $(VENV)/bin/uv
UV_PIN   := uv==0.13.9
UVSTAMP  := $(VENV)/.uv-installed
DEPS     := $(VENV)/.deps-installed
TESTDEPS := $(VENV)/.test-deps-installed
LOCK_RUN := requirements/runtime.lock
LOCK_TEST := requirements/test.lock
LATEST   := .venv-latest
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test train build rust-test py-test lock test-latest bench bench-quick bench-compare bench-report clean

$(UVSTAMP):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(UV_PIN)
	touch $@

# make train: the runtime lock (the package's dependencies and maturin to build it).
$(DEPS): $(LOCK_RUN) $(UVSTAMP)
	$(UV) pip install -q --python $(PY) --require-hashes -r $(LOCK_RUN)
	touch $@

# make test: the test lock, a superset of the runtime lock with the same versions: the dev
# tools and the optional `alfworld` extra (alfworld + textworld[pddl]; fast-downward and jericho
# build from source once, about 2 minutes on 2 cores, then come from uv's cache), so the
# ALFWorldTW-v0 adapter is tested for real.
$(TESTDEPS): $(LOCK_TEST) $(DEPS)
	$(UV) pip install -q --python $(PY) --require-hashes -r $(LOCK_TEST)
	touch $@

# Editable install of the package with the native module built in release mode.
build: $(DEPS)
	$(VENV)/bin/maturin develop --release -q

rust-test:
	cargo test --release --workspace --exclude vlmrl-fast-py

py-test: $(TESTDEPS) build
	VLMRL_REQUIRE_ALFWORLD=1 $(PY) -m pytest -q

test: rust-test py-test

train: build
	$(VENV)/bin/vlmrl train

# Regenerate both locks from pyproject.toml (newest releases that satisfy its ranges, for every
# platform and Python version it supports). Commit the result after `make test` passes on it.
lock: $(UVSTAMP)
	$(UV) pip compile -q pyproject.toml --extra dev --extra alfworld --universal --generate-hashes \
		--python-version 3.10 -o $(LOCK_TEST)
	$(UV) pip compile -q pyproject.toml requirements/runtime.in -c $(LOCK_TEST) --universal --generate-hashes \
		--python-version 3.10 -o $(LOCK_RUN)

# The tests against the newest releases, in a separate venv (not in CI): upstream breakage is
# found on purpose here rather than by a new user. Same tests, same editable build of this checkout.
test-latest: $(UVSTAMP)
	test -x $(LATEST)/bin/python || python3 -m venv $(LATEST)
	$(UV) pip install -q --python $(LATEST)/bin/python --upgrade -r pyproject.toml --extra dev --extra alfworld
	VIRTUAL_ENV=$(abspath $(LATEST)) PATH=$(abspath $(LATEST))/bin:$$PATH $(LATEST)/bin/maturin develop --release -q
	VIRTUAL_ENV=$(abspath $(LATEST)) PATH=$(abspath $(LATEST))/bin:$$PATH VLMRL_REQUIRE_ALFWORLD=1 \
		$(LATEST)/bin/python -m pytest -q

# Benchmarks (bench/README.md). `make bench` runs them all (about 30 min on 2 cores) and saves the run,
# compacted (no raw timings), as one file in bench/results/; `make bench-compare` compares the newest saved
# run with the previous one from the same machine (BENCH_NEW= / BENCH_OLD= name others) and fails when a
# ratio_vs_* figure dropped by more than BENCH_THRESHOLD; `make bench-quick` (a few minutes) compares a
# subset with the newest saved run; `make bench-report` writes bench/README.md's tables from the newest run.
BENCH_RAW       := bench/.results
BENCH_THRESHOLD := 0.2
BENCH_QUICK     := bench/test_parser_bench.py bench/test_agent_bench.py bench/test_kernels_bench.py::test_gae \
	"bench/test_engine_bench.py::test_engine_step_throughput[Points24-v0-64-2]" \
	"bench/test_alfworld_bench.py::test_floor_numpy_copy" "bench/test_alfworld_bench.py::test_step_with_expert[2-ALFWorld-v0]" \
	"bench/test_preprocess_bench.py::test_paired[pil-siglip224]"

bench: build
	mkdir -p $(BENCH_RAW)
	load=$$(cut -d' ' -f1-3 /proc/loadavg); \
		$(PY) -m pytest bench -q --benchmark-only --benchmark-json=$(BENCH_RAW)/last.json; rc=$$?; \
		$(PY) bench/track.py save $(BENCH_RAW)/last.json --load-before "$$load" && exit $$rc

bench-quick: build
	mkdir -p $(BENCH_RAW)
	$(PY) -m pytest $(BENCH_QUICK) -q --benchmark-only --benchmark-json=$(BENCH_RAW)/quick.json
	$(PY) bench/track.py compare --new $(BENCH_RAW)/quick.json --common --threshold $(BENCH_THRESHOLD)

bench-compare:
	$(PY) bench/track.py compare $(if $(BENCH_NEW),--new $(BENCH_NEW)) $(if $(BENCH_OLD),--old $(BENCH_OLD)) \
		--threshold $(BENCH_THRESHOLD)

bench-report:
	$(PY) bench/track.py report

clean:
	rm -rf target $(VENV) $(LATEST)
