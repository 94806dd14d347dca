# Set-up and entry points. `make run` trains and evaluates the default model; `make test` runs the
# tests. Both create the virtual environment in .venv on first use and are safe to run again.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(if $(DIGITNET_DATA_DIR),$(DIGITNET_DATA_DIR),../shared/datasets/mnist)
PYTEST_ARGS ?=
# `make mutation`: groups of mutants (mutmut name patterns), run one group at a time, and workers.
# preprocess.py is mutated in its MNIST-format step, output files and image decoding only
# (docs/testing-mutation.md);
# `make mutation MUTANTS_preprocess="'digitnet.data.preprocess.*'"` mutates all of it (hours).
MUTATION_GROUPS ?= idx metrics checkpoint store augment preprocess
MUTANTS_idx ?= 'digitnet.data.idx.*'
MUTANTS_metrics ?= 'digitnet.evaluation.metrics.*'
MUTANTS_checkpoint ?= 'digitnet.store.checkpoint.*'
MUTANTS_store ?= $(foreach m,refs catalog run weights records loaded load,'digitnet.store.$(m).*')
MUTANTS_augment ?= $(foreach m,augment augment_config warp strokes,'digitnet.data.$(m).*')
MUTANTS_preprocess ?= $(foreach f,center_of_mass _to_uint8 crop_to_ink fit_to_box _paste \
	center_by_mass fit_and_center encode_png output_stems save_result,'digitnet.data.preprocess.x_$(f)*') \
	$(foreach f,_check_size _draft_size check_image_size _read_image,'digitnet.data.images.x_$(f)*')
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
	@echo "==> training the default model into models/ (1-1.5 minutes on a 2-core CPU)"
	$(BIN)/digitnet train --data-dir $(DATA_DIR) --json reports/train.json
	@echo "==> evaluating it on clean and augmented MNIST test sets (reports/evaluation)"
	$(BIN)/digitnet evaluate latest --dataset mnist-test --dataset mnist-test-augmented \
		--data-dir $(DATA_DIR) --out reports/evaluation --json reports/evaluation/results.json

explore: install
	$(BIN)/digitnet data explore --data-dir $(DATA_DIR) --out reports/explore

test: install
	@echo "==> ruff check (rules in pyproject.toml)"
	$(BIN)/ruff check src tests benchmarks tools
	@echo "==> running the test suite against MNIST in $(DATA_DIR)"
	DIGITNET_DATA_DIR=$(DATA_DIR) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Mutation testing of the core modules with their fast unit tests (about 40 minutes on 2 shared
# cores; not in CI). One group at a time, each with its wall time; then the per-module scores.
define run_mutmut
	@echo "==> mutmut: $(1)"; start=$$(date +%s); \
	DIGITNET_DATA_DIR=$(abspath $(DATA_DIR)) MPLBACKEND=Agg \
		$(BIN)/mutmut run --max-children $(MUTMUT_CHILDREN) $(MUTANTS_$(1)) || exit 1; \
	echo "==> $(1): $$(( $$(date +%s) - start )) s"

endef

mutation: install
	$(foreach g,$(MUTATION_GROUPS),$(call run_mutmut,$(g)))
	$(BIN)/python tools/mutation_report.py

mutation-report: install
	$(BIN)/python tools/mutation_report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mutants
