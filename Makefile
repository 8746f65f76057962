# Two commands for users: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: demo test lint bench pyro-suite clean

# ArviZ 1.x needs Python >= 3.12: take python3.12/python3.13 from PATH if they run
# (pyenv shims on PATH may not), else the oldest pyenv-installed 3.12+ (the version CI tests).
define find_python
for p in python3.12 python3.13; do \
  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
    command -v $$p; exit 0; fi; \
done; \
root=$$(pyenv root 2>/dev/null || echo "$$HOME/.pyenv"); \
for d in $$(ls -d "$$root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do \
  for p in "$$d"/bin/python3.1[2-9]; do \
    if [ -x "$$p" ] && "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
      echo "$$p"; exit 0; fi; \
  done; \
done; \
exit 1
endef

$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  py=$$($(find_python)) || { \
	    echo "pyroext needs Python >= 3.12 (ArviZ 1.x requires it). Install one, e.g." >&2; \
	    echo "  apt-get install python3.12 python3.12-venv   or   pyenv install 3.12" >&2; \
	    exit 1; }; \
	  echo "creating $(VENV) with $$py"; \
	  "$$py" -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pyroext demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check pyroext models tests examples benchmarks
	$(BIN)/ruff format --check pyroext models tests examples benchmarks

# One worker per core (pytest-xdist); an idle worker takes tests queued for a busy one, so that
# no long module leaves a core idle at the end (a module fixture may then run on both workers).
test: lint
	$(BIN)/python -m pytest -n auto --dist worksteal

# Every benchmark in its quick mode: small sizes, one repeat, the embedded digits instead of
# MNIST; a few minutes in all. `make bench BENCH_ARGS=` runs them at full size (hours), with
# MNIST read from MNIST_DIR; benchmarks/RESULTS.md has what the full runs measured.
BENCH_ARGS ?= --quick
MNIST_DIR ?= ../shared/data
BENCHMARKS := runner_overhead gmm mcmc_guides mode_capturing compiled_svi compiled_scaling \
  compiled_dais bnn_quality mcmc_defaults dais_spread
MNIST_BENCHMARKS := vae_overhead vae_quality bnn_overhead distributed_throughput

bench: $(STAMP)
	@set -e; \
	for name in $(BENCHMARKS); do \
	  echo "== benchmarks/$$name.py $(BENCH_ARGS)"; \
	  $(BIN)/python benchmarks/$$name.py $(BENCH_ARGS); \
	done; \
	for name in $(MNIST_BENCHMARKS); do \
	  echo "== benchmarks/$$name.py $(BENCH_ARGS)"; \
	  $(BIN)/python benchmarks/$$name.py --data-dir $(MNIST_DIR) $(BENCH_ARGS); \
	done

# Pyro's own tests/infer/test_autoguide.py against pyroext's guides; PYRO is a clone of
# pyro-ppl/pyro (read at run time, never copied here).
pyro-suite: $(STAMP)
	@test -n "$(PYRO)" || { echo "usage: make pyro-suite PYRO=<a clone of pyro-ppl/pyro>" >&2; exit 2; }
	$(BIN)/python tests/guides/pyro_suite/run.py --pyro "$(PYRO)" -- -q -rfE

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache
