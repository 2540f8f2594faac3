# The two commands of the README: `make test` and `make train`.
# Both create .venv/ on first use and install everything from pyproject.toml.

VENV    := .venv
PY      := $(VENV)/bin/python
DEPS    := $(VENV)/.deps-installed
TESTDEPS := $(VENV)/.test-deps-installed
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test train build rust-test py-test bench clean

# pip-installs requirement groups of pyproject.toml: "runtime" (the dependencies) or an extra's name.
PIP_FROM_PYPROJECT = $(PY) -c "import tomllib, subprocess, sys; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	reqs = [r for g in sys.argv[1:] for r in (p['dependencies'] if g == 'runtime' else p['optional-dependencies'][g])]; \
	subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', *reqs])"

$(DEPS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP_FROM_PYPROJECT) runtime dev
	touch $(DEPS)

# The tests also play real ALFWorld games through the ALFWorldTW-v0 adapter: the optional
# `alfworld` extra (alfworld + textworld[pddl]; pip builds fast-downward from source once, about
# 3 minutes on 2 cores, then takes it from its wheel cache).
$(TESTDEPS): $(DEPS)
	$(PIP_FROM_PYPROJECT) alfworld
	touch $(TESTDEPS)

# Editable install of the package with the native module built in release mode.
build: $(DEPS)
	$(VENV)/bin/maturin develop --release -q

rust-test:
	cargo test --release --workspace --exclude vlmrl-fast-py

py-test: build $(TESTDEPS)
	VLMRL_REQUIRE_ALFWORLD=1 $(PY) -m pytest -q

test: rust-test py-test

train: build
	$(VENV)/bin/vlmrl train

bench: build
	$(PY) -m pytest bench -q --benchmark-only

clean:
	rm -rf target $(VENV)
