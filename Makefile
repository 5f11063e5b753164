# Two commands on a fresh machine: `make bench` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUITE ?= default
RESULTS ?= results
REPORTS ?= reports
ARGS ?=

.PHONY: setup bench run report test lint wandb-sync clean-venv

setup: $(STAMP)

# Reinstalls only when pyproject.toml changes. torch and torchvision are pinned to the releases
# the project is tested with (see pyproject.toml for the supported range).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

bench: setup
	$(BIN)/vae-zoo run $(SUITE) --results-dir $(RESULTS) $(ARGS); status=$$?; \
	if [ $$status -le 1 ]; then $(BIN)/vae-zoo report $(SUITE) --results-dir $(RESULTS) \
	  --out $(REPORTS) || exit $$?; fi; exit $$status

run: setup
	$(BIN)/vae-zoo run $(SUITE) --results-dir $(RESULTS) $(ARGS)

report: setup
	$(BIN)/vae-zoo report $(SUITE) --results-dir $(RESULTS) --out $(REPORTS)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check vae_zoo tests benchmarks

wandb-sync: setup
	$(BIN)/vae-zoo sync $(SUITE) --results-dir $(RESULTS)

clean-venv:
	rm -rf $(VENV)
