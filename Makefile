# Set-up and entry points. `make run` trains and evaluates the default model; `make test` runs the
# tests. Both create the virtual environment in .venv on first use and are safe to run again.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(if $(DIGITNET_DATA_DIR),$(DIGITNET_DATA_DIR),../shared/datasets/mnist)
PYTEST_ARGS ?=
# `make mutation`: the modules mutated (mutmut's mutant-name prefixes, smallest first) and workers.
MUTATION_MODULES ?= digitnet.data.idx digitnet.evaluation.metrics digitnet.training.checkpoint \
	digitnet.store digitnet.data.augment digitnet.data.preprocess
MUTMUT_CHILDREN ?= 1

.PHONY: install run explore test mutation mutation-report clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> creating virtual environment in $(VENV) and installing digitnet (CPU build of torch)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

run: install
	@echo "==> verifying MNIST in $(DATA_DIR)"
	$(BIN)/digitnet data verify --data-dir $(DATA_DIR)
	@echo "==> training the default model into models/ (a few minutes on a laptop CPU)"
	$(BIN)/digitnet train --data-dir $(DATA_DIR) --json reports/train.json
	@echo "==> evaluating it on clean and augmented MNIST test sets (reports/evaluation)"
	$(BIN)/digitnet evaluate latest --dataset mnist-test --dataset mnist-test-augmented \
		--data-dir $(DATA_DIR) --out reports/evaluation --json reports/evaluation/results.json

explore: install
	$(BIN)/digitnet data explore --data-dir $(DATA_DIR) --out reports/explore

test: install
	@echo "==> running the test suite against MNIST in $(DATA_DIR)"
	DIGITNET_DATA_DIR=$(DATA_DIR) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Mutation testing of the core modules with the fast tests (slow: about an hour on 2 cores; not in CI).
# One module at a time, each with its wall time; then the per-module scores (tools/mutation_report.py).
mutation: install
	@for m in $(MUTATION_MODULES); do \
		echo "==> mutmut: $$m"; start=$$(date +%s); \
		DIGITNET_DATA_DIR=$(abspath $(DATA_DIR)) MPLBACKEND=Agg \
			$(BIN)/mutmut run --max-children $(MUTMUT_CHILDREN) "$$m.*" || exit 1; \
		echo "==> $$m: $$(( $$(date +%s) - start )) s"; \
	done
	$(BIN)/python tools/mutation_report.py

mutation-report: install
	$(BIN)/python tools/mutation_report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mutants
